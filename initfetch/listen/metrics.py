"""The Prometheus metrics of `--listen` (a private registry; prometheus_client is imported
only by this module, and this module only when `--listen` is given).

Counters, the histogram and `backend_up` are driven by the Observer events (initfetch.observe);
the times of the schedule (last refresh, next refresh, lease and login expiry) are read from
the watcher when Prometheus scrapes, so they cost nothing between scrapes. Labels are names
from the manifest (`secret`, `provider`: a provider instance's name; not `instance`, which
Prometheus sets to the scraped target) and classes from fixed sets (`class`, `action`,
`result`): never a value, a reference's path or an address, and no more series than the
manifest has names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from initfetch import __version__
from initfetch.observe import OK, RESTART, Observer
from initfetch.watch.keeper import Doc, Login

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Backend calls: a local Vault answers in milliseconds, a cloud API in tens to hundreds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics(Observer):
    """The registry and the Observer that feeds it. `ready()` says whether /readyz would
    answer 200 (for `initfetch_ready`)."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        disable_created_metrics()  # no `_created` series: one process, counters start at its start
        self.ready = ready
        self.watcher: Any = None  # a Watcher, once one runs
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Histogram(
            "initfetch_backend_request_duration_seconds",
            "Duration of calls to a backend (reads, batches, renewals), per provider instance",
            ["provider"],
            buckets=BUCKETS,
            registry=r,
        )
        self.up = Gauge(
            "initfetch_backend_up",
            "1 when the provider instance's last call was answered, 0 when it failed to answer "
            "(unreachable, timeout, 5xx, throttled)",
            ["provider"],
            registry=r,
        )
        self.attempts = Counter(
            "initfetch_refresh_attempts",
            "Refreshes (reads and lease renewals) of one document, per provider instance",
            ["provider"],
            registry=r,
        )
        self.failures = Counter(
            "initfetch_refresh_failures",
            "Failed refreshes of one document, per provider instance and failure class",
            ["provider", "class"],
            registry=r,
        )
        self.files = Counter("initfetch_files_written", "Rendered files written to OUT_DIR", registry=r)
        self.notifications = Counter(
            "initfetch_notifications",
            "on_change notifications (signal, restart, command) by result",
            ["action", "result"],
            registry=r,
        )
        self.restarts = Counter(
            "initfetch_application_restarts", "Restarts of the application by exec --watch", registry=r
        )
        info = Gauge("initfetch_build_info", "The running initfetch's version", ["version"], registry=r)
        info.labels(__version__).set(1)
        r.register(_Scheduled(self))

    def text(self) -> bytes:
        return generate_latest(self.registry)

    # --- Observer ---

    def request(self, instance: str, seconds: float, failure: str | None) -> None:
        self.requests.labels(instance).observe(seconds)

    def backend(self, instance: str, up: bool) -> None:
        self.up.labels(instance).set(1 if up else 0)

    def refresh(self, instance: str, failure: str | None) -> None:
        self.attempts.labels(instance).inc()
        if failure is not None:
            self.failures.labels(instance, failure).inc()

    def files_written(self, count: int) -> None:
        self.files.inc(count)

    def notified(self, action: str, result: str) -> None:
        self.notifications.labels(action, result).inc()
        if action == RESTART and result == OK:
            self.restarts.inc()

    def watching(self, watcher: Any) -> None:
        self.watcher = watcher


class _Scheduled(Collector):
    """Gauges read from the watcher's schedule at scrape time (wall-clock seconds)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # no collect() at registration: the watcher may not exist yet

    def collect(self) -> Iterator[Metric]:
        last = GaugeMetricFamily(
            "initfetch_secret_last_refresh_timestamp_seconds",
            "When the secret was last read or its lease renewed successfully (Unix time)",
            labels=["secret"],
        )
        due = GaugeMetricFamily(
            "initfetch_secret_next_refresh_timestamp_seconds",
            "When the secret's next read, renewal or retry is scheduled (Unix time)",
            labels=["secret"],
        )
        lease = GaugeMetricFamily(
            "initfetch_lease_expiry_timestamp_seconds",
            "When the dynamic secret's current lease expires unless renewed (Unix time)",
            labels=["secret"],
        )
        login = GaugeMetricFamily(
            "initfetch_login_expiry_timestamp_seconds",
            "When the provider instance's login (a Vault token) expires unless renewed (Unix time)",
            labels=["provider"],
        )
        watcher = self.metrics.watcher
        if watcher is not None:
            offset = time.time() - watcher.clock()  # the schedule's monotonic times -> wall clock
            for entry in _entries(watcher):
                if isinstance(entry.key, Login) and entry.expires_at is not None:
                    login.add_metric([entry.key.instance], offset + entry.expires_at)
                if not isinstance(entry.key, Doc):
                    continue
                for name in watcher.docs.get(entry.key, ()):
                    last.add_metric([name], offset + entry.last_ok)
                    due.add_metric([name], offset + entry.at)
                    if entry.expires_at is not None:
                        lease.add_metric([name], offset + entry.expires_at)
        ready = GaugeMetricFamily("initfetch_ready", "1 when /readyz answers 200 (as healthcheck judges)")
        ready.add_metric([], 1 if self.metrics.ready() else 0)
        yield from (last, due, lease, login, ready)


def _entries(watcher: Any) -> list[Any]:
    """The schedule's entries, copied; the watcher's thread may change the dict meanwhile."""
    for _ in range(5):
        try:
            return list(watcher.schedule.entries.values())
        except RuntimeError:  # changed size during the copy: try again
            continue
    return []
