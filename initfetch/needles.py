"""Finding secret values in bytes: their forms, and one Aho-Corasick pass over the data.

`initfetch scan` (files) and `exec --mask-output` (the application's output)
both look for every form under which a value may show up: the forms the
redactor masks in log lines (the value, its JSON escape, its base64, each line
of a multi-line value), plus its raw bytes, its URL encoding and its base64
without padding. They work on bytes, not text: a file or a stream may be
binary, and a value must be found whatever surrounds it.

Bytes are matched as latin-1 text (one character per byte, decoded and encoded
in C at memory speed), so the automaton of pyahocorasick, which matches text,
finds byte strings exactly. As in the redactor, only a form's first ANCHOR
bytes go into the automaton and a hit is confirmed with startswith: building
costs O(number of forms), not O(total size of the values).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from initfetch.redact import ANCHOR, anchored_automaton, mask

# The armour lines of a PEM block are in every certificate and key, secret or not: as lines
# of a multi-line value they would match every PEM file anywhere.
_ARMOUR = re.compile(r"^-----(BEGIN|END) [A-Z0-9 ]+-----$")


def value_forms(value: Any, *, lines: bool = True) -> Iterator[tuple[bytes, str]]:
    """(form, kind) for every form of `value` (and of its string leaves), longest kinds first.

    A superset of the redactor's forms (tests/test_scan.py checks it): the raw bytes, the
    value, its JSON escape, base64 with and without padding, its URL encoding and, with
    `lines`, each stripped line of a multi-line value except PEM armour lines.
    """
    if isinstance(value, bytes):
        yield value, "value"
        yield from _b64(value)
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        yield data, "value"
        escaped = json.dumps(value)[1:-1]
        if escaped != value:
            yield escaped.encode(), "JSON-escaped"
        yield from _b64(data)
        quoted = _quote(data)
        if quoted != value:
            yield quoted.encode(), "URL-encoded"
        if lines and ("\n" in value or "\r" in value):
            for line in value.splitlines():
                line = line.strip()
                if line and not _ARMOUR.match(line):
                    yield line.encode("utf-8", "surrogatepass"), "a line of it"
    elif isinstance(value, dict):
        for v in value.values():
            yield from value_forms(v, lines=lines)
    elif isinstance(value, list):
        for v in value:
            yield from value_forms(v, lines=lines)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value).encode(), "value"


def _quote(data: bytes) -> str:
    from urllib.parse import quote  # here: importing this module stays cheap (the CLI's parser does)

    return quote(data, safe="")


def _b64(data: bytes) -> Iterator[tuple[bytes, str]]:
    encoded = base64.b64encode(data)
    yield encoded, "base64"
    if encoded.endswith(b"="):  # inside a longer base64 text, or written without padding
        yield encoded.rstrip(b"="), "base64"


@dataclass(frozen=True)
class Hit:
    start: int
    stop: int
    label: str


class Needles:
    """A fixed set of byte strings (each with a label) to find in latin-1 text.

    `hits` finds every occurrence of every form (scan); `mask` replaces the
    leftmost-longest ones with `<secret:LABEL>` and says how much of a stream's
    buffer can be let through now (mask-output).
    """

    def __init__(self, forms: Mapping[bytes, str]) -> None:
        self.labels: dict[str, str] = {f.decode("latin-1"): label for f, label in forms.items() if f}
        self.max_len = max((len(f) for f in self.labels), default=0)
        # Every proper prefix shorter than an anchor: what the end of a buffer may hold of a
        # form whose anchor is not complete yet.
        self._prefixes = {f[:k] for f in self.labels for k in range(1, min(len(f), ANCHOR))}
        self._markers = {label: _latin1(mask(label)) for label in set(self.labels.values())}
        self._automaton: Any = self._build() if self.labels else None

    def __bool__(self) -> bool:
        return bool(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def _build(self) -> Any:
        return anchored_automaton(self.labels)

    def hits(self, text: str, before: int | None = None) -> Iterator[Hit]:
        """Every complete occurrence of every form starting before `before` (default: anywhere)."""
        if self._automaton is None:
            return
        limit = len(text) if before is None else before
        for end, (anchor_len, candidates) in self._automaton.iter(text):
            start = end - anchor_len + 1
            if start >= limit:
                continue
            for form in candidates:
                if text.startswith(form, start):
                    yield Hit(start, start + len(form), self.labels[form])

    def mask(self, text: str, final: bool) -> tuple[str, int]:
        """(what may go out now, with values masked; how many characters of `text` it covers).

        Not `final`: the end of `text` that could still become a form once more data comes
        is held back (the caller keeps text[covered:] for the next read). `final`: all of it.
        """
        if self._automaton is None:
            return text, len(text)
        found: list[tuple[int, int, str]] = []
        partial: list[int] = []  # starts of forms that the end of `text` cuts off
        size = len(text)
        for end, (anchor_len, candidates) in self._automaton.iter(text):
            start = end - anchor_len + 1
            for form in candidates:  # longest first
                if text.startswith(form, start):
                    found.append((start, start + len(form), form))
                    break
                if not final and start + len(form) > size and form.startswith(text[start:]):
                    partial.append(start)
        if not final:
            partial += self._short_partials(text)
        found.sort(key=lambda m: (m[0], m[0] - m[1]))
        out: list[str] = []
        pos = 0
        for start, stop, form in found:
            if start < pos:
                continue  # overlaps a longer or earlier one already masked
            if not final and any(pos <= p <= start for p in partial):
                break  # a cut-off form starts first (or is longer): wait for the rest of it
            out.append(text[pos:start])
            out.append(self._markers[self.labels[form]])
            pos = stop
        hold = min((p for p in partial if p >= pos), default=size)
        out.append(text[pos:hold])
        return "".join(out), max(pos, hold)

    def _short_partials(self, text: str) -> list[int]:
        """Starts of text's tails (shorter than an anchor) that are proper prefixes of a form."""
        size = len(text)
        return [size - k for k in range(min(ANCHOR - 1, size), 0, -1) if text[size - k :] in self._prefixes]


def _latin1(text: str) -> str:
    return text.encode("utf-8").decode("latin-1")


def needles_for(values: Mapping[str, Any], min_len: int, *, lines: bool = True) -> Needles:
    """Needles for every form of every value, labelled `NAME` or `NAME (KIND)`; forms shorter
    than `min_len` bytes are left out."""
    forms: dict[bytes, str] = {}
    for name, value in values.items():
        for form, kind in value_forms(value, lines=lines):
            if len(form) >= min_len:
                forms.setdefault(form, name if kind == "value" else f"{name} ({kind})")
    return Needles(forms)


def text_forms(forms: Iterable[tuple[str, str]]) -> dict[bytes, str]:
    """Byte forms of text forms (the redactor's), with their URL encodings."""
    out: dict[bytes, str] = {}
    for form, label in forms:
        data = form.encode("utf-8", "surrogatepass")
        out.setdefault(data, label)
        quoted = _quote(data).encode()
        if quoted != data:
            out.setdefault(quoted, label)
    return out
