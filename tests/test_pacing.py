"""The per-instance limit (initfetch.pacing): AIMD, Retry-After, and a jittered pause after
throttling answers that carry no Retry-After (OpenBao's quota sends none)."""

from __future__ import annotations

import random

from initfetch.resolve.pacing import MAX_THROTTLE_PAUSE, AdaptiveLimit


def test_one_halving_per_generation_and_additive_growth() -> None:
    limit = AdaptiveLimit(8)
    gens = [limit.start() for _ in range(8)]
    for g in gens:  # a whole window refused: halved once, not eight times
        limit.finish(g, 0.0, throttled=True, retry_after=1.0)
    assert limit.limit == 4 and limit.paused_until == 1.0
    assert not limit.can_start(0.5) and limit.can_start(1.0)
    for _ in range(4):
        limit.finish(limit.start(), 2.0, throttled=False, retry_after=None)
    assert 4 < limit.limit <= 5  # +1/limit per success: about one more per window


def test_throttling_without_retry_after_pauses_with_jitter_growing_in_a_row() -> None:
    random.seed(7)
    limit = AdaptiveLimit(4)
    pauses = []
    for _ in range(8):
        limit.finish(limit.start(), 100.0, throttled=True, retry_after=None)
        pauses.append(limit.paused_until - 100.0)
        limit.paused_until = 0.0
    assert all(0 <= p <= MAX_THROTTLE_PAUSE for p in pauses)
    assert max(pauses[4:]) > max(pauses[:2])  # the bound doubles with each answer in a row
    limit.finish(limit.start(), 200.0, throttled=False, retry_after=None)
    assert limit.in_a_row == 0
