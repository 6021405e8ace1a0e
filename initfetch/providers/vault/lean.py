"""Vault's HTTP API for reads, lease and token calls, on http.client: no requests, no hvac.

Every call after the login goes through `VaultAPI`: the mount lookup, the reads, lease
renew/revoke and the token's own calls. A run with a ready token (VAULT_TOKEN, a token
file) so never imports hvac or requests (20 ms of start-up, and requests' and urllib3's
machinery was most of the CPU of a read); hvac logs in for the other methods (auth.py) and
the token it gets is used here. Through a proxy (HTTP(S)_PROXY), requests sends the calls
(`SessionTransport`), so proxy rules stay requests' own.

Answers are read the way hvac's JSON adapter reads them: a 200 with a JSON body is the
decoded body, any other success an `Answer`; an error status raises `VaultAnswer`, which
carries what hvac's VaultError carries (`errors`, `json`), and a failure to talk at all
raises a `TransportError`. http.mapped_errors turns both into SecretErrors.
"""

from __future__ import annotations

import http.client
import json as _json
import os
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

from initfetch.providers.vault.http import (
    Connection,
    TimedOut,
    TLSFailed,
    TransportError,
    Unreachable,
    VaultAnswer,
)

REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")
_SAFE = "/-._~!$&'()*+,;=:@"  # what stays as is in a path: the rest is percent-encoded


@dataclass
class Answer:
    """A successful answer that is not a JSON 200 (a 204, a PEM body): hvac returns the response."""

    status_code: int
    text: str
    headers: Mapping[str, str]


def proxied(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a proxy variable is set: requests then sends the calls (its rules, NO_PROXY too)."""
    return any(environ.get(v) or environ.get(v.upper()) for v in PROXY_VARIABLES)


def tls_context(verify: bool | str, cert: tuple[str, str] | str | None) -> ssl.SSLContext:
    """What requests would verify with: a CA file or directory, else certifi's bundle (requests'
    default), else the system's; `verify=False` checks nothing."""
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        if os.path.isdir(verify):
            ctx = ssl.create_default_context(capath=verify)
        else:
            ctx = ssl.create_default_context(cafile=verify)
    else:
        try:
            import certifi

            ctx = ssl.create_default_context(cafile=certifi.where())
        except ImportError:
            ctx = ssl.create_default_context()
    if isinstance(cert, tuple):
        ctx.load_cert_chain(cert[0], cert[1])
    elif cert:
        ctx.load_cert_chain(cert)
    return ctx


class _HTTPS(http.client.HTTPSConnection):
    """Sends SNI and checks the certificate for `server_name` when given, not the address's host."""

    def __init__(self, host: str, port: int | None, ctx: ssl.SSLContext, server_name: str | None) -> None:
        super().__init__(host, port, context=ctx)
        self._ctx = ctx
        self._server_name = server_name

    def connect(self) -> None:
        if not self._server_name:
            super().connect()
            return
        http.client.HTTPConnection.connect(self)
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._server_name)


class Pool:
    """Keep-alive connections to one origin, most recently used first, at most `size` kept."""

    def __init__(self, url: str, ctx: ssl.SSLContext | None, server_name: str | None, size: int) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port
        self.ctx = ctx
        self.server_name = server_name
        self.size = size
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _new(self) -> http.client.HTTPConnection:
        if self.https:
            assert self.ctx is not None
            return _HTTPS(self.host, self.port, self.ctx, self.server_name)
        return http.client.HTTPConnection(self.host, self.port)

    def _get(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if conn.sock is not None and not _dropped(conn.sock):
                    return conn, True
                conn.close()
        return self._new(), False

    def _put(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def send(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        once: bool = False,
    ) -> tuple[int, Any, bytes]:
        """One request and its whole answer. A kept connection the server closed meanwhile is
        replaced once: the request never reached it. With `once` (a write) the request goes on
        a new connection, made first, and is never sent twice: a failure to connect is raised as
        `NotConnected`, anything later means the request may have reached the server."""
        if once:
            conn = self._new()
            try:
                conn.timeout = timeout
                conn.connect()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise NotConnected(e) from e
            return self._exchange(conn, method, target, headers, body, timeout)
        conn, reused = self._get()
        try:
            return self._exchange(conn, method, target, headers, body, timeout)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if not reused:
                raise
        return self._exchange(self._new(), method, target, headers, body, timeout)

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> tuple[int, Any, bytes]:
        try:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            conn.request(method, target, body=body, headers=dict(headers))
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._put(conn)
        return response.status, response.headers, data

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class NotConnected(Exception):
    """No connection or TLS session was made: the request did not leave (`cause` says why)."""

    def __init__(self, cause: OSError | http.client.HTTPException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _dropped(sock: socket.socket) -> bool:
    """A kept connection with something to read before we asked: closed by the server (EOF)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class DirectTransport:
    """Requests on our own connection pools (one per origin: a standby's redirect names another)."""

    def __init__(self, conn: Connection, verify: bool | str, pool_size: int) -> None:
        self.ctx = tls_context(verify, conn.cert) if conn.address.startswith("https://") else None
        self.server_name = conn.tls_server_name
        self.pool_size = pool_size
        self._pools: dict[str, Pool] = {}
        self._lock = threading.Lock()

    def _pool(self, origin: str) -> Pool:
        pool = self._pools.get(origin)
        if pool is None:
            with self._lock:
                pool = self._pools.get(origin)
                if pool is None:
                    if origin.startswith("https://") and self.ctx is None:
                        self.ctx = tls_context(True, None)
                    pool = self._pools[origin] = Pool(origin, self.ctx, self.server_name, self.pool_size)
        return pool

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        once: bool = False,
    ) -> tuple[int, Any, bytes]:
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        pool = self._pool(f"{parts.scheme}://{parts.netloc}")
        try:
            return pool.send(method, target, headers, body, timeout, once)
        except NotConnected as e:
            raise _transport_error(e.cause, sent=False) from None
        except (OSError, http.client.HTTPException) as e:
            raise _transport_error(e, sent=True) from None

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


def _transport_error(e: OSError | http.client.HTTPException, sent: bool) -> TransportError:
    """`e` as a TransportError: no answer, and whether the request may have been sent."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return TLSFailed(e.verify_message or str(e), sent)
    if isinstance(e, ssl.SSLError):
        return TLSFailed(e.reason or str(e), sent)
    if isinstance(e, TimeoutError):
        return TimedOut(str(e), sent)
    return Unreachable(type(e).__name__, sent)  # refused, reset, DNS, not HTTP


class VaultAPI:
    """The calls initfetch makes with a token, hvac's adapter surface (`get`, `post`, `put`,
    `delete`) included. `token` is set by the login; `local` is the client's thread-local
    (each thread's deadline in, the last status and Retry-After out, for http.py)."""

    def __init__(self, conn: Connection, transport: Any, local: threading.local) -> None:
        self.base = conn.address.rstrip("/") + "/"
        self.namespace = conn.namespace
        self.transport = transport
        self.local = local
        self.token: str | None = None

    @property
    def adapter(self) -> VaultAPI:
        """Code written for hvac (`client.adapter.get(...)`) reads the same here."""
        return self

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", url, params=params)

    def post(self, url: str, json: Any = None) -> Any:
        return self.request("POST", url, json=json)

    def put(self, url: str, json: Any = None) -> Any:
        return self.request("PUT", url, json=json)

    def delete(self, url: str) -> Any:
        return self.request("DELETE", url)

    def write(self, url: str, json: Any) -> Any:
        """A POST that must not happen twice (it issues something): sent once, on a connection
        made for it; a TransportError's `sent` says whether it may have reached Vault."""
        return self.request("POST", url, json=json, once=True)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        once: bool = False,
    ) -> Any:
        """A JSON 200 as its decoded body, another success as an `Answer`; raises VaultAnswer."""
        while "//" in url:  # as hvac and the Vault CLI do
            url = url.replace("//", "/")
        full = urljoin(self.base, quote(url.lstrip("/"), safe=_SAFE + "%"))
        if params:
            full += "?" + urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        headers = {"X-Vault-Request": "true"}
        if self.token:
            headers["X-Vault-Token"] = self.token
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        body = None
        if json is not None:
            body = _json.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        status, answer_headers, data = self._send(method, full, headers, body, once)
        return _decode(status, answer_headers, data)

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, once: bool
    ) -> tuple[int, Any, bytes]:
        timeout_of = getattr(self.local, "timeout", None)
        self.local.status = None
        self.local.retry_after = None
        for _ in range(MAX_REDIRECTS + 1):
            timeout = timeout_of() if timeout_of is not None else 10.0
            status, answer_headers, data = self.transport.request(method, url, headers, body, timeout, once)
            location = answer_headers.get("Location")
            if status not in REDIRECTS or not location:
                break
            url = urljoin(url, location)  # a standby node sends us to the active one
        self.local.status = status
        self.local.retry_after = answer_headers.get("Retry-After")
        return status, answer_headers, data


def _decode(status: int, headers: Mapping[str, str], data: bytes) -> Any:
    if status >= 400:
        body: Any = None
        errors = None
        if headers.get("Content-Type") == "application/json":
            try:
                body = _json.loads(data)
            except ValueError:
                body = None
            errors = body.get("errors") if isinstance(body, dict) else None
        raise VaultAnswer(status, errors, body, headers.get("Retry-After"))
    if status == 200 and data:
        try:
            return _json.loads(data)
        except ValueError:
            pass
    return Answer(status, data.decode("utf-8", "replace"), headers)


class SessionTransport:
    """The calls through a requests session: used when a proxy is configured."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        once: bool = False,  # requests never sends a request twice (no retries configured)
    ) -> tuple[int, Any, bytes]:
        response = self.session.request(
            method, url, headers=dict(headers), data=body, timeout=timeout, allow_redirects=False
        )
        return response.status_code, response.headers, response.content

    def close(self) -> None:
        self.session.close()
