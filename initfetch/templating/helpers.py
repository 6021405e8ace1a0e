"""The filters templates use to write values into configs (JSON, YAML, base64, shell,
dotenv), and how a derived value stays masked.

A filter that derives a new string from a secret (base64, quoting) registers its
output with the redactor, so logs and a masked preview hide the derived form too.
In a preview's render of placeholders, an encoder whose output does not show its
input gives a marked placeholder (`<secret:tls_key|b64>`) instead of the base64 of
the placeholder text, which would look like a leaked value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from initfetch.redact import Redactor, mask
from initfetch.templating.encoders import (
    b64decode,
    b64encode,
    ca_bundle,
    dotenv_quote,
    fullchain,
    pem_bundle,
    pkcs12,
    shell_quote,
    to_json,
    to_yaml,
)

if TYPE_CHECKING:
    import jinja2  # imported by add_filters: simple.py uses this module without Jinja

# Encoders whose output does not show their input (quoting ones do): in a preview, applied
# to a placeholder, they give a marked placeholder such as <secret:tls_key|b64>, not the
# base64 of "<secret:tls_key>", which would look like a leaked value. Decoders stay as
# they are: decoding a placeholder fails, so a template that needs real content is hidden.
TRANSFORMING = frozenset({"b64"})

# Filter name -> (its function, the tag a derived value is registered under).
FILTERS: dict[str, tuple[Callable[..., Any], str]] = {
    "tojson": (to_json, "json"),
    "json": (to_json, "json"),
    "toyaml": (to_yaml, "yaml"),
    "b64encode": (b64encode, "b64"),
    "b64decode": (b64decode, "b64decode"),
    "fromjson": (json.loads, "fromjson"),
    "shquote": (shell_quote, "sh"),
    "dotenv": (dotenv_quote, "dotenv"),
    # certificates from a PKI write (secrets.NAME is the whole issued document)
    "fullchain": (fullchain, "fullchain"),
    "pem_bundle": (pem_bundle, "pem_bundle"),
    "ca_bundle": (ca_bundle, "ca_bundle"),
    "pkcs12": (pkcs12, "pkcs12"),  # bytes: `| b64encode` it in a template, or files: format
}


def _placeholder_label(value: Any) -> str | None:
    """`tls_key` for the placeholder `<secret:tls_key>` (text, or bytes for a binary secret)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.startswith("<secret:") and value.endswith(">"):
        return value[len("<secret:") : -1]
    return None


def add_filters(env: jinja2.Environment, redactor: Redactor | None, preview: bool) -> None:
    """The value filters, wrapped so derived values are registered (and, in a preview, marked)."""
    import jinja2

    def derived(fn: Callable[..., Any], tag: str) -> Callable[..., Any]:
        def wrapper(value: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()  # the undefined name, not a TypeError
            stands_for = _placeholder_label(value) if preview and tag in TRANSFORMING else None
            if stands_for is not None:
                # base64 of "<secret:x>" would look like a leaked value: say what it stands for.
                return mask(f"{stands_for}|{tag}")
            out = fn(value, *args, **kwargs)
            register_derived(redactor, value, out, tag)
            return out

        return wrapper

    for name, (fn, tag) in FILTERS.items():
        env.filters[name] = derived(fn, tag)


def register_derived(redactor: Redactor | None, value: Any, out: Any, tag: str) -> None:
    """Register a filter's output derived from a secret, so logs and previews hide it too.
    Output that still contains the input verbatim (quoting) is masked through the input."""
    if redactor is None or (isinstance(value, str) and isinstance(out, str) and value in out):
        return
    label = redactor.label_of(value) if isinstance(value, str) else None
    if label is not None or _contains_secret(redactor, value):
        redactor.add(out, f"{label or 'derived'}|{tag}")


def _contains_secret(redactor: Redactor, value: Any) -> bool:
    if isinstance(value, dict):
        return any(_contains_secret(redactor, v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_secret(redactor, v) for v in value)
    return (isinstance(value, str) and redactor.label_of(value) is not None) or isinstance(value, bytes)
