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
import re
import threading
from collections.abc import Iterable
from typing import Any

MIN_LEN = 3
# Structured fields (audit records, the preview's reference table) hold names,
# references and versions from the manifest and the backend's metadata, never
# values; there only values this long are masked, so a short value like "app"
# does not mangle a secret named "app_params".
FIELD_MIN_LEN = 8


def mask(label: str) -> str:
    return f"<secret:{label}>"


class Redactor:
    def __init__(self, min_len: int = MIN_LEN) -> None:
        self.min_len = min_len
        self._labels: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: Any, label: str) -> None:
        """Register a value (and its string leaves and common encodings) under a label."""
        with self._lock:
            for text in _forms(value):
                if len(text) >= self.min_len and text not in self._labels:
                    self._labels[text] = label
                    self._pattern = None

    def label_of(self, value: Any) -> str | None:
        return self._labels.get(value) if isinstance(value, str) else None

    def scrub(self, text: str, min_len: int | None = None) -> str:
        """Mask registered values in text. `min_len` leaves shorter values alone, for
        structured fields (names, references) that come from the manifest, not a backend."""
        if not self._labels or not text:
            return text
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                # Longest first, so a value that contains another is masked whole.
                ordered = sorted(self._labels, key=len, reverse=True)
                pattern = self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
        floor = min_len or 0
        return pattern.sub(
            lambda m: mask(self._labels[m.group(0)]) if len(m.group(0)) >= floor else m.group(0), text
        )

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
        yield base64.b64encode(value.encode()).decode()
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
