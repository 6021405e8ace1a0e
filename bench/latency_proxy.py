"""An HTTP-aware loopback proxy that adds a fixed delay to every request, and counts.

Backends on 127.0.0.1 answer in microseconds, which hides what matters in
production: every request to Vault, AWS or Azure costs a network round trip.
This proxy sits in front of each backend and holds every request for DELAY
seconds before passing it on, so each request pays one simulated round trip,
for initfetch and the baselines alike. Requests on different connections wait
concurrently, requests on one connection one after the other, as on a network.

It parses HTTP/1.1 message boundaries in both directions (Content-Length and
chunked bodies, HEAD/1xx/204/304, bodies delimited by close), so it delays per
request rather than per TCP segment, and it counts requests, connections and
response statuses (429s) per route. A route with `tls` terminates TLS with the
given certificate and re-encrypts to the backend (the Azure Key Vault double is
HTTPS only), so Azure requests are counted and delayed the same way.

Sockets: TCP_NODELAY on both sides (without it a reused connection pays about
40 ms of Nagle + delayed ACK per request and the numbers lie) and a listen
backlog of 4096 (50 processes opening dozens of connections each at once).

Runs as its own process (so its work does not share a GIL with the backends
running in the bench process):

    python bench/latency_proxy.py --delay-ms 20 --route vault=127.0.0.1:8200 \
        --route kv=127.0.0.1:8443:tls --tls-cert c.pem --tls-key k.pem --tls-ca ca.pem

It prints one JSON line, {"control": PORT, "routes": {"vault": PORT, ...}},
then serves until killed. `GET http://127.0.0.1:CONTROL/stats` returns the
counters as JSON ({"routes": {NAME: {...}}, "cpu": the proxy's CPU seconds so
far}); `/stats?reset=1` returns them and starts new ones.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import socket
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any

BACKLOG = 4096
NUMBERS = re.compile(r"\d+")


@dataclass
class RouteStats:
    requests: int = 0
    connections: int = 0
    active: int = 0
    max_active: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    paths: collections.Counter[str] = field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "connections": self.connections,
            "max_active": self.max_active,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "statuses": dict(self.statuses),
            "paths": dict(self.paths.most_common(20)),
        }


@dataclass
class Route:
    name: str
    host: str
    port: int
    tls: bool
    stats: RouteStats = field(default_factory=RouteStats)


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _headers(head: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes | None:
    """The raw body bytes; None when the body runs to the end of the connection."""
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            parts.append(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    line = await reader.readuntil(b"\r\n")
                    parts.append(line)
                    if line == b"\r\n":
                        return b"".join(parts)
            parts.append(await reader.readexactly(size + 2))
    length = headers.get(b"content-length")
    if length is not None:
        n = int(length)
        return await reader.readexactly(n) if n else b""
    return None


class Proxy:
    def __init__(
        self,
        routes: list[Route],
        delay: float,
        server_tls: ssl.SSLContext | None,
        upstream_tls: Any,
        connect_delay: float = 0.0,
    ) -> None:
        self.routes = routes
        self.delay = delay
        self.connect_delay = connect_delay
        self.server_tls = server_tls
        self.upstream_tls = upstream_tls

    async def start(self) -> dict[str, Any]:
        ports = {}
        for route in self.routes:
            server = await asyncio.start_server(
                lambda r, w, route=route: self.handle(route, r, w),
                "127.0.0.1",
                0,
                backlog=BACKLOG,
                ssl=self.server_tls if route.tls else None,
                reuse_address=True,
            )
            ports[route.name] = server.sockets[0].getsockname()[1]
        control = await asyncio.start_server(self.control, "127.0.0.1", 0, backlog=64)
        return {"control": control.sockets[0].getsockname()[1], "routes": ports}

    async def handle(
        self, route: Route, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> None:
        st = route.stats
        st.connections += 1
        st.active += 1
        st.max_active = max(st.max_active, st.active)
        _nodelay(cwriter)
        uwriter = None
        try:
            if self.connect_delay:  # the handshake's round trip(s): the first request waits for them
                await asyncio.sleep(self.connect_delay)
            ureader, uwriter = await asyncio.open_connection(
                route.host,
                route.port,
                ssl=self.upstream_tls if route.tls else None,
                server_hostname=route.host if route.tls else None,
                limit=1 << 20,
            )
            _nodelay(uwriter)
            methods: collections.deque[bytes] = collections.deque()
            tasks = [
                asyncio.ensure_future(self.requests(route, creader, uwriter, methods)),
                asyncio.ensure_future(self.responses(route, ureader, cwriter, methods)),
            ]
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            st.active -= 1
            for w in (cwriter, uwriter):
                if w is not None:
                    try:
                        w.close()
                    except (OSError, RuntimeError):
                        pass

    async def requests(
        self,
        route: Route,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        methods: collections.deque[bytes],
    ) -> None:
        st = route.stats
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line = head.split(b"\r\n", 1)[0]
                method, _, rest = request_line.partition(b" ")
                target = rest.rsplit(b" ", 1)[0]
                body = await _read_body(reader, _headers(head))
                methods.append(method.upper())
                st.requests += 1
                st.request_bytes += len(head) + len(body or b"")
                path = target.split(b"?", 1)[0].decode("latin-1")
                st.paths[f"{method.decode('latin-1')} {NUMBERS.sub('N', path)}"] += 1
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(head + (body or b""))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError, ValueError):
            return

    async def responses(
        self,
        route: Route,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        methods: collections.deque[bytes],
    ) -> None:
        st = route.stats
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                headers = _headers(head)
                if 100 <= status < 200:
                    writer.write(head)
                    await writer.drain()
                    continue
                method = methods.popleft() if methods else b"GET"
                st.statuses[str(status)] += 1
                if method == b"HEAD" or status in (204, 304):
                    body: bytes | None = b""
                else:
                    body = await _read_body(reader, headers)
                if body is None:  # delimited by close: stream it through, then end
                    writer.write(head)
                    while data := await reader.read(65536):
                        writer.write(data)
                        st.response_bytes += len(data)
                    await writer.drain()
                    return
                st.response_bytes += len(head) + len(body)
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ssl.SSLError, ValueError):
            return

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            stats = {r.name: r.stats.as_dict() for r in self.routes}
            body = json.dumps({"routes": stats, "cpu": time.process_time()}).encode()
            if "reset=1" in target:
                # Connections still open keep counting down on the object they started with,
                # so connections from an earlier run do not count as open in the next one.
                for r in self.routes:
                    r.stats = RouteStats()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        finally:
            writer.close()


def parse_route(text: str) -> Route:
    name, _, target = text.partition("=")
    parts = target.split(":")
    if not name or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "tls"):
        raise SystemExit(f"bad --route {text!r}: NAME=HOST:PORT[:tls]")
    return Route(name, parts[0], int(parts[1]), len(parts) == 3)


async def amain(args: argparse.Namespace) -> None:
    routes = [parse_route(r) for r in args.route]
    server_tls = upstream_tls = None
    if any(r.tls for r in routes):
        if not (args.tls_cert and args.tls_key and args.tls_ca):
            raise SystemExit("a tls route needs --tls-cert, --tls-key and --tls-ca")
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(args.tls_cert, args.tls_key)
        upstream_tls = ssl.create_default_context(cafile=args.tls_ca)
    proxy = Proxy(routes, args.delay_ms / 1000, server_tls, upstream_tls, args.connect_delay_ms / 1000)
    info = await proxy.start()
    print(json.dumps(info), flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument(
        "--connect-delay-ms", type=float, default=0.0, help="added once per new connection (handshakes) [0]"
    )
    parser.add_argument("--route", action="append", default=[], help="NAME=HOST:PORT[:tls]")
    parser.add_argument("--tls-cert", help="certificate chain (PEM) the tls routes present")
    parser.add_argument("--tls-key", help="its private key (PEM)")
    parser.add_argument("--tls-ca", help="CA (PEM) the tls routes trust upstream")
    args = parser.parse_args()
    try:
        asyncio.run(amain(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
