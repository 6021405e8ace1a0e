"""Write-style references: a secret produced by a write (`write:` in the manifest).

`vault://pki/issue/web` with `write: {common_name: web.internal}` POSTs those
parameters to `pki/issue/web` and takes the answer as the document; so does
`transit/decrypt/KEY` with a ciphertext. A write is sent once:
- failing before the request left (connection refused, connect timeout, TLS
  handshake) it is Unavailable, and the resolver may try again;
- rejected outright (401/403 before any effect, 429, a sealed 503) likewise;
- sent and then unanswered (read timeout, reset, 5xx) it is WriteUncertain:
  it may have happened, and repeating it could issue a second certificate, so it
  fails with one line that says so.
Parameter values are never logged or quoted (only their names).

What the answer becomes: a certificate (pki/issue, pki/sign) carries a lease made
from its notAfter (certs.py), so a watcher issues a new one at about two thirds
of its validity; a transit decryption's plaintext is decoded from base64.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from initfetch.errors import BadReference, NotFound, WriteUncertain
from initfetch.providers.base import Document, FetchContext, Lease
from initfetch.providers.vault import certs
from initfetch.providers.vault.client import VaultClient
from initfetch.providers.vault.http import TransportError, VaultAnswer, not_vault, not_vault_message
from initfetch.providers.vault.reads import Mounts
from initfetch.reference import DocKey, FromFile, Write

UNCERTAIN = "the write may have happened; not repeated"


def write(client: VaultClient, mounts: Mounts, doc: DocKey, ctx: FetchContext) -> Document:
    """POST the reference's parameters to its path, once; the answer as a Document."""
    assert doc.write is not None
    body = parameters(doc.write, ctx.max_size)

    def call(api: Any) -> Document:
        mount = mounts.for_path(api, doc.path)  # a read: safe to repeat before the write
        response = _post(client, api, doc.path, body)
        return _document(response, doc, mount.path if mount else None, mount.type if mount else None)

    # Through `run`: a write Vault rejected (401/403) had no effect, so after a new login
    # it is made once more; nothing else is repeated.
    return client.run(ctx, call)


def parameters(spec: Write, max_size: int) -> dict[str, str]:
    """The JSON body: each parameter's text, `{file: PATH}` ones read now."""
    body: dict[str, str] = {}
    for name, value in spec.params:
        body[name] = _from_file(name, value, max_size) if isinstance(value, FromFile) else value
    return body


def _from_file(name: str, value: FromFile, max_size: int) -> str:
    try:
        with open(value.path, "rb") as f:
            data = f.read(max_size + 1)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else type(e).__name__
        raise NotFound(f"write parameter {name}: cannot read {value.path}: {reason}") from None
    if len(data) > max_size:
        raise NotFound(f"write parameter {name}: {value.path} is larger than limits.secret_size")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise NotFound(f"write parameter {name}: {value.path} is not UTF-8 text") from None


def _post(client: VaultClient, api: Any, path: str, body: dict[str, str]) -> Any:
    # Vault's errors may quote a parameter ("common name x not allowed"): none is shown.
    scrub = [v for v in body.values() if len(v) >= 4 and v not in ("true", "false")]
    with client.errors(f"writing {path}", scrub=sorted(scrub, key=len, reverse=True)), _once(path):
        try:
            return api.write(f"/v1/{path}", json=body)
        except VaultAnswer as e:
            if e.status != 404:
                raise
            if not_vault(e):
                raise BadReference(not_vault_message(client.conn.address, 404)) from None
            raise NotFound(f"no write endpoint at {path} (no secrets engine, role or key there?)") from None


@contextmanager
def _once(path: str) -> Iterator[None]:
    """A failure after the request may have reached Vault -> WriteUncertain (never retried)."""
    try:
        yield
    except VaultAnswer as e:
        # 503 is sealed or standby and 501 not initialized: refused before any effect.
        if e.status >= 500 and e.status not in (501, 503):
            raise WriteUncertain(
                f"Vault answered with a server error to the write to {path}: {UNCERTAIN}"
            ) from e
        raise
    except Exception as e:
        if not_sent(e):
            raise  # mapped to Unavailable: nothing reached Vault, the resolver may try again
        if isinstance(e, TransportError) or _requests_failure(e):
            raise WriteUncertain(
                f"no answer to the write to {path} ({type(e).__name__}): {UNCERTAIN}"
            ) from None
        raise


def not_sent(e: BaseException) -> bool:
    """Whether a failure happened before the request could reach the server: no connection
    (refused, unreachable, connect timeout) or no TLS session. Our transport says so itself;
    behind a proxy the failure is requests'."""
    if isinstance(e, TransportError):
        return not e.sent
    if not _requests_failure(e):
        return False
    import requests
    import urllib3

    if isinstance(e, requests.exceptions.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if not isinstance(e, requests.exceptions.ConnectionError):
        return False
    cause = e.args[0] if e.args else None
    cause = getattr(cause, "reason", None) or cause  # requests wraps it in MaxRetryError
    return isinstance(cause, urllib3.exceptions.NewConnectionError)


def _requests_failure(e: BaseException) -> bool:
    """A requests exception (requests is loaded only when a proxy or a login used it)."""
    requests = sys.modules.get("requests")
    return requests is not None and isinstance(e, requests.exceptions.RequestException)


def _document(response: Any, doc: DocKey, mount: str | None, engine: str | None) -> Document:
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict):
        status = getattr(response, "status_code", 200)
        raise NotFound(f"the write to {doc.path} returned no data (HTTP {status})")
    metadata: dict[str, Any] = {"engine": engine, "mount": mount, "write": True}
    assert doc.write is not None
    lease = _lease(response)
    if certs.is_certificate(data):
        return certs.document(data, lease, doc.write, mount or doc.path.split("/", 1)[0] + "/", metadata)
    if "plaintext" in data:  # transit/decrypt: the plaintext comes base64-encoded
        data = {**data, "plaintext": _decoded(data["plaintext"], doc.path)}
    return Document(value=data, lease=lease, metadata=metadata)


def _lease(response: dict[str, Any]) -> Lease | None:
    if not response.get("lease_id"):
        return None
    return Lease(
        str(response["lease_id"]),
        int(response.get("lease_duration") or 0),
        bool(response.get("renewable")),
    )


def _decoded(value: Any, path: str) -> str | bytes:
    if not isinstance(value, str):
        raise NotFound(f"the write to {path} returned a plaintext that is not text")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise NotFound(f"the write to {path} returned a plaintext that is not base64") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data
