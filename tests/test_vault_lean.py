"""lean.py's transport over real sockets: what is sent once, what may be sent again, and whether
a failure could have reached the server (a write's 'uncertain' rests on that)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trustme

from initfetch.providers.vault.http import Connection, TLSFailed, TransportError
from initfetch.providers.vault.lean import DirectTransport, VaultAPI
from tests.backends.local_http import QuietHandler, free_port, serve


def api_for(url: str, verify: bool | str = True) -> VaultAPI:
    conn = Connection.from_options({"address": url}, {})
    local = threading.local()
    local.timeout = lambda: 5.0
    api = VaultAPI(conn, DirectTransport(conn, verify, pool_size=4), local)
    api.token = "t"
    return api


class Counting(QuietHandler):
    """Answers every request with {}; counts requests by method and connections accepted."""

    protocol_version = "HTTP/1.1"
    seen: dict[str, int]
    connections: list[int]  # one entry per connection accepted (a handler serves one)

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen[self.command] = self.seen.get(self.command, 0) + 1
        body = b'{"data": {}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def setup(self) -> None:
        super().setup()
        self.connections.append(1)  # not id(socket): a closed one's id is reused


@contextmanager
def counting() -> Iterator[tuple[Any, type[Counting]]]:
    handler = type("Handler", (Counting,), {"seen": {}, "connections": []})
    with serve(handler) as server:
        yield server, handler


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts, reads the request, and closes without a word: the request did reach it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def run() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_write_to_a_port_nobody_listens_on_was_not_sent() -> None:
    api = api_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransportError) as e:
        api.write("/v1/pki/issue/web", {"common_name": "a"})
    assert e.value.sent is False


def test_a_write_the_server_read_and_never_answered_may_have_happened() -> None:
    with silent_server() as url:
        api = api_for(url)
        with pytest.raises(TransportError) as e:
            api.write("/v1/pki/issue/web", {"common_name": "a"})
    assert e.value.sent is True


def test_a_write_to_a_server_whose_certificate_is_not_trusted_was_not_sent() -> None:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    handler = type("Handler", (Counting,), {"seen": {}, "connections": []})
    with serve(handler, tls_context=ctx) as server:
        api = api_for(server.url)  # certifi's roots: trustme's CA is not among them
        with pytest.raises(TLSFailed) as e:
            api.write("/v1/pki/issue/web", {"common_name": "a"})
    assert e.value.sent is False and handler.seen == {}


def test_a_write_goes_on_a_connection_of_its_own_and_reads_reuse_theirs() -> None:
    with counting() as (server, handler):
        api = api_for(server.url)
        for _ in range(3):
            api.get("/v1/secret/data/a")
        api.write("/v1/pki/issue/web", {"common_name": "a"})
        api.get("/v1/secret/data/a")
    assert handler.seen == {"GET": 4, "POST": 1}
    # Reads share one kept-alive connection; the write had its own (then kept for reads).
    assert len(handler.connections) == 2


def test_a_kept_connection_the_server_closed_is_not_used_again() -> None:
    """The server closes each connection after its answer, without saying so (as an idle
    timeout would): the next read sees the closed connection before sending and opens a new one."""

    class Closing(Counting):
        def _answer(self) -> None:
            super()._answer()
            self.close_connection = True

        do_GET = _answer

    handler = type("Handler", (Closing,), {"seen": {}, "connections": []})
    with serve(handler) as server:
        api = api_for(server.url)
        for _ in range(3):
            assert api.get("/v1/secret/data/a") == {"data": {}}
    assert handler.seen == {"GET": 3} and len(handler.connections) == 3
