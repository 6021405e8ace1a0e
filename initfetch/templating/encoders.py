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


# --- certificates (a PKI write's document: certificate, private_key, issuing_ca, ca_chain) ---


def _pki_field(value: Any, key: str, helper: str) -> Any:
    try:
        return value[key]
    except (KeyError, TypeError, IndexError):
        raise TemplateRefused(
            f"{helper}: the value is not an issued certificate (no '{key}'; "
            "use the whole secret of a pki/issue write, not one key of it)"
        ) from None


def _pem(text: Any) -> str:
    return to_text(text).strip() + "\n"


def fullchain(value: Any) -> str:
    """The certificate, then its chain (ca_chain, else issuing_ca), each once: what nginx's
    ssl_certificate and most servers take."""
    parts = [_pem(_pki_field(value, "certificate", "fullchain"))]
    try:
        chain = value["ca_chain"]
    except (KeyError, TypeError, IndexError):
        chain = None
    if not chain:
        chain = [_pki_field(value, "issuing_ca", "fullchain")]
    if isinstance(chain, str | bytes):
        chain = [chain]
    for pem in chain:
        if _pem(pem) not in parts:
            parts.append(_pem(pem))
    return "".join(parts)


def pem_bundle(value: Any) -> str:
    """The full chain and then the private key, in one file (HAProxy's `crt`)."""
    return fullchain(value) + _pem(_pki_field(value, "private_key", "pem_bundle"))


def ca_bundle(value: Any) -> str:
    """The issuing CA and the rest of the chain, without the certificate (a client's trust file)."""
    return fullchain(value)[len(_pem(_pki_field(value, "certificate", "ca_bundle"))) :]


def pkcs12(value: Any, password: Any) -> bytes:
    """A PKCS#12 keystore (key, certificate and chain) for Java and .NET applications,
    encrypted with `password`. Needs the `cryptography` package, imported only here (it is
    in the `all` image through azure-identity; no extra pulls it in for Vault alone, so a
    Vault-only image stays small and can do everything else)."""
    cert_pem = to_text(_pki_field(value, "certificate", "pkcs12"))
    key_pem = to_text(_pki_field(value, "private_key", "pkcs12"))
    if cert_pem.startswith("<secret:") and cert_pem.endswith(">"):  # a preview's or check's placeholder
        return f"{cert_pem.removesuffix('/certificate>')}|pkcs12>".encode()
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import (
            BestAvailableEncryption,
            load_pem_private_key,
        )
        from cryptography.hazmat.primitives.serialization import (
            pkcs12 as p12,
        )
    except ImportError:
        raise TemplateRefused(
            "pkcs12 needs the 'cryptography' package, which this installation lacks "
            "(the image built with EXTRAS=all has it; else pip install cryptography)"
        ) from None
    secret = to_text(password).encode("utf-8")
    if not secret:
        raise TemplateRefused("pkcs12: the password is empty")
    try:
        chain = fullchain(value)[len(_pem(cert_pem)) :]
        cas = x509.load_pem_x509_certificates(chain.encode()) if chain.strip() else None
        key: Any = load_pem_private_key(key_pem.encode(), None)  # PKI issues RSA, EC or Ed25519 keys
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        return p12.serialize_key_and_certificates(
            None,
            key,
            cert,
            cas,
            BestAvailableEncryption(secret),
        )
    except (ValueError, TypeError):
        raise TemplateRefused("pkcs12: the certificate or the private key could not be read") from None
