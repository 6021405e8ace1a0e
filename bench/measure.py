"""Whole-process measurements: wall time, CPU time and peak RSS of one child.

The clock starts just before the process is started and stops when it has been
reaped; `os.wait4` gives the kernel's own accounting of that child (ru_maxrss
is its peak resident set, in KiB on Linux).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Run:
    wall: float  # seconds
    cpu: float  # user + system seconds
    rss_mb: float  # peak resident set, MiB
    rc: int
    requests: dict[str, int] = field(default_factory=dict)  # per backend, counted by the proxy
    statuses: dict[str, int] = field(default_factory=dict)  # HTTP status -> count, all backends
    max_connections: dict[str, int] = field(default_factory=dict)  # per backend, at once
    paths: dict[str, int] = field(default_factory=dict)  # "METHOD /path/with/N" -> count, all backends
    ok: bool = True  # exit 0 and the expected output
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Spawned:
    """A started child; `reap()` waits for it and returns its Run (without request counts)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        cwd: Path | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.start = time.perf_counter()
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.timer = threading.Timer(timeout, self._kill)
        self.timer.daemon = True
        self.timer.start()
        self.timed_out = False

    def _kill(self) -> None:
        self.timed_out = True
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reap(self) -> Run:
        _, status, usage = os.wait4(self.proc.pid, 0)
        wall = time.perf_counter() - self.start
        self.timer.cancel()
        rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = rc  # reaped here; Popen must not wait for it again
        note = "killed at the timeout" if self.timed_out else ""
        return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, rc, ok=rc == 0, note=note)


def run_once(
    argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None = None, timeout: float = 600.0
) -> Run:
    return Spawned(argv, env, log, cwd, timeout).reap()


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
