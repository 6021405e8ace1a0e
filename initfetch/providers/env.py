"""`env://NAME` — an environment variable of initfetch's own process."""

from __future__ import annotations

from initfetch.errors import NotFound
from initfetch.providers.base import Document, FetchContext, Provider
from initfetch.reference import DocKey, Reference


class EnvProvider(Provider):
    type_name = "env"

    @classmethod
    def check_reference(cls, ref: Reference) -> str | None:
        if ref.doc.query:
            return "env references take no query parameters"
        return None

    def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
        value = self.environ.get(doc.path)
        if value is None:
            raise NotFound(f"environment variable {doc.path} is not set")
        return Document(value)
