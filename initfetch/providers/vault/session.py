"""The requests session under hvac: TLS settings resolved once, a per-call timeout from
the caller's deadline, and requests' machinery bypassed where it only costs CPU
(transport.py). Imported only when hvac logs in (a method other than a ready token)
or a proxy is set: it imports requests. Every other call goes through lean.py."""

from __future__ import annotations

import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from initfetch.providers.vault.http import Connection, resolved_verify
from initfetch.providers.vault.transport import DirectTransport

# The keyword arguments hvac passes to Session.request that the direct transport honours
# (verify, cert and proxies are the session's own, fixed when it is made).
_DIRECT_KWARGS = frozenset(
    {"headers", "params", "json", "data", "timeout", "allow_redirects", "verify", "cert", "proxies"}
)


class ServerNameAdapter(HTTPAdapter):
    """Sends SNI and checks the certificate for `server_name`, not the address's host."""

    def __init__(self, server_name: str | None, pool_size: int) -> None:
        self._server_name = server_name
        super().__init__(max_retries=0, pool_connections=4, pool_maxsize=pool_size)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._server_name:
            kwargs["server_hostname"] = self._server_name
            kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)


class DeadlineSession(requests.Session):
    """Each request's timeout is asked of the calling thread's deadline (call_timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self.direct: DirectTransport | None = None

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        timeout = getattr(self.local, "timeout", None)
        if timeout is not None:
            kwargs["timeout"] = timeout()
        self.local.status = None
        self.local.retry_after = None
        response = None
        if self.direct is not None and not args and set(kwargs) <= _DIRECT_KWARGS:
            headers = {**self.headers, **(kwargs.get("headers") or {})}
            response = self.direct.send(
                method,
                str(url),
                headers,
                params=kwargs.get("params"),
                json=kwargs.get("json"),
                data=kwargs.get("data"),
                timeout=kwargs.get("timeout"),
            )
        if response is None:
            response = super().request(method, url, *args, **kwargs)
        self.local.status = response.status_code
        self.local.retry_after = response.headers.get("Retry-After")
        return response


def make_session(conn: Connection, pool_size: int = 10) -> DeadlineSession:
    """A session whose per-call timeout comes from the caller's deadline.

    The connection pool holds `pool_size` connections (the instance's concurrency),
    so no thread's connection is discarded and re-handshaken.
    """
    session = DeadlineSession()
    session.mount("https://", ServerNameAdapter(conn.tls_server_name, pool_size))
    session.mount("http://", ServerNameAdapter(None, pool_size))
    # What requests would look up in the environment on every call (proxies, a CA bundle
    # variable, ~/.netrc), looked up once: it is a fifth of the CPU of a Vault read.
    session.trust_env = False
    session.proxies = requests.utils.get_environ_proxies(conn.address)
    session.verify = resolved_verify(conn)
    session.cert = conn.cert
    if not session.proxies:  # through a proxy, requests does it all
        session.direct = DirectTransport(session.verify, conn.cert, conn.tls_server_name, pool_size)
    return session
