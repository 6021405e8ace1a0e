"""How many requests one provider instance may have in flight: additive increase,
multiplicative decrease (AIMD), and Retry-After.

A fleet of containers starting together must not hammer a backend into refusing
all of them. Each instance starts at its configured concurrency; every
throttling answer (429, or 503 with Retry-After) halves it, at most once per
"generation" of requests (only a request started after the last decrease can
cause the next one, as TCP does once per round trip), and a Retry-After pauses
the instance. Every success adds 1/limit, so a full window of successes
grows the limit by one, up to the configured ceiling.

Not thread-safe on its own: the resolver's scheduler calls it under its lock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# A Retry-After longer than this is capped: the run's deadline bounds it anyway.
MAX_PAUSE = 30.0
# Without Retry-After (OpenBao's quota sends none), the instance pauses on its own after a
# throttling answer: 0.1 s, doubling with each one in a row up to 1 s, with full jitter so
# a fleet of processes does not come back in step.
THROTTLE_PAUSE = 0.1
MAX_THROTTLE_PAUSE = 1.0


@dataclass
class AdaptiveLimit:
    ceiling: int
    limit: float = 0.0
    inflight: int = 0
    generation: int = 0
    paused_until: float = 0.0
    throttled: int = 0  # throttling answers seen, for logs and tests
    lowest: float = 0.0  # the lowest limit reached
    in_a_row: int = 0  # throttling answers since the last success

    def __post_init__(self) -> None:
        self.ceiling = max(1, self.ceiling)
        self.limit = self.lowest = float(self.ceiling)

    def can_start(self, now: float) -> bool:
        return self.inflight < int(self.limit) and now >= self.paused_until

    def start(self) -> int:
        """Count a request in; returns the generation to hand back to `finish`."""
        self.inflight += 1
        return self.generation

    def finish(self, generation: int, now: float, *, throttled: bool, retry_after: float | None) -> None:
        self.inflight -= 1
        if retry_after is not None and retry_after > 0:
            self.paused_until = max(self.paused_until, now + min(retry_after, MAX_PAUSE))
        if not throttled:
            self.in_a_row = 0
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            return
        self.throttled += 1
        self.in_a_row += 1
        if retry_after is None:
            pause = min(MAX_THROTTLE_PAUSE, THROTTLE_PAUSE * 2 ** (self.in_a_row - 1))
            self.paused_until = max(self.paused_until, now + random.uniform(0, pause))
        if generation == self.generation:  # one decrease per generation of requests
            self.limit = max(1.0, self.limit / 2)
            self.lowest = min(self.lowest, self.limit)
            self.generation += 1
