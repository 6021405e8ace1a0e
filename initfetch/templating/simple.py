"""Templates that are nothing but text and `{{ secrets.NAME }}`: rendered without Jinja.

Most templates are an env file or a config with one value per line. Compiling one
through Jinja costs more than everything else a render of its values does (a
template of 2000 placeholders: 120 ms to parse and compile, 17 ms to import Jinja),
and a watcher renders it again on every change. Such a template is split once into
its text and its names, and rendered by joining them, with the output Jinja would
give: text as written (newlines as `\\n`, as Jinja's lexer normalizes them), each
value as is.

Anything else goes to Jinja, and so does a render where one of the names is not a
string that can be written as UTF-8 (a map, bytes, a number, an absent optional
secret), and every render of a masked preview: Jinja then says what it says today,
errors included. check's placeholders are strings: a check of such templates loads
no Jinja either. No Jinja is imported here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NEWLINES = re.compile(r"\r\n?")
_TAGS = ("{{", "{%", "{#")


@dataclass(frozen=True)
class SimpleTemplate:
    texts: tuple[str, ...]  # the text before each placeholder, and after the last one
    names: tuple[str, ...]  # the secret of each placeholder
    lines: tuple[int, ...]  # the line of each placeholder (check's messages)

    def used(self) -> set[tuple[str, int]]:
        """(name, line) of each placeholder, as checks.secrets_used gives them for Jinja."""
        return set(zip(self.names, self.lines, strict=True))

    def renders(self, values: Mapping[str, Any]) -> bool:
        """Whether every value it names is a string that can be written out as UTF-8."""
        for name in set(self.names):
            value = values.get(name)
            # A str subclass too (check's placeholders): Jinja writes out its characters as well.
            if not isinstance(value, str) or not (value.isascii() or _encodable(value)):
                return False
        return True

    def pieces(self, values: Mapping[str, Any]) -> Iterator[str]:
        texts = self.texts
        for i, name in enumerate(self.names):
            if texts[i]:
                yield texts[i]
            yield values[name]
        if texts[-1]:
            yield texts[-1]


def parse_simple(source: str) -> SimpleTemplate | None:
    """The template split into text and names, or None when it is more than that for Jinja."""
    if "\r" in source:
        source = _NEWLINES.sub("\n", source)
    texts: list[str] = []
    names: list[str] = []
    lines: list[int] = []
    pos = 0
    line = 1
    for m in _PLACEHOLDER.finditer(source):
        text = source[pos : m.start()]
        name = m.group(1)
        # `{` just before `{{` would start the tag a character early; a dict method's name
        # (`secrets.items`) is the method for Jinja, not the secret.
        if _opens_tag(text) or text.endswith("{") or hasattr(dict, name):
            return None
        line += text.count("\n")
        texts.append(text)
        names.append(name)
        lines.append(line + source.count("\n", m.start(), m.start(1)))  # where Jinja puts the name
        line += m.group(0).count("\n")
        pos = m.end()
    tail = source[pos:]
    if _opens_tag(tail):
        return None
    texts.append(tail)
    return SimpleTemplate(tuple(texts), tuple(names), tuple(lines))


def _opens_tag(text: str) -> bool:
    return "{" in text and any(tag in text for tag in _TAGS)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
