"""Whole-process measurements: wall time, CPU time and peak RSS of one child.

Children are started by bench/launcher.py, a small separate process (see its
docstring: a child of the bench itself would inherit the bench's memory as
its peak RSS). The clock starts just before fork and stops when the child has
been reaped; wait4 gives the kernel's own accounting of that child (ru_maxrss
is its peak resident set).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
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
    server_cpu: dict[str, float] = field(default_factory=dict)  # CPU s the proxy / OpenBao used meanwhile
    ok: bool = True  # exit 0 and the expected output
    note: str = ""
    start: float = 0.0  # CLOCK_MONOTONIC at start and at exit (the fleet needs them)
    end: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Launcher:
    """The bench's handle on bench/launcher.py: `start` children, `wait` for their Runs."""

    def __init__(self) -> None:
        script = Path(__file__).resolve().parent / "launcher.py"
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        first = json.loads(self.proc.stdout.readline())
        if not first.get("ready"):
            raise RuntimeError(f"launcher did not start: {first}")
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._done: dict[int, dict[str, Any]] = {}
        self._events: dict[int, threading.Event] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self._lock:
                self._done[msg["id"]] = msg
                event = self._events.get(msg["id"])
            if event is not None:
                event.set()

    def start(self, argv: Sequence[str], env: Mapping[str, str], log: Path, timeout: float = 600.0) -> int:
        ident = next(self._ids)
        with self._lock:
            self._events[ident] = threading.Event()
        cmd = {"id": ident, "argv": list(argv), "env": dict(env), "log": str(log), "timeout": timeout}
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        return ident

    def wait(self, ident: int) -> Run:
        self._events[ident].wait()
        with self._lock:
            msg = self._done.pop(ident)
            del self._events[ident]
        if "error" in msg:
            return Run(0.0, 0.0, 0.0, 127, ok=False, note=f"could not start: {msg['error']}")
        rc = int(msg["rc"])
        return Run(
            msg["end"] - msg["start"],
            msg["cpu"],
            msg["rss_kb"] / 1024,
            rc,
            ok=rc == 0,
            note="killed at the timeout" if msg["timed_out"] else "",
            start=msg["start"],
            end=msg["end"],
        )

    def run(self, argv: Sequence[str], env: Mapping[str, str], log: Path, timeout: float = 600.0) -> Run:
        return self.wait(self.start(argv, env, log, timeout))

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def summary(values: Sequence[float]) -> dict[str, float]:
    import statistics

    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
