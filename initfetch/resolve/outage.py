"""Backend trouble, logged the way an operator can read it during an outage.

One line when a backend has been failing for a second (what, why, how many
secrets wait, when the next try is), at most one summary every `every` seconds
while it lasts, and one line when it answers again; never a line per secret per
retry, and nothing for a blip that a retry within the second fixes. A watcher
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
    last_line: float = 0.0  # when its last line was logged; 0: none yet (a blip so far)


class Outages:
    """`blip`: a backend that answers again within this many seconds was only blinking (a
    retried 503, a reset connection): that is not worth a line."""

    def __init__(
        self, every: float = 10.0, clock: Callable[[], float] = time.monotonic, blip: float = 1.0
    ) -> None:
        self.every = every
        self.clock = clock
        self.blip = blip
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
                down = self._down[instance] = _Down(now, reason, waiting, attempts=0)
            down.reason, down.waiting = reason, max(waiting, 1)
            down.attempts += 1
            if not down.last_line and now - down.since >= self.blip:
                waited = now - down.since
                line = f"waiting for {instance} for {waited:.1f}s: {reason}; {down.waiting} secret(s) wait"
            elif down.last_line and now - down.last_line >= self.every:
                line = (
                    f"still waiting for {instance} after {now - down.since:.0f}s and "
                    f"{down.attempts} attempt(s): {reason}; {down.waiting} secret(s) wait"
                )
            else:
                log.debug("%s: %s; retrying", instance, reason)
                return
            down.last_line = now
        nxt = f"; next try in {retry_in:.1f}s" if retry_in is not None else "; no more tries"
        log.warning("%s%s%s", line, nxt, f" ({until})" if until else "")

    def answered(self, instance: str) -> None:
        """`instance` answered: if its trouble was worth a line, say for how long, once."""
        with self._lock:
            down = self._down.pop(instance, None)
        if down is not None and down.last_line:
            log.info(
                "%s answers again after %.1fs (%d failed attempt(s))",
                instance,
                self.clock() - down.since,
                down.attempts,
            )

    def down(self, instance: str) -> bool:
        with self._lock:
            return instance in self._down
