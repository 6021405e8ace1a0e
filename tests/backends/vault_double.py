"""A small stdlib Vault double for faults a real OpenBao cannot produce: 500, 502, a hang.

It answers like Vault (bare `application/json`, `{"errors": [...]}` bodies,
`X-Vault-Token` checked) for the few endpoints the provider uses: the mount
preflight, a KV v2 read and token lookup. `faults[path] = (status, body)` forces
an answer for one API path; `hang.add(path)` makes that path never answer
(until `stop()`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.backends.local_http import LocalServer, QuietHandler

TOKEN = "double-token"  # noqa: S105 - a test double's token


class VaultDouble(LocalServer):
    def __init__(self) -> None:
        self.kv2: dict[str, dict[str, Any]] = {}  # "secret/<p>" -> data
        self.faults: dict[str, tuple[int, Any]] = {}  # "secret/data/x" -> (status, body)
        self.hang: set[str] = set()
        self.seen: list[str] = []
        # Concurrency, counted at the backend: each KV read is held `delay` seconds.
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        # (monotonic time, status, requests in flight) of every KV read, in arrival order
        self.reads: list[tuple[float, int, int]] = []
        # The next `throttle` KV reads are answered 429 with `Retry-After: retry_after`.
        self.throttle = 0
        self.retry_after: str | None = None
        self.lock = threading.Lock()
        self.connections = 0  # TCP connections accepted (each costs a handshake)
        super().__init__(_handler_for(self))


def start_vault_double() -> VaultDouble:
    return VaultDouble()


def _handler_for(double: VaultDouble) -> type[QuietHandler]:
    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status: int, body: Any) -> None:
            # A str body is a proxy's error page (text/html); anything else is Vault's JSON.
            html = isinstance(body, str)
            data = b"" if body is None else body.encode() if html else json.dumps(body).encode()
            self.send_response(status)
            if data:
                # Bare application/json, as Vault sends it (hvac reads `errors` only then).
                self.send_header("Content-Type", "text/html" if html else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def setup(self) -> None:
            super().setup()
            with double.lock:
                double.connections += 1

        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = urlsplit(self.path).path.removeprefix("/v1/")
            double.seen.append(path)
            if path in double.hang:
                self.server.stopping.wait(30)
                return
            if path in double.faults:
                status, body = double.faults[path]
                return self.reply(status, body)
            if self.headers.get("X-Vault-Token") != TOKEN and not path.startswith("sys/health"):
                return self.reply(403, {"errors": ["permission denied"]})
            if path.startswith("sys/internal/ui/mounts/secret/"):
                return self.reply(
                    200,
                    {"data": {"path": "secret/", "type": "kv", "options": {"version": "2"}}},
                )
            if path.startswith("secret/data/"):
                return self.kv_read(path)
            if path == "auth/token/lookup-self":
                return self.reply(200, {"data": {"ttl": 3600, "renewable": False, "policies": ["root"]}})
            return self.reply(404, {"errors": []})

        def kv_read(self, path: str) -> None:
            with double.lock:
                double.in_flight += 1
                double.max_in_flight = max(double.max_in_flight, double.in_flight)
                throttled = double.throttle > 0
                double.throttle -= throttled
                double.reads.append((time.monotonic(), 429 if throttled else 200, double.in_flight))
            try:
                if double.delay:
                    time.sleep(double.delay)
                if throttled:
                    self.send_response(429)
                    if double.retry_after is not None:
                        self.send_header("Retry-After", double.retry_after)
                    body = json.dumps({"errors": ["request path 'secret/': rate limit quota exceeded"]})
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body.encode())
                    return None
                return self.kv2_answer(path)
            finally:
                with double.lock:
                    double.in_flight -= 1

        def kv2_answer(self, path: str) -> None:
            if path.startswith("secret/data/"):
                key = "secret/" + path.removeprefix("secret/data/")
                if key not in double.kv2:
                    return self.reply(404, {"errors": []})
                meta = {
                    "version": 1,
                    "created_time": "2024-01-01T00:00:00Z",
                    "deletion_time": "",
                    "destroyed": False,
                }
                return self.reply(200, {"data": {"data": double.kv2[key], "metadata": meta}, "lease_id": ""})
            return self.reply(404, {"errors": []})

        do_GET = do_POST = do_PUT = handle_any

    return Handler


@pytest.fixture
def vault_double() -> Iterator[VaultDouble]:
    with start_vault_double() as double:
        yield double
