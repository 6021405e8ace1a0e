"""A real Prometheus (Debian's `prometheus` package) scraping a test's targets every second.

`start_prometheus(targets)` writes a temporary config, starts /usr/bin/prometheus on a free
loopback port with its storage in a temporary directory, and waits until it is ready; the
`query` method asks its HTTP API (instant queries). Missing binary: skipped on a developer
machine, a failure under CI=true (tests.conftest.require).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.backends.local_http import free_port

BINARY = "/usr/bin/prometheus"


def prometheus_binary() -> str | None:
    return BINARY if Path(BINARY).exists() else shutil.which("prometheus")


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (each item: {"metric": {...}, "value": [t, "v"]})."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        """The single value of a query, or None when it has no result (yet)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as r:
            active = json.load(r)["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


CONFIG = """global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: initfetch
    static_configs:
      - targets: [{targets}]
"""


@contextmanager
def start_prometheus(targets: Sequence[str]) -> Iterator[Prometheus]:
    from tests.conftest import require

    binary = prometheus_binary()
    require(binary, "Prometheus is not installed (apt-get install prometheus)")
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="initfetch-prom-") as tmp:
        work = Path(tmp)
        config = work / "prometheus.yml"
        config.write_text(CONFIG.format(targets=", ".join(f"'{t}'" for t in targets)))
        port = free_port()
        log = work / "prometheus.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=work,
            )
        prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
        try:
            _wait_ready(prom)
            yield prom
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _wait_ready(prom: Prometheus, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if prom.proc.poll() is not None:
            tail = prom.log.read_text()[-3000:]
            raise AssertionError(f"prometheus exited ({prom.proc.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready within {timeout}s:\n{prom.log.read_text()[-3000:]}")
