"""Templates that are nothing but text, comments and `{{ secrets.NAME }}` (or
`{{ secrets.NAME | tojson }}` and the other quoting filters): rendered without Jinja.

Most templates are an env file or a config with one value per line, and the
starter `initfetch init` writes is a comment and one `| tojson`. Importing Jinja
costs more than everything else a check or a small render does (17-35 ms), and
compiling a template through it more still (a template of 2000 placeholders: 120 ms
to parse and compile); a watcher renders again on every change. Such a template is
split once into its text and its placeholders, and rendered by joining them, with
the output Jinja would give: text as written (newlines as `\\n`, as Jinja's lexer
normalizes them), comments dropped with the whitespace their `-` strips, each value
as is or through the same filter function the sandbox uses (helpers.FILTERS), whose
output is registered with the redactor as there.

Anything else goes to Jinja, and so does a render where one of the names is not a
string that can be written as UTF-8 (a map, bytes, a number, an absent optional
secret; a NUL through a filter, which refuses it), and every render of a masked
preview: Jinja then says what it says today, errors included. check's placeholders
are strings: a check of such templates loads no Jinja either. No Jinja is imported here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from initfetch.redact import Redactor
from initfetch.templating.helpers import FILTERS, register_derived

# A comment (with Jinja's whitespace control signs), or a placeholder with at most one filter.
_TOKEN = re.compile(
    r"\{#(?P<before>[-+]?)(?P<comment>.*?)(?P<after>[-+]?)#\}"
    r"|\{\{\s*secrets\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\|\s*(?P<filter>[A-Za-z_][A-Za-z0-9_]*)\s*)?\}\}",
    re.S,
)
_LEADING_SPACE = re.compile(r"\s*")  # what Jinja's `-#}\s*` consumes after a comment
_NEWLINES = re.compile(r"\r\n?")
_TAGS = ("{{", "{%", "{#")
# The filters a simple template may use: pure functions of a string, as in the sandbox.
SIMPLE_FILTERS = frozenset({"tojson", "json", "toyaml", "b64encode", "shquote", "dotenv"})


@dataclass(frozen=True)
class SimpleTemplate:
    texts: tuple[str, ...]  # the text before each placeholder, and after the last one
    names: tuple[str, ...]  # the secret of each placeholder
    filters: tuple[str | None, ...]  # the filter of each placeholder, if any
    lines: tuple[int, ...]  # the line of each placeholder (check's messages)

    def used(self) -> set[tuple[str, int]]:
        """(name, line) of each placeholder, as checks.secrets_used gives them for Jinja."""
        return set(zip(self.names, self.lines, strict=True))

    def renders(self, values: Mapping[str, Any]) -> bool:
        """Whether every value it names is a string that can be written out as UTF-8 (and,
        through a filter, holds no NUL: shquote and dotenv refuse one, and Jinja says so)."""
        filtered = {n for n, f in zip(self.names, self.filters, strict=True) if f is not None}
        for name in set(self.names):
            value = values.get(name)
            # A str subclass too (check's placeholders): Jinja writes out its characters as well.
            if not isinstance(value, str) or not (value.isascii() or _encodable(value)):
                return False
            if name in filtered and "\0" in value:
                return False
        return True

    def pieces(self, values: Mapping[str, Any], redactor: Redactor | None) -> Iterator[str]:
        texts = self.texts
        for i, name in enumerate(self.names):
            if texts[i]:
                yield texts[i]
            value = values[name]
            filter_ = self.filters[i]
            if filter_ is None:
                yield value
            else:
                fn, tag = FILTERS[filter_]
                out = fn(value)
                register_derived(redactor, value, out, tag)
                yield out
        if texts[-1]:
            yield texts[-1]


def parse_simple(source: str) -> SimpleTemplate | None:
    """The template split into text and placeholders, or None when it is more for Jinja."""
    if "\r" in source:
        source = _NEWLINES.sub("\n", source)
    texts: list[str] = []
    names: list[str] = []
    filters: list[str | None] = []
    lines: list[int] = []
    text = ""  # since the last placeholder, comments taken out
    strip_next = False  # the last comment ended with `-#}`
    pos = 0
    line, counted = 1, 0  # the line at source[counted]
    for m in _TOKEN.finditer(source):
        between = source[pos : m.start()]
        # `{` just before the tag would start it a character early.
        if _opens_tag(between) or between.endswith("{"):
            return None
        if strip_next:
            between = between[_LEADING_SPACE.match(between).end() :]  # type: ignore[union-attr]
        pos = m.end()
        if m.group("name") is None:  # a comment
            before, after = m.group("before"), m.group("after")
            text += between.rstrip() if before == "-" else between
            strip_next = after == "-"
            continue
        name, filter_ = m.group("name"), m.group("filter")
        # A dict method's name (`secrets.items`) is the method for Jinja, not the secret.
        if hasattr(dict, name) or (filter_ is not None and filter_ not in SIMPLE_FILTERS):
            return None
        line += source.count("\n", counted, m.start("name"))  # where Jinja puts the name
        counted = m.start("name")
        texts.append(text + between)
        names.append(name)
        filters.append(filter_)
        lines.append(line)
        text, strip_next = "", False
    tail = source[pos:]
    if _opens_tag(tail):
        return None
    if strip_next:
        tail = tail[_LEADING_SPACE.match(tail).end() :]  # type: ignore[union-attr]
    texts.append(text + tail)
    return SimpleTemplate(tuple(texts), tuple(names), tuple(filters), tuple(lines))


def _opens_tag(text: str) -> bool:
    return "{" in text and any(tag in text for tag in _TAGS)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
