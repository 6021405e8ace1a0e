"""A pool of daemon threads that outlives one resolution: a watcher resolving a few due
secrets every second reuses its threads instead of starting dozens each time.

Threads start as jobs need them, up to `size`, and sleep on the queue between jobs
(no wake-ups while idle). Daemon threads: a request that hangs past its deadline
never keeps the process alive.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

K = TypeVar("K")
R = TypeVar("R")


class WorkerPool:
    def __init__(self, size: int, name: str = "fetch") -> None:
        self.size = max(1, size)
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            # `_idle` counts idle threads minus queued jobs: a job waits only when no thread is
            # idle and the pool is full.
            start = self._idle <= 0 and self._threads < self.size
            if start:
                self._threads += 1
            else:
                self._idle -= 1
        if start:
            threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        main_thread_signals_only()
        while True:
            job = self._jobs.get()
            try:
                job()
            except BaseException:  # noqa: S110 - a job reports its own failures; the thread lives on
                pass
            with self._lock:
                self._idle += 1

    @property
    def threads(self) -> int:
        return self._threads


# Signals initfetch handles: a process-directed signal goes to a thread that does not block
# it, and Python runs its handler only in the main thread, when that thread wakes up. So the
# threads initfetch starts block them: they reach the main thread at once, whatever it waits on.
HANDLED_SIGNALS = frozenset(
    {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2}
)


def main_thread_signals_only() -> None:
    """Block the handled signals in the calling thread (never the main thread). Not for a
    thread that starts processes: a child would inherit the blocked mask."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)


def run_all(
    pool: WorkerPool, calls: Mapping[K, Callable[[], R]], deadline: float, stop: threading.Event | None = None
) -> dict[K, R | BaseException]:
    """Run the calls concurrently on `pool`; their results (or exceptions) by key. Returns by the
    deadline or at `stop`: a call still running then is simply missing from the result."""
    results: dict[K, R | BaseException] = {}
    done = threading.Condition()

    def job(key: K, call: Callable[[], R]) -> Callable[[], None]:
        def run() -> None:
            try:
                result: R | BaseException = call()
            except BaseException as e:  # handed to the caller, which decides
                result = e
            with done:
                results[key] = result
                done.notify_all()

        return run

    for key, call in calls.items():
        pool.submit(job(key, call))
    with done:
        while len(results) < len(calls) and not (stop is not None and stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done.wait(min(left, 0.1) if stop is not None else left)
        return dict(results)
