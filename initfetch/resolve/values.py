"""What a document's value may be, and what a reference's `#key` takes from it."""

from __future__ import annotations

import json
from typing import Any

from initfetch.errors import BadValue, MissingKey


def check_text(value: Any) -> None:
    """Raise BadValue if a string in `value` cannot be written as UTF-8 (lone surrogates)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise BadValue(
                        "the value holds a character that is not valid text (a lone surrogate)"
                    ) from None
        elif isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(item.keys())
        elif isinstance(item, list):
            stack.extend(item)


def document_size(value: Any, stop: int) -> int:
    """Bytes a value takes as text (JSON-like values: their leaves); stops counting past `stop`."""
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        return len(value) if len(value) > stop else len(value.encode("utf-8", "surrogatepass"))
    total = 0
    stack = [value]
    while stack and total <= stop:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            total += sum(len(str(k)) for k in item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str | bytes):
            total += document_size(item, stop)
        else:
            total += len(str(item))
    return total


def select_key(value: Any, key: tuple[str, ...], ref: str) -> Any:
    """Walk `#key` / `#/a/b` into a JSON-like value; str/bytes are parsed as JSON first."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise MissingKey("the value is binary, so it has no keys") from None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise MissingKey(f"the value is not JSON, so it has no key '{_show(key)}'") from None
    walked: list[str] = []
    for part in key:
        if isinstance(value, dict):
            if part not in value:
                keys = ", ".join(sorted(map(str, value))[:20]) or "none"
                where = f" under '{_show(tuple(walked))}'" if walked else ""
                raise MissingKey(f"no key '{part}'{where} (keys there: {keys})")
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise MissingKey(f"'{_show(tuple(walked)) or '/'}' is not an object, so it has no key '{part}'")
        walked.append(part)
    return value


def _show(key: tuple[str, ...]) -> str:
    return key[0] if len(key) == 1 else "/" + "/".join(key)
