"""Backend trouble, logged the way an operator can read it during an outage.

One line when a backend starts failing (what, why, how many secrets wait, when
the next try is), at most one summary every `every` seconds while it lasts, and
one line when it answers again; never a line per secret per retry. A watcher
keeps one `Outages` across refreshes, so an outage that spans many refresh
attempts is still one story.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("initfetch.resolver")


@dataclass
class _Down:
    since: float
    reason: str
    waiting: int
    attempts: int = 1
    last_line: float = 0.0


class Outages:
    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._down: dict[str, _Down] = {}
        self._lock = threading.Lock()

    def failing(
        self, instance: str, reason: str, waiting: int, retry_in: float | None, until: str = ""
    ) -> None:
        """An attempt on `instance` failed for a transient `reason`; `waiting` secrets wait on it.
        `retry_in`: seconds to the next try (None: no more tries); `until`: what bounds the waiting."""
        now = self.clock()
        with self._lock:
            down = self._down.get(instance)
            if down is None:
                self._down[instance] = _Down(now, reason, waiting, last_line=now)
                line = f"waiting for {instance}: {reason}; {waiting} secret(s) wait"
            else:
                down.reason, down.waiting = reason, max(waiting, 1)
                down.attempts += 1
                if now - down.last_line < self.every:
                    return
                down.last_line = now
                line = (
                    f"still waiting for {instance} after {now - down.since:.0f}s and "
                    f"{down.attempts} attempt(s): {reason}; {down.waiting} secret(s) wait"
                )
        nxt = f"; next try in {retry_in:.1f}s" if retry_in is not None else "; no more tries"
        log.warning("%s%s%s", line, nxt, f" ({until})" if until else "")

    def answered(self, instance: str) -> None:
        """`instance` answered: if it was failing, say for how long, once."""
        with self._lock:
            down = self._down.pop(instance, None)
        if down is not None:
            log.info(
                "%s answers again after %.1fs (%d failed attempt(s))",
                instance,
                self.clock() - down.since,
                down.attempts,
            )

    def down(self, instance: str) -> bool:
        with self._lock:
            return instance in self._down
