"""What is due when: a pure schedule of polls, lease renewals and replacements.

No I/O, no threads, no clock of its own: the watcher passes `now` (monotonic
seconds), and a random source can be injected, so every rule is testable.

- A static secret is read again every `interval`, with +-10% jitter so a fleet
  started together does not poll in step.
- A renewable lease (a dynamic secret, or the Vault token) is renewed at about
  two thirds of its TTL. When a renewal grants less than the lease's first
  duration, the lease has hit its max TTL: it is replaced (read again, or a new
  login for a token) at two thirds of what is left, ahead of its expiry. A
  lease that is not renewable is replaced the same way. A lease that knows its whole
  validity (a certificate: notAfter - notBefore) is replaced at about two thirds of
  that validity, counted from its start.
- A failure is retried with exponential backoff and jitter (capped at
  BACKOFF_MAX, so a recovery is noticed quickly), never later than the item's
  normal interval; the item counts as failing until it succeeds again, and its
  `due` time stays when it first fell due, so staleness is counted from there.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass

RENEW_AT = 2 / 3
JITTER = 0.1
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0

READ = "read"  # poll a static secret
RENEW = "renew"  # extend a lease (or the token)
REPLACE = "replace"  # read a new lease (or log in again) before the old one expires


@dataclass
class Entry:
    key: Hashable
    action: str
    at: float  # monotonic time the next attempt is due
    due: float = 0.0  # when the pending action first fell due (retries do not move it)
    interval: float | None = None  # static polls
    expires_at: float | None = None  # leases
    requested: float = 0.0  # the lease's first duration: a shorter renewal means max TTL
    failures: int = 0
    last_ok: float = 0.0


class Schedule:
    def __init__(self, rng: Callable[[], float] = random.random) -> None:
        self._rng = rng
        self.entries: dict[Hashable, Entry] = {}

    # --- adding and updating ---

    def poll(self, key: Hashable, interval: float, now: float) -> Entry:
        """A static secret read at `now`: next read after about `interval`."""
        entry = self.entries.get(key) or Entry(key, READ, now)
        entry.action, entry.interval, entry.expires_at = READ, interval, None
        entry.at = entry.due = now + interval * self._jitter()
        self._ok(entry, now)
        self.entries[key] = entry
        return entry

    def lease(
        self, key: Hashable, duration: float, renewable: bool, now: float, validity: float = 0.0
    ) -> Entry:
        """A new lease granted at `now` (a dynamic read, or a login), `duration` seconds left.

        With `validity` (a certificate's notAfter - notBefore), it is due at about two thirds
        of that counted from its start (notAfter - validity), not from `now`."""
        entry = self.entries.get(key) or Entry(key, RENEW, now)
        entry.interval, entry.requested = None, float(duration)
        entry.expires_at = now + duration
        entry.action = RENEW if renewable else REPLACE
        if validity > 0:
            start = entry.expires_at - validity
            entry.at = entry.due = max(now, start + validity * self._renew_fraction())
        else:
            entry.at = entry.due = now + duration * self._renew_fraction()
        self._ok(entry, now)
        self.entries[key] = entry
        return entry

    def renewed(self, key: Hashable, granted: float, now: float) -> Entry:
        """A renewal at `now` granted `granted` seconds; less than first asked means max TTL."""
        entry = self.entries[key]
        entry.expires_at = now + granted
        capped = granted <= 0 or granted < entry.requested
        entry.action = REPLACE if capped else RENEW
        entry.at = entry.due = now + granted * self._renew_fraction()
        self._ok(entry, now)
        return entry

    def refused(self, key: Hashable, now: float) -> Entry:
        """A renewal was refused for good (not renewable, revoked, expired): replace at once."""
        entry = self.entries[key]
        entry.action, entry.at = REPLACE, now
        return entry

    def failed(self, key: Hashable, now: float) -> Entry:
        """The due action failed: retry with backoff; the last good result stays in use."""
        entry = self.entries[key]
        entry.failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(entry.failures - 1, 16))
        if entry.interval is not None:
            delay = min(delay, entry.interval)
        entry.at = now + delay * self._jitter()
        return entry

    def remove(self, key: Hashable) -> None:
        self.entries.pop(key, None)

    # --- questions ---

    def due(self, now: float, *, ahead: bool = False) -> list[Entry]:
        """What is due at `now`. `ahead`: with every poll that falls due within its jitter's
        width (a fifth of its interval) after `now`, so that secrets polled at one interval
        are read in one batch each time, not one wake-up each (300 a second at `refresh: 1s`);
        none of them is read more than that fifth early."""
        if not ahead:
            return sorted((e for e in self.entries.values() if e.at <= now), key=lambda e: e.at)
        return sorted((e for e in self.entries.values() if e.at <= now + self._ahead(e)), key=lambda e: e.at)

    def next_at(self) -> float | None:
        return min((e.at for e in self.entries.values()), default=None)

    def stale_since(self) -> float | None:
        """When the oldest failing item last succeeded; None when nothing is failing."""
        return min((e.last_ok for e in self.entries.values() if e.failures), default=None)

    def expired(self, now: float) -> list[Entry]:
        """Leases that ran out before they could be renewed or replaced."""
        return [e for e in self.entries.values() if e.expires_at is not None and e.expires_at <= now]

    # --- internals ---

    def _ok(self, entry: Entry, now: float) -> None:
        entry.failures, entry.last_ok = 0, now

    @staticmethod
    def _ahead(entry: Entry) -> float:
        if entry.action != READ or entry.interval is None or entry.failures:
            return 0.0  # leases and retries keep their time
        return 2 * JITTER * entry.interval

    def _jitter(self) -> float:
        return 1 - JITTER + 2 * JITTER * self._rng()

    def _renew_fraction(self) -> float:
        # About two thirds, a little earlier at random, so renewals of a fleet spread out.
        return RENEW_AT - 0.05 * self._rng()
