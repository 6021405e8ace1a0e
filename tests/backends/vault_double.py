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
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

TOKEN = "double-token"  # noqa: S105 - a test double's token


@dataclass
class VaultDouble:
    server: ThreadingHTTPServer
    kv2: dict[str, dict[str, Any]] = field(default_factory=dict)  # "secret/<p>" -> data
    faults: dict[str, tuple[int, Any]] = field(default_factory=dict)  # "secret/data/x" -> (status, body)
    hang: set[str] = field(default_factory=set)
    seen: list[str] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def start_vault_double() -> VaultDouble:
    holder: list[VaultDouble] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

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

        def handle_any(self) -> None:
            double = holder[0]
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = urlsplit(self.path).path.removeprefix("/v1/")
            double.seen.append(path)
            if path in double.hang:
                double.released.wait(30)
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
            if path == "auth/token/lookup-self":
                return self.reply(200, {"data": {"ttl": 3600, "renewable": False, "policies": ["root"]}})
            return self.reply(404, {"errors": []})

        do_GET = do_POST = do_PUT = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    double = VaultDouble(server)
    holder.append(double)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return double


@pytest.fixture
def vault_double() -> Iterator[VaultDouble]:
    double = start_vault_double()
    yield double
    double.stop()
