"""One writer per OUT_DIR.

A watcher holds an exclusive lock on `OUT_DIR/.initfetch-lock` for its whole
life; a one-shot render or exec holds it while it writes. A second writer is
refused at once (exit 5) with a line naming the process that holds it. The lock
is flock(2): the kernel drops it when its process dies, so a killed watcher
never leaves a stale lock behind (the file stays; it is not the lock).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from initfetch.errors import Problem, WriteFailed
from initfetch.outdir.names import LOCK_NAME

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OutDirLock:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._fd: int | None = None

    def acquire(self, holder: str) -> None:
        """Take the lock for `holder` ("render --watch", ...), or raise WriteFailed naming who has it."""
        if self._fd is not None:
            return
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise WriteFailed(
                    Problem(str(self.out_dir), f"cannot lock the output directory: {e.strerror}")
                ) from None
            other = _read(fd)
            os.close(fd)
            raise WriteFailed(
                Problem(
                    str(self.out_dir),
                    f"another initfetch ({other or 'a process'}) writes to this output directory; "
                    "stop it first, or write elsewhere with -o",
                )
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {holder}\n".encode(), 0)
        self._fd = fd

    def _open(self) -> int:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            root = os.open(self.out_dir, _DIR_FLAGS)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise WriteFailed(
                Problem(str(self.out_dir), f"cannot open the output directory: {reason}")
            ) from None
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(LOCK_NAME, flags, 0o644, dir_fd=root)
        except OSError as e:
            raise WriteFailed(
                Problem(str(self.out_dir / LOCK_NAME), f"cannot open the lock file: {e.strerror}")
            ) from None
        finally:
            os.close(root)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _read(fd: int) -> str:
    """Who holds the lock, as it wrote it ("pid 12, render --watch"); short, one line."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace")
    except OSError:
        return ""
    line = text.splitlines()[0] if text else ""
    return line if line.isprintable() else ""
