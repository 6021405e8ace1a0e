"""A tiny HTTP/1.1 server for probes and metrics that no client can hold up or fill.

One thread, one selector, non-blocking sockets and fixed limits:

- at most MAX_CONNECTIONS at once; one more evicts the oldest still sending its request,
  so half-open or slow clients cannot keep a probe out;
- a request head of at most MAX_HEAD bytes (431 beyond), no body read, GET and HEAD only
  (405), a fixed set of paths (404 for the rest);
- each connection gets DEADLINE seconds for its request and its response together, then
  it is closed; every response closes the connection (no keep-alive to track);
- `close()` ends the thread within a fraction of a second, whatever the clients do;
- with no connection open the thread sleeps until one comes (or `close()`): an idle sidecar's
  listener costs no wake-ups.

Memory is bounded by MAX_CONNECTIONS x (MAX_HEAD + one response). Handlers run on the
server's thread, so they must be quick (small reads, no backend call).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from initfetch.resolve.pool import main_thread_signals_only

log = logging.getLogger("initfetch.listen")

MAX_CONNECTIONS = 64
MAX_HEAD = 8192  # bytes of request line and headers
DEADLINE = 5.0  # seconds for one connection, request and response

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
REASONS |= {431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[], Response]


@dataclass
class _Conn:
    sock: socket.socket
    deadline: float
    head: bytearray = field(default_factory=bytearray)
    out: memoryview | None = None  # the response, from what is still to send


class Server:
    """Serves `routes` (path -> handler) on `address` (host, port) once `start` is called."""

    def __init__(self, address: tuple[str, int], routes: Mapping[str, Handler]) -> None:
        self.routes = dict(routes)
        self.sock = _bind(address)
        self.address = self.sock.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._conns: dict[int, _Conn] = {}
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._selector.register(self.sock, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, name="initfetch-listen", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 0.5) -> None:
        """Stop serving and close every socket; returns within about `timeout` seconds."""
        self._closing.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is None:
            self._release()
        else:  # the thread releases everything as it ends
            self._thread.join(timeout)

    # --- the loop ---

    def _serve(self) -> None:
        main_thread_signals_only()  # SIGTERM and friends go to the main thread's handlers
        try:
            while not self._closing.is_set():
                for key, events in self._selector.select(self._timeout()):
                    self._event(key.fileobj, events)  # type: ignore[arg-type]
                self._expire(time.monotonic())
        except Exception as e:  # never a traceback, never a dead watcher because of a client
            log.error("the --listen server stopped: %s", type(e).__name__)
        finally:
            self._release()

    def _timeout(self) -> float | None:
        """Until the nearest connection's deadline; None (until an event) when none is open:
        close() wakes the loop through the socketpair."""
        if not self._conns:
            return None
        return max(0.0, min(c.deadline for c in self._conns.values()) - time.monotonic())

    def _event(self, sock: socket.socket, events: int) -> None:
        if sock is self.sock:
            self._accept()
        elif sock is self._wake_r:
            try:
                sock.recv(64)
            except OSError:
                pass
        else:
            conn = self._conns.get(sock.fileno())
            if conn is None:
                return
            if conn.out is None and events & selectors.EVENT_READ:
                self._read(conn)
            elif conn.out is not None and events & selectors.EVENT_WRITE:
                self._send(conn)

    def _accept(self) -> None:
        for _ in range(MAX_CONNECTIONS):  # a burst is taken in one go, but never forever
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors, or a connection reset before accept
                log.debug("accept failed: %s", e.strerror or type(e).__name__)
                return
            if len(self._conns) >= MAX_CONNECTIONS:
                self._evict()
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic() + DEADLINE)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ)

    def _evict(self) -> None:
        """Make room: drop the oldest connection still sending its request (else the oldest)."""
        reading = [c for c in self._conns.values() if c.out is None]
        victim = min(reading or self._conns.values(), key=lambda c: c.deadline)
        self._drop(victim)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(MAX_HEAD + 1 - len(conn.head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # closed (or reset) before a whole request: nothing to answer
            self._drop(conn)
            return
        conn.head += data
        end = conn.head.find(b"\r\n\r\n")
        if end < 0:
            end = conn.head.find(b"\n\n")
        if end >= 0:
            self._respond(conn, self._answer(bytes(conn.head[:end])))
        elif len(conn.head) > MAX_HEAD:
            self._respond(conn, (Response(431, b"request head too large\n"), False))

    def _answer(self, head: bytes) -> tuple[Response, bool]:
        """The response to a request head, and whether it carries a body (not for HEAD)."""
        parts = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return Response(400, b"bad request\n"), True
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return Response(405, b"only GET and HEAD\n"), True
        handler = self.routes.get(target.decode("latin-1"))
        if handler is None:
            return Response(404, b"not found: try /healthz, /readyz or /metrics\n"), method == b"GET"
        try:
            response = handler()
        except Exception as e:  # a handler bug is one line, and a 500, not a dead server
            log.error("--listen: %s failed: %s", target.decode("latin-1"), type(e).__name__)
            response = Response(500, b"internal error\n")
        return response, method == b"GET"

    def _respond(self, conn: _Conn, answer: tuple[Response, bool]) -> None:
        response, with_body = answer
        head = (
            f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Status')}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            + ("Allow: GET, HEAD\r\n" if response.status == 405 else "")
            + "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        conn.out = memoryview(head + response.body if with_body else head)
        conn.head = bytearray()
        self._selector.modify(conn.sock, selectors.EVENT_WRITE)
        self._send(conn)

    def _send(self, conn: _Conn) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._drop(conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _release(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        for sock in (self.sock, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()


def _bind(address: tuple[str, int]) -> socket.socket:
    """A listening socket on `address`; OSError says why not (in use, no such address)."""
    host, port = address
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
