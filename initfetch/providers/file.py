"""`file://` — a local file: Compose/Swarm secrets under /run/secrets, dev files.

`file:///run/secrets/db_password` is absolute; `file://dev/db_password` is
relative to the manifest's directory. One trailing newline is dropped (the one
`echo` adds); `?raw=true` keeps the bytes exactly. Symlinks are followed on
read, because Kubernetes secret volumes are made of them.
"""

from __future__ import annotations

import os
from typing import ClassVar

from initfetch.errors import AccessDenied, NotFound
from initfetch.providers.base import Document, FetchContext, Provider
from initfetch.reference import DocKey, Reference


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
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise NotFound(f"no such file: {path}") from e
        except PermissionError as e:
            raise AccessDenied(f"permission denied reading {path}") from e
        if doc.param("raw") != "true":
            data = data.removesuffix(b"\n").removesuffix(b"\r")
        try:
            value: str | bytes = data.decode("utf-8")
        except UnicodeDecodeError:
            value = data
        return Document(value)
