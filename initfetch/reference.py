"""Secret references: `SCHEME://PATH[?QUERY][#KEY]`.

SCHEME names a provider instance (`vault`, `awssm`, or a name the manifest
declares). PATH is everything up to the first `?` or `#`, taken literally,
so ARNs with colons and absolute paths (`ssm:///a/b`) need no escaping.
QUERY is `k=v&k=v` with unique keys. KEY is either a top-level key
(`#password`) or a JSON-pointer-like path (`#/a/b`, `~1` for `/`, `~0` for `~`).
`${VAR}` and `${VAR:-default}` are expanded from the environment after the
reference is split into its parts, inside each part (path, query value, key):
a variable's value can never add a `#key`, a `?query` or a scheme. `$$` is a
literal `$`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from initfetch.errors import shown

SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*$")
_VAR_RE = re.compile(r"\$(\$|\{([^}]*)\}|\{)")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# C0, DEL, C1 and the Unicode line breaks: each could forge a line in a report.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class RefSyntaxError(ValueError):
    """A reference that cannot be parsed; the message says why, in one line."""


@dataclass(frozen=True)
class FromFile:
    """A write parameter taken from a file when the write is made (a transit ciphertext)."""

    path: str  # absolute (the loader resolves it against the manifest's directory)


@dataclass(frozen=True)
class Write:
    """A secret produced by a write (`write:` in the manifest): its parameters, sent as given.

    Parameters are not secret as such, but one could hold something sensitive: they are
    never logged, and they appear in no message (only their names do).
    """

    params: tuple[tuple[str, str | FromFile], ...] = ()
    revoke_replaced: bool = False  # revoke what a replaced write made, after on_change.revoke_grace


@dataclass(frozen=True)
class DocKey:
    """What one read fetches: a path plus the query that selects a version.

    Every reference with an equal DocKey on one provider instance is served by
    the same read (one Vault lease, one AWS version). With `write`, the document is
    produced by a write to the path (a PKI certificate, a transit decryption): two
    references with the same path and parameters share that one write.
    """

    path: str
    query: tuple[tuple[str, str], ...] = ()
    write: Write | None = None

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
    """Expand `${VAR}` / `${VAR:-default}` in a whole string (a provider option).

    An unset VAR is an error; with `lenient`, it is left as written (offline checks).
    References do not use this: see `expand_reference`.
    """
    out, _ = _expand(text, environ, lenient)
    return out


def _expand(
    raw: str,
    environ: Mapping[str, str] | None,
    lenient: bool,
    literal: Callable[[str], str] = lambda s: s,
) -> tuple[str, bool]:
    """`raw` with its variables expanded; `literal` decodes only the text written in the manifest.

    A variable's value is taken as is (never unquoted or unescaped). Returns the
    text and whether every variable was set (False only with `lenient`).
    """
    if environ is None or "$" not in raw:
        return literal(raw), True
    out: list[str] = []
    complete, pos = True, 0
    for m in _VAR_RE.finditer(raw):
        out.append(literal(raw[pos : m.start()]))
        pos = m.end()
        if m.group(1) == "$":
            out.append("$")
            continue
        if m.group(1) == "{":
            raise RefSyntaxError("'${' without a closing '}'")
        body = m.group(2)
        name, sep, default = body.partition(":-")
        if not _NAME_RE.match(name):
            raise RefSyntaxError(f"bad variable name in ${{...}}: {shown(name)}")
        value = environ.get(name)
        if value is None or (sep and value == ""):
            if sep:
                out.append(default)
            elif lenient:
                out.append(m.group(0))
                complete = False
            else:
                raise RefSyntaxError(f"environment variable {name} is not set")
        else:
            out.append(value)
    out.append(literal(raw[pos:]))
    return "".join(out), complete


def _mask(text: str) -> str:
    """`text` with every `${...}` and `$$` blanked out, so separators inside them are not seen."""
    if "$" not in text:
        return text
    return _VAR_RE.sub(lambda m: "$" * len(m.group(0)), text)


def _split(raw: str, masked: str, sep: str) -> list[str]:
    """Split `raw` on `sep` where `masked` (same length) has it, i.e. outside variables."""
    parts, pos = [], 0
    while True:
        i = masked.find(sep, pos)
        if i < 0:
            parts.append(raw[pos:])
            return parts
        parts.append(raw[pos:i])
        pos = i + len(sep)


def _unescape_key(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def parse_key(
    fragment: str, environ: Mapping[str, str] | None = None, lenient: bool = False
) -> tuple[tuple[str, ...], bool]:
    """The key after `#`: one top-level key, or `/a/b` (a path of keys); and whether it is complete."""
    if fragment == "":
        raise RefSyntaxError("empty key after '#'")
    if not fragment.startswith("/"):
        key, complete = _expand(fragment, environ, lenient)
        if key == "":
            raise RefSyntaxError("empty key after '#'")
        return (key,), complete
    out, complete = [], True
    masked = _mask(fragment) if environ is not None else fragment
    for raw in _split(fragment[1:], masked[1:], "/"):
        part, ok = _expand(raw, environ, lenient, _unescape_key)
        if part == "":
            raise RefSyntaxError("empty segment in the key path after '#'")
        out.append(part)
        complete = complete and ok
    return tuple(out), complete


def parse_query(
    query: str, environ: Mapping[str, str] | None = None, lenient: bool = False
) -> tuple[tuple[tuple[str, str], ...], bool]:
    """`name=value&...`; names are literal, values may use variables."""
    if query == "":
        raise RefSyntaxError("empty query after '?'")
    seen: dict[str, str] = {}
    complete = True
    masked = _mask(query) if environ is not None else query
    pos = 0
    for raw in _split(query, masked, "&"):
        part_mask = masked[pos : pos + len(raw)]
        pos += len(raw) + 1
        eq = part_mask.find("=")
        if eq <= 0:
            raise RefSyntaxError(f"query part {shown(raw)} is not name=value")
        raw_name, raw_value = raw[:eq], raw[eq + 1 :]
        if "$" in raw_name and environ is not None:
            raise RefSyntaxError("a query parameter name cannot use ${...} variables")
        name = unquote(raw_name)
        value, ok = _expand(raw_value, environ, lenient, unquote)
        complete = complete and ok
        if name in seen:
            raise RefSyntaxError(f"query parameter {shown(name)} given twice")
        seen[name] = value
    return tuple(sorted(seen.items())), complete


def parse(text: str) -> Reference:
    """Parse a reference taken literally: `$` is an ordinary character."""
    ref = _parse(text, None, False)
    assert ref is not None
    return ref


def expand_reference(text: str, environ: Mapping[str, str], *, lenient: bool = False) -> Reference | None:
    """Parse a reference from the manifest, then expand `${VAR}` inside each part.

    The structure (scheme, path, `?query`, `#key`) comes from the text as
    written; a variable's value stays inside its part, so it can never add a
    `#key`, a `?query` or a scheme. With `lenient`, an unset variable gives
    None (after every syntax check), for offline checks.
    """
    return _parse(text, environ, lenient)


def _parse(text: str, environ: Mapping[str, str] | None, lenient: bool) -> Reference | None:
    if not isinstance(text, str):
        raise RefSyntaxError("a reference must be a string")
    if _CONTROL_RE.search(text):
        raise RefSyntaxError("a reference cannot contain control characters or tabs")
    masked = _mask(text) if environ is not None else text
    i = masked.find("://")
    if i < 0:
        raise RefSyntaxError(
            "not a reference: expected SCHEME://PATH (e.g. vault://secret/app#password); "
            "a ${VAR} cannot supply the scheme"
        )
    scheme, rest, rest_mask = text[:i], text[i + 3 :], masked[i + 3 :]
    if environ is not None and "$" in scheme:
        raise RefSyntaxError("the scheme cannot use ${...} variables")
    if not SCHEME_RE.match(scheme):
        raise RefSyntaxError(f"bad scheme {shown(scheme)}")
    h = rest_mask.find("#")
    body, body_mask = (rest[:h], rest_mask[:h]) if h >= 0 else (rest, rest_mask)
    q = body_mask.find("?")
    raw_path = body[:q] if q >= 0 else body
    path, complete = _expand(raw_path, environ, lenient)
    if path.strip() == "":
        raise RefSyntaxError("empty path")
    if path != path.strip():
        raise RefSyntaxError("path has leading or trailing spaces")
    query: tuple[tuple[str, str], ...] = ()
    if q >= 0:
        query, ok = parse_query(body[q + 1 :], environ, lenient)
        complete = complete and ok
    key = None
    if h >= 0:
        key, ok = parse_key(rest[h + 1 :], environ, lenient)
        complete = complete and ok
    if not complete:
        return None
    expanded = text if environ is None else _expand(text, environ, lenient)[0]  # for messages
    if environ is not None and _CONTROL_RE.search(expanded):
        raise RefSyntaxError("a variable in the reference holds control characters")
    return Reference(scheme=scheme, doc=DocKey(path, query), key=key, text=expanded)
