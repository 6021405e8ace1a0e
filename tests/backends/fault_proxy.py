"""A fault-injecting HTTP(S) proxy in front of a real backend (OpenBao, moto, the Key Vault double).

The client (hvac, boto3, the Azure SDK, inside a real `initfetch` process)
talks HTTP(S) to the proxy; the proxy forwards each request with http.client
to the real backend and relays the real answer, unless the request's fault
plan says otherwise:

- `refuse`: nothing listens for the first `refuse_for` seconds (the socket is
  bound but not listening, so connects get ECONNREFUSED: a backend starting late);
- `reset`: the connection is closed with an RST after the request is read;
- `429_retry_after` / `429`: a throttling answer with and without `Retry-After`, and
  often in a burst (the next `burst` requests are throttled as well);
- `500`, `502`, `503`: server errors with a body shaped like the backend's own
  (`flavour`), or (a share `html_share` of them) an HTML page, as a load balancer answers;
- `slow`: the real answer, held back past the client's per-request timeout;
- `truncated`: the real answer's headers with its full Content-Length, then
  only part of the body, then the connection closes.

Faults are drawn per request from a seeded `random.Random`, so a run can be
replayed from its seed. `permanent` answers chosen requests (by a predicate)
with a fixed answer every time (a 403 or 404 that retries cannot fix).

For HTTPS backends the proxy terminates TLS with its own trustme CA (`ca_file`)
and re-originates TLS to the backend, so the SDK path stays real HTTPS. The
Key Vault double's challenge names `https://0.0.1:PORT`, a suffix of the
host:port the client talks to: `rewrites` maps the backend's host:port forms to
the proxy's in answers, and back in requests, so the SDK's challenge check
stays on.

    with fault_proxy(upstream_url, FaultPlan(rate=0.3, seed=7)) as proxy:
        ...  # point the client at proxy.url
        proxy.counts  # Counter: requests, forwarded, and one entry per fault kind injected
"""

from __future__ import annotations

import atexit
import http.client
import json
import random
import select
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

TRANSIENT_KINDS = ("reset", "429_retry_after", "429", "500", "502", "503", "slow", "truncated")
# Relative weights of the transient kinds when a request draws a fault.
DEFAULT_WEIGHTS: dict[str, float] = {
    "reset": 1.0,
    "429_retry_after": 1.0,
    "429": 1.0,
    "500": 1.0,
    "502": 1.0,
    "503": 1.0,
    "slow": 0.5,
    "truncated": 1.0,
}
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
    "upgrade",
}

# What a backend's own error bodies look like (status -> body), by flavour.
_FLAVOURS: dict[str, Callable[[int], tuple[str, bytes]]] = {
    "vault": lambda s: ("application/json", json.dumps({"errors": [f"injected fault {s}"]}).encode()),
    "aws": lambda s: (
        "application/x-amz-json-1.1",
        json.dumps(
            {
                "__type": "ThrottlingException" if s == 429 else "InternalServiceError",
                "message": "Rate exceeded" if s == 429 else "injected fault",
            }
        ).encode(),
    ),
    "azure": lambda s: (
        "application/json; charset=utf-8",
        json.dumps(
            {"error": {"code": "Throttled" if s == 429 else "ServiceUnavailable", "message": "injected"}}
        ).encode(),
    ),
    # Azure's managed-identity endpoints (App Service shape).
    "msi": lambda s: (
        "application/json",
        json.dumps({"statusCode": s, "message": "The service is unavailable."}).encode(),
    ),
    # What a load balancer in front of any backend answers.
    "html": lambda s: ("text/html", f"<html><body><h1>{s}</h1>injected</body></html>".encode()),
}


@dataclass
class Answer:
    """A fixed answer (for permanent faults)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FaultPlan:
    """Which requests fail, and how.

    rate: the probability that a request draws a transient fault.
    refuse_for: seconds from the proxy's start during which connections are refused.
    max_slow: at most this many `slow` faults (each costs a per-request timeout).
    slow_hold: how long a `slow` answer is held back (must exceed the client's timeout).
    permanent: (method, path, headers, body) -> an Answer to give instead, every time; or None.
    eligible / script: restrict faults to some requests; give fixed faults to the first of them.
    """

    rate: float = 0.0
    seed: int = 0
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    refuse_for: float = 0.0
    max_slow: int = 1
    slow_hold: float = 11.0
    retry_after: str = "1"
    flavour: str = "vault"
    html_share: float = 0.25  # of the 4xx/5xx faults, the share answered with an HTML page instead
    permanent: Callable[[str, str, Any, bytes], Answer | None] | None = None
    # Only requests for which this is true (method, path, headers) may draw a fault.
    eligible: Callable[[str, str, Any], bool] | None = None
    # Faults given, in order, to the first eligible requests, before any random draw.
    script: list[str] = field(default_factory=list)
    # A drawn 429 is followed by this many more (inclusive range, chosen at random): a burst.
    burst: tuple[int, int] = (0, 2)


_CA_LOCK = threading.Lock()
_CA: dict[str, Any] = {}


def proxy_ca() -> tuple[Any, str]:
    """One trustme CA per test process, and its PEM file (for the client's ca_file)."""
    import trustme

    with _CA_LOCK:
        if not _CA:
            ca = trustme.CA()
            work = tempfile.mkdtemp(prefix="fault-proxy-ca-")
            atexit.register(shutil.rmtree, work, True)
            path = Path(work) / "ca.pem"
            ca.cert_pem.write_to_path(str(path))
            _CA["ca"], _CA["file"] = ca, str(path)
        return _CA["ca"], _CA["file"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True
    proxy: FaultProxy


class FaultProxy:
    """A running proxy: `.url`, `.port`, `.counts`, `.ca_file` (TLS only), `.stop()`."""

    def __init__(
        self,
        upstream: str,
        plan: FaultPlan | None = None,
        *,
        tls: bool | None = None,
        upstream_ca: str | None = None,
    ) -> None:
        self.plan = plan or FaultPlan()
        u = urlsplit(upstream)
        self.upstream_scheme = u.scheme
        self.upstream_host = u.hostname or "127.0.0.1"
        self.upstream_port = u.port or (443 if u.scheme == "https" else 80)
        self.tls = (u.scheme == "https") if tls is None else tls
        self.upstream_context: ssl.SSLContext | None = None
        if u.scheme == "https":
            self.upstream_context = ssl.create_default_context(cafile=upstream_ca)
        self.rng = random.Random(self.plan.seed)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.paths: Counter[str] = Counter()  # requests by path (without the query)
        self.slow_left = self.plan.max_slow
        self.script = list(self.plan.script)
        self.stopping = threading.Event()
        self._serving = False
        # (backend form, proxy form) pairs: proxy form -> backend form in requests, back in answers.
        self.rewrites: list[tuple[str, str]] = []
        self.ca_file: str | None = None

        self.server = _Server(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        self.server.proxy = self
        self.server.server_bind()  # bound, not listening: connects are refused until activated
        if self.tls:
            ca, self.ca_file = proxy_ca()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
            self.server.socket = context.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        if self.plan.refuse_for > 0:
            self.counts["refuse"] += 1  # one late start (its connection attempts are not seen here)
            if self.stopping.wait(self.plan.refuse_for):
                return
        with self.lock:
            if self.stopping.is_set():
                return
            self.server.server_activate()
            self._serving = True
        self.server.serve_forever(0.05)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def map_port(self, backend_port: int, proxy_port: int | None = None, prefix: str = "0.0.1:") -> None:
        """Rewrite `<prefix>BACKEND_PORT` (and its URL-encoded form) to the proxy's port and back."""
        theirs, ours = f"{prefix}{backend_port}", f"{prefix}{proxy_port or self.port}"
        self.rewrites += [(theirs, ours), (quote(theirs, safe=""), quote(ours, safe=""))]

    def to_backend(self, data: bytes) -> bytes:
        for theirs, ours in self.rewrites:
            data = data.replace(ours.encode(), theirs.encode())
        return data

    def to_client(self, data: bytes) -> bytes:
        for theirs, ours in self.rewrites:
            data = data.replace(theirs.encode(), ours.encode())
        return data

    def draw(self, method: str, path: str, headers: Any, body: bytes) -> str | Answer | None:
        """The fault for one request: a kind, a permanent Answer, or None (forward as is)."""
        with self.lock:
            self.counts["requests"] += 1
            self.paths[path.split("?", 1)[0]] += 1
            if self.plan.permanent is not None:
                answer = self.plan.permanent(method, path, headers, body)
                if answer is not None:
                    self.counts["permanent"] += 1
                    return answer
            if self.plan.eligible is not None and not self.plan.eligible(method, path, headers):
                self.counts["forwarded"] += 1
                return None
            if self.script:
                kind = self.script.pop(0)
                self.counts[kind] += 1
                return kind
            if self.rng.random() >= self.plan.rate:
                self.counts["forwarded"] += 1
                return None
            weights = {k: w for k, w in self.plan.weights.items() if w > 0}
            if self.slow_left <= 0:
                weights.pop("slow", None)
            kinds = sorted(weights)
            kind = self.rng.choices(kinds, [weights[k] for k in kinds])[0]
            if kind == "slow":
                self.slow_left -= 1
            if kind.startswith("429"):
                self.script += [kind] * self.rng.randint(*self.plan.burst)
            self.counts[kind] += 1
            if kind[:1] in "45" and self.rng.random() < self.plan.html_share:
                return kind + ":html"  # what a load balancer in front of the backend answers
            return kind

    # --- the whole backend, at once (watch-mode tests take it down and up while a watcher runs) ---

    def down(self) -> None:
        """Every request from now on is reset: the backend is gone."""
        self.set_plan(FaultPlan(rate=1.0, weights={"reset": 1.0}, flavour=self.plan.flavour))

    def hang(self, seconds: float = 3600.0) -> None:
        """Every request from now on is held `seconds` before its answer: the backend hangs."""
        self.set_plan(
            FaultPlan(
                rate=1.0, weights={"slow": 1.0}, max_slow=10**9, slow_hold=seconds, flavour=self.plan.flavour
            )
        )

    def up(self) -> None:
        """Every request is forwarded again."""
        self.set_plan(FaultPlan(flavour=self.plan.flavour))

    def set_plan(self, plan: FaultPlan) -> None:
        with self.lock:
            self.plan = plan
            self.slow_left = plan.max_slow
            self.script = list(plan.script)

    def injected(self) -> dict[str, int]:
        """Faults injected so far, by kind (refuse counts late starts)."""
        return {k: v for k, v in self.counts.items() if k not in ("requests", "forwarded") and v}

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            serving = self._serving
        if serving:
            self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, OSError):
            pass  # a client that hung up (or gave up on a slow answer)
        finally:
            if self._upstream is not None:
                self._upstream.close()

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _any(self) -> None:
        proxy = self.server.proxy
        body = self._body()
        fault = proxy.draw(self.command, self.path, self.headers, body)
        if isinstance(fault, Answer):
            return self._send(fault.status, fault.headers, fault.body)
        if fault == "reset":
            return self._reset()
        if fault is not None and fault[:1] in "45":
            kind, _, html = fault.partition(":")
            status = int(kind[:3])
            ctype, data = _FLAVOURS[html or proxy.plan.flavour](status)
            headers = {"Content-Type": ctype}
            if kind == "429_retry_after":
                headers["Retry-After"] = proxy.plan.retry_after
            return self._send(status, headers, data)
        status, headers, data = self._forward(body)
        if fault == "slow":
            self._hold(proxy.plan.slow_hold)
            return self._send(status, headers, data)
        if fault == "truncated":
            return self._send(status, headers, data, truncate=True)
        return self._send(status, headers, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_LIST = _any

    def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        proxy = self.server.proxy
        path = proxy.to_backend(self.path.encode("latin-1")).decode("latin-1")
        headers = {
            k: proxy.to_backend(v.encode("latin-1")).decode("latin-1")
            for k, v in self.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "host"
        }
        headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
        body = proxy.to_backend(body)
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        for attempt in (0, 1):  # a kept-alive upstream connection may have been closed meanwhile
            conn = self._connection(fresh=attempt > 0)
            try:
                conn.request(self.command, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._upstream = None
                if attempt:
                    raise
        out = {
            k: proxy.to_client(v.encode("latin-1")).decode("latin-1")
            for k, v in resp.getheaders()
            if k.lower() not in HOP_BY_HOP
        }
        if resp.will_close:
            conn.close()
            self._upstream = None
        return resp.status, out, proxy.to_client(data)

    def _connection(self, fresh: bool) -> http.client.HTTPConnection:
        proxy = self.server.proxy
        if self._upstream is None or fresh:
            if proxy.upstream_context is not None:
                self._upstream = http.client.HTTPSConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=30, context=proxy.upstream_context
                )
            else:
                self._upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=30
                )
        return self._upstream

    def _send(self, status: int, headers: dict[str, str], data: bytes, truncate: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data) if data or not truncate else 16))
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if truncate:
            # Part of the body, then a clean close (FIN): the client sees fewer bytes than announced.
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data)

    def _hold(self, seconds: float) -> None:
        """Wait `seconds`, or until the client hangs up (it timed out) or the proxy stops."""
        end = time.monotonic() + seconds
        sock = self.connection
        while not self.server.proxy.stopping.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            readable, _, _ = select.select([sock], [], [], min(0.1, left))
            if readable:  # the client hung up (it timed out) or sent more: stop holding
                return

    def _reset(self) -> None:
        """Close the client connection with an RST instead of a FIN."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except (OSError, ValueError):
            try:
                self.connection.close()
            except OSError:
                pass


@contextmanager
def fault_proxy(
    upstream: str,
    plan: FaultPlan | None = None,
    *,
    tls: bool | None = None,
    upstream_ca: str | None = None,
) -> Iterator[FaultProxy]:
    """A FaultProxy in front of `upstream` for the duration of the block."""
    proxy = FaultProxy(upstream, plan, tls=tls, upstream_ca=upstream_ca)
    try:
        yield proxy
    finally:
        proxy.stop()
