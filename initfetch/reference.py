"""Secret references: `SCHEME://PATH[?QUERY][#KEY]`.

SCHEME names a provider instance (`vault`, `awssm`, or a name the manifest
declares). PATH is everything up to the first `?` or `#`, taken literally,
so ARNs with colons and absolute paths (`ssm:///a/b`) need no escaping.
QUERY is `k=v&k=v` with unique keys. KEY is either a top-level key
(`#password`) or a JSON-pointer-like path (`#/a/b`, `~1` for `/`, `~0` for `~`).
`${VAR}` and `${VAR:-default}` are expanded from the environment first;
`$$` is a literal `$`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*$")
_VAR_RE = re.compile(r"\$(\$|\{([^}]*)\}|\{)")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RefSyntaxError(ValueError):
    """A reference that cannot be parsed; the message says why, in one line."""


@dataclass(frozen=True)
class DocKey:
    """What one read fetches: a path plus the query that selects a version.

    Every reference with an equal DocKey on one provider instance is served by
    the same read (one Vault lease, one AWS version).
    """

    path: str
    query: tuple[tuple[str, str], ...] = ()

    def param(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return default

    def __str__(self) -> str:
        if not self.query:
            return self.path
        return self.path + "?" + "&".join(f"{k}={v}" for k, v in self.query)


@dataclass(frozen=True)
class Reference:
    scheme: str
    doc: DocKey
    key: tuple[str, ...] | None = None  # None: the whole value
    text: str = field(default="", compare=False)  # the expanded reference, for messages

    @property
    def path(self) -> str:
        return self.doc.path

    def __str__(self) -> str:
        return self.text or f"{self.scheme}://{self.doc}"


def expand_vars(text: str, environ: Mapping[str, str], *, lenient: bool = False) -> str:
    """Expand `${VAR}` / `${VAR:-default}`; an unset VAR is an error.

    With `lenient`, unset variables are left as written (for offline checks).
    """

    def sub(m: re.Match[str]) -> str:
        if m.group(1) == "$":
            return "$"
        if m.group(1) == "{":
            raise RefSyntaxError("'${' without a closing '}'")
        body = m.group(2)
        name, sep, default = body.partition(":-")
        if not _NAME_RE.match(name):
            raise RefSyntaxError(f"bad variable name in ${{{body}}}")
        value = environ.get(name)
        if value is None or (sep and value == ""):
            if sep:
                return default
            if lenient:
                return m.group(0)
            raise RefSyntaxError(f"environment variable {name} is not set")
        return value

    if "$" not in text:
        return text
    # A lone `$` not followed by `{` or `$` is kept as is.
    return _VAR_RE.sub(sub, text)


def parse_key(fragment: str) -> tuple[str, ...]:
    if fragment == "":
        raise RefSyntaxError("empty key after '#'")
    if not fragment.startswith("/"):
        return (fragment,)
    parts = fragment[1:].split("/")
    if any(p == "" for p in parts):
        raise RefSyntaxError(f"empty segment in key path '#{fragment}'")
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in parts)


def parse_query(query: str) -> tuple[tuple[str, str], ...]:
    if query == "":
        raise RefSyntaxError("empty query after '?'")
    seen: dict[str, str] = {}
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if not eq or not name:
            raise RefSyntaxError(f"query part '{part}' is not name=value")
        name, value = unquote(name), unquote(value)
        if name in seen:
            raise RefSyntaxError(f"query parameter '{name}' given twice")
        seen[name] = value
    return tuple(sorted(seen.items()))


def parse(text: str) -> Reference:
    """Parse an already expanded reference."""
    if not isinstance(text, str):
        raise RefSyntaxError("a reference must be a string")
    if any(c in text for c in "\n\r\t\0"):
        raise RefSyntaxError("a reference cannot contain control characters or tabs")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise RefSyntaxError("not a reference: expected SCHEME://PATH (e.g. vault://secret/app#password)")
    if not SCHEME_RE.match(scheme):
        raise RefSyntaxError(f"bad scheme '{scheme}'")
    body, hash_, fragment = rest.partition("#")
    path, qmark, query = body.partition("?")
    if path.strip() == "":
        raise RefSyntaxError("empty path")
    if path != path.strip():
        raise RefSyntaxError("path has leading or trailing spaces")
    return Reference(
        scheme=scheme,
        doc=DocKey(path, parse_query(query) if qmark else ()),
        key=parse_key(fragment) if hash_ else None,
        text=text,
    )
