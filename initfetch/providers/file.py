"""`file://` — a local file: Compose/Swarm secrets under /run/secrets, dev files.

`file:///run/secrets/db_password` is absolute; `file://dev/db_password` is
relative to the manifest's directory. One trailing newline is dropped (the one
`echo` adds); `?raw=true` keeps the bytes exactly. Symlinks are followed on
read, because Kubernetes secret volumes are made of them.

Only regular files are read, and at most `limits.secret_size` of one: a FIFO,
a device (`/dev/zero`) or a directory is "not a regular file" (not-found), a
larger file is "too-large" (exit 3). Neither ever blocks or reads without bound.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import ClassVar

from initfetch.errors import AccessDenied, NotFound, TooLarge
from initfetch.limits import exceeded
from initfetch.providers.base import Document, FetchContext, Provider
from initfetch.reference import DocKey, Reference

# O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging (it is
# then refused as not a regular file); regular files ignore the flag.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC


class FileProvider(Provider):
    type_name = "file"
    OPTIONS: ClassVar = {"base_dir": str}

    @classmethod
    def check_reference(cls, ref: Reference) -> str | None:
        unknown = {k for k, _ in ref.doc.query} - {"raw"}
        if unknown:
            return f"unknown query parameter(s) for file: {', '.join(sorted(unknown))} (known: raw)"
        if ref.doc.param("raw", "false") not in ("true", "false"):
            return "raw must be true or false"
        return None

    def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
        path = os.path.join(self.options.get("base_dir", "."), doc.path)
        data = read_limited(path, ctx.max_size)
        if doc.param("raw") != "true":
            data = data.removesuffix(b"\n").removesuffix(b"\r")
        try:
            value: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            value = data
        return Document(value)


def read_limited(path: str, limit: int) -> bytes:
    """A regular file's bytes, refusing anything else and anything over `limit` bytes."""
    try:
        # stat first, so a device or FIFO is refused without even opening it
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise NotFound(f"not a regular file: {path}")
        fd = os.open(path, _OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise NotFound(f"no such file: {path}") from e
    except PermissionError as e:
        raise AccessDenied(f"permission denied reading {path}") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotFound(f"no such file (symlink loop): {path}") from e
        raise NotFound(f"cannot open {path}: {e.strerror}") from e
    try:
        # fstat again: the path may have been swapped for something else since the stat
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotFound(f"not a regular file: {path}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:  # one byte past the limit is enough to know it is too large
            try:
                chunk = os.read(fd, min(limit + 1 - size, 1024 * 1024))
            except OSError as e:
                raise NotFound(f"cannot read {path}: {e.strerror}") from e
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise TooLarge(exceeded("secret_size", limit))  # the reference already names the file
    return b"".join(chunks)
