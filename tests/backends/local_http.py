"""A stdlib HTTP(S) server on 127.0.0.1 in a daemon thread, for the tests' small fakes and doubles.

`serve(Handler)` (or a `LocalServer` subclass that adds its own state) binds a
free loopback port and serves until `stop()` or the end of a `with` block.
Handlers subclass `QuietHandler`: no access log on stderr, and
`self.server.stopping` is set when the server stops, so a handler that hangs or
drips on purpose can wait on it and return.
"""

from __future__ import annotations

import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


def free_port() -> int:
    """A loopback port nothing listens on (for now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler left hanging does not keep the test process alive
    # Clients open dozens of connections at once; the stdlib's backlog of 5 would drop
    # SYNs and add a 1 s retransmit to some of them.
    request_queue_size = 256

    def __init__(self, handler_class: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler_class)
        self.stopping = threading.Event()


class QuietHandler(BaseHTTPRequestHandler):
    server: LocalHTTPServer
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall on reused connections

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalServer:
    """A running server: `.url`, `.port`, `.stop()`; a context manager that stops on exit."""

    def __init__(
        self, handler_class: type[BaseHTTPRequestHandler], *, tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.server = LocalHTTPServer(handler_class)
        if tls_context is not None:
            # The handshake happens in the handler thread, so a client that never speaks TLS stalls nobody.
            self.server.socket = tls_context.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "https" if tls_context is not None else "http"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(
    handler_class: type[BaseHTTPRequestHandler], *, tls_context: ssl.SSLContext | None = None
) -> LocalServer:
    """Serve `handler_class` on a free 127.0.0.1 port (HTTPS with `tls_context`) until stopped."""
    return LocalServer(handler_class, tls_context=tls_context)
