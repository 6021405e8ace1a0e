"""How a value is written into a config: the quoting helpers templates use, and the
text form of any value (JSON for maps and lists, never a Python repr).

Pure functions with no template engine behind them: `files:` outputs and
`env_from` use them without loading Jinja.
"""

from __future__ import annotations

import base64
import json
import shlex
from typing import Any

import yaml


class TemplateRefused(Exception):
    """A template hit a limit or asked for an output nothing can hold; the message
    names the limit or the reason and never quotes a value.

    An Exception (not a BaseException) so Jinja rewrites the traceback to the
    template line; template code cannot catch anything, and no Jinja code on the
    way catches a bare Exception at render time.
    """


def to_text(value: Any) -> str:
    """A value as text: bytes decoded, numbers printed, maps and lists as JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return to_json(value)  # dicts, lists, true/false/null as JSON, never a Python repr


def to_json(value: Any, indent: int | None = None) -> str:
    """Plain JSON (Jinja's own tojson HTML-escapes < > & ', which breaks configs)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return json.dumps(value, indent=indent, ensure_ascii=False)


def to_yaml(value: Any) -> str:
    """A YAML flow scalar or block for any JSON-like value, safe to embed after `key: `."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):  # always double-quoted, so "yes", "1.0" or "null" stay strings
        dumped = yaml.safe_dump(str(value), default_style='"', width=2**31, allow_unicode=True)
        return dumped.removesuffix("\n...\n").strip()
    if isinstance(value, int | float | bool) or value is None:
        return json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True, width=2**31, allow_unicode=True).strip()


def b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else to_text(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def b64decode(value: Any) -> str | bytes:
    data = base64.b64decode(to_text(value), validate=True)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def shell_quote(value: Any) -> str:
    text = to_text(value)
    if "\0" in text:
        raise TemplateRefused("shquote: the value contains a NUL byte, which no shell word can hold")
    return shlex.quote(text)


def dotenv_quote(value: Any) -> str:
    """Double-quoted dotenv value: backslash, quote, $, newlines and carriage returns escaped."""
    text = to_text(value)
    if "\0" in text:
        raise TemplateRefused("dotenv: the value contains a NUL byte, which no environment variable can hold")
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )
    return f'"{escaped}"'
