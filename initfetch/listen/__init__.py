"""`--listen ADDR:PORT`: health probes and Prometheus metrics for the long-running modes
(`render --watch`, `render --hold`, `exec --watch`, `exec --supervise`).

- `/healthz`: the process answers and, once a watcher runs, its loop is alive (its thread
  runs and no cycle has been at work for longer than a cycle can take).
- `/readyz`: a complete render is in place and not older than `--max-stale`: the function
  `initfetch healthcheck` calls (outdir/health.py `ready`). `exec` without files: ready once
  the application was started.
- `/metrics`: Prometheus text format (metrics.py).

Nothing here is imported without `--listen`; the server (server.py) runs on its own thread
and never holds up the watcher.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from pathlib import Path

from initfetch.errors import BadInput, NotReady
from initfetch.listen.server import Response, Server
from initfetch.outdir import health
from initfetch.redact import Redactor

log = logging.getLogger("initfetch.listen")

DEFAULT_HOST = "127.0.0.1"


def parse_address(text: str) -> tuple[str, int]:
    """`PORT`, `:PORT`, `HOST:PORT` or `[IPV6]:PORT` (an IP address or `localhost`, no other
    name); without a host, 127.0.0.1. Raises BadInput naming the option."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    host = DEFAULT_HOST if host == "localhost" else host  # the one name: no lookup at start
    problem = None
    try:
        number = int(port)
        if not 0 < number < 65536:
            problem = f"port {port} is not between 1 and 65535"
        elif host:
            ipaddress.ip_address(host)
    except ValueError:
        problem = f"{text!r} is not PORT, HOST:PORT or [IPV6]:PORT with an IP address"
    if problem is not None:
        raise BadInput(f"--listen (INITFETCH_LISTEN): {problem}")
    return host or DEFAULT_HOST, number


class Listener:
    """The probes and metrics of one long-running command, served on `address`."""

    def __init__(
        self, address: tuple[str, int], out_dir: Path | None, max_stale: float | None, redactor: Redactor
    ) -> None:
        from initfetch.listen.metrics import CONTENT_TYPE, Metrics

        self.out_dir = out_dir
        self.max_stale = max_stale
        self.redactor = redactor
        self.started = threading.Event()  # exec without files: the application runs
        self.metrics = Metrics(lambda: self._not_ready() is None)
        self._content_type = CONTENT_TYPE
        routes = {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.scrape}
        try:
            self.server = Server(address, routes)
        except OSError as e:
            host, port = address
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise BadInput(
                f"--listen (INITFETCH_LISTEN): cannot listen on {where}: {e.strerror or e}"
            ) from None

    def __enter__(self) -> Listener:
        self.server.start()
        host, port = self.server.address
        log.info("serving /healthz, /readyz and /metrics on %s:%d", host, port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()

    # --- the endpoints ---

    def healthz(self) -> Response:
        watcher = self.metrics.watcher
        if watcher is not None and not watcher.stop.is_set() and not watcher.alive():
            return Response(503, b"the watch loop is not running\n")
        return Response(200, b"ok\n")

    def readyz(self) -> Response:
        reason = self._not_ready()
        if reason is None:
            return Response(200, b"ready\n")
        return Response(503, (self.redactor.scrub(reason) + "\n").encode("utf-8", "replace"))

    def scrape(self) -> Response:
        return Response(200, self.metrics.text(), self._content_type)

    def _not_ready(self) -> str | None:
        """Why /readyz is not 200, in one line; None when ready."""
        if self.out_dir is None:
            return None if self.started.is_set() else "not ready: the application has not started yet"
        try:
            health.ready(self.out_dir, self.max_stale)
        except NotReady as e:
            return f"not ready: {e.problems[0]}"
        return None
