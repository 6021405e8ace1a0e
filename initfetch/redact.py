"""Redaction: every resolved value is registered here, and every line that
leaves the process (logs, errors, audit, preview) is scrubbed through it.

This is defence in depth: no code path is meant to print a value, but if a
library puts one into an exception message, it is masked before it is seen.
Values shorter than MIN_LEN are not masked in free text: masking "1" or "ab"
everywhere would destroy every message while protecting nothing.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

MIN_LEN = 3
# Structured fields (audit records, the preview's reference table) hold names,
# references and versions from the manifest and the backend's metadata, never
# values; there only values this long are masked, so a short value like "app"
# does not mangle a secret named "app_params".
FIELD_MIN_LEN = 8


def mask(label: str) -> str:
    return f"<secret:{label}>"


# Matching: every registered form is found by one Aho-Corasick pass over the
# text (pyahocorasick). Only a form's first ANCHOR characters go into the
# automaton; a hit is confirmed with startswith. Building therefore costs
# O(number of forms), not O(total size of the values): forty 32 KB
# certificates make an automaton of a few hundred KB, not of megabytes.
ANCHOR = 16


class Redactor:
    """Masks registered values in any text, in time linear in the text.

    The matcher is built lazily, once per batch of additions: register every
    value of a resolution (`add`), then scrub as many lines as you like.
    `builds` counts matcher builds, so tests can prove the work per line does
    not grow with the number of values.
    """

    def __init__(self, min_len: int = MIN_LEN) -> None:
        self.min_len = min_len
        self._labels: dict[str, str] = {}
        self._recent: set[str] = set()  # forms added since the last retire()
        self._matcher: Any = None
        self._lock = threading.Lock()
        self.builds = 0
        self.changes = 0  # grows whenever the registered forms change (see forms())

    def add(self, value: Any, label: str) -> None:
        """Register a value (and its string leaves and common encodings) under a label."""
        with self._lock:
            for text in _forms(value):
                if len(text) < self.min_len:
                    continue
                self._recent.add(text)  # seen again: still current, whatever retire() says next
                if text not in self._labels:
                    self._labels[text] = label
                    self._matcher = None
                    self.changes += 1

    def retire(self, keep: Iterable[Any]) -> None:
        """Forget every value except those of `keep` and those registered since the last
        retire (the current render's derived forms).

        A watcher calls this after each change with the current and the previous values
        (the old ones may still be in flight until the application reloads), so what it
        keeps stays bounded over thousands of refreshes instead of growing with every value
        ever seen.
        """
        kept: set[str] = set()
        for value in keep:
            kept.update(_forms(value))
        with self._lock:
            self._labels = {f: label for f, label in self._labels.items() if f in kept or f in self._recent}
            self._recent = set()
            self._matcher = None
            self.changes += 1

    def subset(self, keep: Callable[[str], bool]) -> Redactor:
        """A redactor that masks only the registered forms `keep` accepts, under the same labels."""
        other = Redactor(self.min_len)
        with self._lock:
            other._labels = {form: label for form, label in self._labels.items() if keep(form)}
        return other

    def forms(self) -> tuple[int, list[tuple[str, str]]]:
        """(changes, every registered (form, label)): a consistent copy for another matcher
        (exec --mask-output) to rebuild from when `changes` moved."""
        with self._lock:
            return self.changes, list(self._labels.items())

    def __len__(self) -> int:
        """How many forms are registered (bounded in watch mode: see retire)."""
        return len(self._labels)

    def label_of(self, value: Any) -> str | None:
        return self._labels.get(value) if isinstance(value, str) else None

    def scrub(self, text: str, min_len: int | None = None) -> str:
        """Mask registered values in text. `min_len` leaves shorter values alone, for
        structured fields (names, references) that come from the manifest, not a backend."""
        if not self._labels or not text:
            return text
        matcher = self._matcher or self._build()
        floor = min_len or 0
        # Every anchor hit, confirmed; then leftmost-longest, non-overlapping, like
        # one regex alternation of all values sorted longest first.
        found: list[tuple[int, int, str]] = []
        for end, (anchor_len, candidates) in matcher.iter(text):
            start = end - anchor_len + 1
            for form in candidates:  # longest first
                if len(form) >= floor and text.startswith(form, start):
                    found.append((start, start + len(form), form))
                    break
        if not found:
            return text
        found.sort(key=lambda m: (m[0], m[0] - m[1]))
        out: list[str] = []
        pos = 0
        for start, stop, form in found:
            if start < pos:
                continue
            out.append(text[pos:start])
            out.append(mask(self._labels[form]))
            pos = stop
        out.append(text[pos:])
        return "".join(out)

    def _build(self) -> Any:
        with self._lock:
            if self._matcher is not None:
                return self._matcher
            self._matcher = anchored_automaton(self._labels)
            self.builds += 1
            return self._matcher

    def __bool__(self) -> bool:  # an empty redactor is still a redactor
        return True


def _forms(value: Any) -> Iterable[str]:
    """The strings under which a value may show up in output."""
    if isinstance(value, bytes):
        yield base64.b64encode(value).decode()
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return
    if isinstance(value, str):
        yield value
        escaped = json.dumps(value)[1:-1]
        if escaped != value:
            yield escaped
        yield base64.b64encode(value.encode("utf-8", "surrogatepass")).decode()
        for line in value.splitlines():  # a multi-line value may be logged line by line
            yield line.strip()
    elif isinstance(value, dict):
        for v in value.values():
            yield from _forms(v)
    elif isinstance(value, list):
        for v in value:
            yield from _forms(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def anchored_automaton(labels: Iterable[str]) -> Any:
    """One Aho-Corasick automaton over the first ANCHOR characters of every form; a hit
    carries (anchor length, the forms that start so, longest first) to confirm in place.
    Anchors keep the automaton small however long the values are."""
    import ahocorasick

    by_anchor: dict[str, list[str]] = {}
    for form in labels:
        by_anchor.setdefault(form[:ANCHOR], []).append(form)
    automaton = ahocorasick.Automaton()
    for anchor, forms in by_anchor.items():
        forms.sort(key=len, reverse=True)
        automaton.add_word(anchor, (len(anchor), forms))
    automaton.make_automaton()
    return automaton
