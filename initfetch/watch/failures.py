"""Failing refreshes, logged as an operator can read them: each secret's failure once per
cause, grouped by class when many share it, a summary at most every minute while they
last, and one line when they resolve again; never a line per secret per retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

from initfetch.errors import Problem

log = logging.getLogger("initfetch.watch")

SHOWN = 3  # failures of one class listed one by one; beyond, one line for the class


class Failures:
    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._kinds: dict[str, str] = {}  # failing secret -> the class last reported
        self._since = 0.0
        self._last_line = 0.0

    def failed(self, failures: Mapping[str, tuple[str, Problem]]) -> None:
        """A refresh failed: `failures` maps each failing secret to its class and its one-line problem."""
        now = self.clock()
        if not self._kinds:
            self._since = now
        new: dict[str, list[tuple[str, Problem]]] = {}
        for name, (kind, problem) in failures.items():
            if self._kinds.get(name) != kind:
                new.setdefault(kind, []).append((name, problem))
            self._kinds[name] = kind
        for kind, items in sorted(new.items()):
            if len(items) <= SHOWN:
                for _, problem in items:
                    log.warning("refresh failed, keeping the last good render: %s", problem)
            else:
                names = ", ".join(name for name, _ in items[:SHOWN])
                log.warning(
                    "refresh failed, keeping the last good render: %d secrets %s (%s and %d more); first: %s",
                    len(items),
                    kind,
                    names,
                    len(items) - SHOWN,
                    items[0][1],
                )
        if new:
            self._last_line = now
        elif now - self._last_line >= self.every:
            self._last_line = now
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(_count(self._kinds.values()).items()))
            log.warning(
                "refresh still failing after %.0fs (%s); keeping the last good render",
                now - self._since,
                kinds,
            )

    def resolved(self, names: Iterable[str]) -> None:
        """These secrets resolved: say so once for those that were failing."""
        back = sorted(n for n in names if n in self._kinds)
        for name in back:
            del self._kinds[name]
        if back:
            more = f" and {len(back) - SHOWN} more" if len(back) > SHOWN else ""
            log.info("resolves again: %s%s", ", ".join(back[:SHOWN]), more)


def _count(kinds: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for kind in kinds:
        out[kind] = out.get(kind, 0) + 1
    return out
