"""Running the reads of one resolution: work units on a pool of threads, each provider
instance paced on its own, transient failures retried within one deadline.

- A work unit is one document, or a batch for providers with `batch_size > 1`.
  Units run on a pool of `--concurrency` daemon threads, so the total in flight
  is really bounded; each provider instance has its own adaptive limit
  (initfetch.resolve.pacing: halves on throttling, honours Retry-After, grows back).
- Transient errors are retried with exponential backoff and full jitter
  (tenacity's, imported at the first retry) until the deadline; a unit waiting
  for its retry holds no thread. A unit still hanging at the deadline is
  reported as unavailable and its thread abandoned (daemon), not waited for.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from initfetch.errors import SecretError, TooLarge, Unavailable
from initfetch.limits import exceeded
from initfetch.observe import NULL, Observer
from initfetch.providers.base import Document, FetchContext, Provider
from initfetch.reference import DocKey
from initfetch.resolve.outage import Outages
from initfetch.resolve.pacing import AdaptiveLimit
from initfetch.resolve.pool import WorkerPool
from initfetch.resolve.values import document_size

log = logging.getLogger("initfetch.resolver")


def last_attempt_reserve(timeout: float) -> float:
    """Seconds kept for the final attempt: the last backoff sleep ends this long before
    the deadline. A tenth of the timeout, between 0.5 s and 5 s."""
    return min(5.0, max(0.5, timeout / 10))


@dataclass
class Unit:
    instance: str
    docs: list[DocKey]
    results: dict[DocKey, Document | SecretError] = field(default_factory=dict)
    ms: dict[DocKey, int] = field(default_factory=dict)
    pending: list[DocKey] = field(default_factory=list)  # still to read (all, then the transient ones)
    attempts: int = 0
    started: float = 0.0
    counts: dict[DocKey, int] = field(default_factory=dict)  # secrets each document serves


@dataclass
class Fetching:
    """What a resolver keeps from one resolution to the next: the provider instances (their
    logins), what pacing learned of each backend, its threads, and the story of an outage."""

    instances: dict[str, Provider]
    pacing: dict[str, AdaptiveLimit]
    pool: WorkerPool
    outages: Outages
    observer: Observer = NULL


def run_units(units: list[Unit], ctx: FetchContext, fetching: Fetching) -> None:
    """Run every unit to a result, or until the deadline or the stop event."""
    scheduler = _Scheduler(units, fetching.pacing, ctx, fetching.outages)
    scheduler.observer = fetching.observer
    for _ in range(min(fetching.pool.size, len(units))):
        fetching.pool.submit(lambda: scheduler.work(fetching.instances))
    scheduler.wait()


def _call(inst: Provider, docs: list[DocKey], ctx: FetchContext) -> dict[DocKey, Document | SecretError]:
    try:
        if len(docs) == 1 and inst.batch_size <= 1:
            got: Mapping[DocKey, Document | SecretError] = {docs[0]: inst.fetch(docs[0], ctx)}
        else:
            got = inst.fetch_many(docs, ctx)
    except SecretError as e:
        return dict.fromkeys(docs, e)
    except Exception as e:  # a provider bug or an unmapped SDK error: fail, do not retry
        err = SecretError(f"unexpected {type(e).__name__} from the {inst.type_name} provider")
        return dict.fromkeys(docs, err)
    out: dict[DocKey, Document | SecretError] = {}
    for d in docs:
        result = got.get(d) or SecretError("provider returned no result")
        if isinstance(result, Document) and document_size(result.value, ctx.max_size) > ctx.max_size:
            result = TooLarge(exceeded("secret_size", ctx.max_size))
        out[d] = result
    return out


class _Scheduler:
    """Hands units to worker threads when their instance has room; requeues transient failures.

    One lock for everything: the work per decision is tiny next to a network round
    trip. Workers and the waiting caller wait on two conditions of that lock, so an
    answer wakes one worker (a slot is free), not all of them and the caller.
    """

    def __init__(
        self, units: list[Unit], pacing: Mapping[str, AdaptiveLimit], ctx: FetchContext, outages: Outages
    ) -> None:
        self.ctx = ctx
        self.pacing = pacing
        self.outages = outages
        self.reserve = last_attempt_reserve(ctx.deadline - time.monotonic())
        self.unresolved: dict[str, int] = {}  # secrets still without a final result, per instance
        self.ready: dict[str, deque[Unit]] = {}
        for unit in units:
            unit.pending = list(unit.docs)
            self.ready.setdefault(unit.instance, deque()).append(unit)
            self.unresolved[unit.instance] = self.unresolved.get(unit.instance, 0) + sum(
                unit.counts.get(d, 1) for d in unit.docs
            )
        self.delayed: list[tuple[float, int, Unit]] = []  # (not before, tie-break, unit)
        self.open = len(units)
        lock = threading.RLock()
        self.cond = threading.Condition(lock)  # workers wait on it for a unit they may start
        self.finished = threading.Condition(lock)  # the waiter (the caller's thread) waits on this one
        self.observer: Observer = NULL

    def wait(self) -> None:
        """Until every unit is done, the deadline has passed, or the stop event is set."""
        stop = self.ctx.stop
        with self.cond:
            while self.open and not self.ctx.stopped and self.ctx.deadline - time.monotonic() > -0.5:
                left = self.ctx.deadline - time.monotonic() + 0.5
                # With a stop event, look at it every 0.1 s: a signal cannot notify this condition.
                self.finished.wait(max(0.01, min(left, 0.1) if stop is not None else left))
            self.cond.notify_all()  # workers waiting for a retry see the stop (or the deadline) at once

    def work(self, instances: Mapping[str, Provider]) -> None:
        while (taken := self._take()) is not None:
            unit, generation = taken
            began = time.monotonic()
            got = _call(instances[unit.instance], unit.pending, self.ctx)
            _observe(self.observer, unit.instance, time.monotonic() - began, list(got.values()))
            self._finished(unit, generation, got)

    def _take(self) -> tuple[Unit, int] | None:
        with self.cond:
            while self.open:
                now = time.monotonic()
                if self.ctx.remaining() <= 0:
                    return None
                while self.delayed and self.delayed[0][0] <= now:
                    unit = heapq.heappop(self.delayed)[2]
                    self.ready[unit.instance].append(unit)
                wake = self.ctx.deadline
                for name, queue in self.ready.items():
                    if not queue:
                        continue
                    limit = self.pacing[name]
                    if limit.can_start(now):
                        unit = queue.popleft()
                        if not unit.started:
                            unit.started = now
                        unit.attempts += 1
                        return unit, limit.start()
                    if limit.paused_until > now:
                        wake = min(wake, limit.paused_until)
                if self.delayed:
                    wake = min(wake, self.delayed[0][0])
                self.cond.wait(max(0.001, wake - now))
            return None

    def _finished(self, unit: Unit, generation: int, got: Mapping[DocKey, Document | SecretError]) -> None:
        throttle = next(
            (r for r in got.values() if isinstance(r, Unavailable) and (r.throttled or r.retry_after)), None
        )
        with self.cond:
            now = time.monotonic()
            self.pacing[unit.instance].finish(
                generation,
                now,
                throttled=throttle is not None and throttle.throttled,
                retry_after=throttle.retry_after if throttle is not None else None,
            )
            unit.results.update(got)
            for doc in unit.pending:
                unit.ms[doc] = int((now - unit.started) * 1000)
            unit.pending = [d for d in unit.pending if isinstance(got[d], SecretError) and got[d].transient]  # type: ignore[union-attr]
            delay = self._retry_delay(unit, throttle, now)
            if delay is None:
                self.open -= 1
            else:
                heapq.heappush(self.delayed, (now + delay, id(unit), unit))
            answered = len(unit.pending) < len(got)
            done = [d for d in got if d not in unit.pending or delay is None]
            self.unresolved[unit.instance] -= sum(unit.counts.get(d, 1) for d in done)
            waiting = self.unresolved[unit.instance]
            if self.open == 0:
                self.finished.notify_all()
            if self.open == 0 or delay is not None:
                self.cond.notify_all()  # all done (workers leave), or a new wake time
            else:
                # A slot of the instance is free: one waiting worker may take a unit. Not all of
                # them: with 64 workers, waking every one on every answer costs more than the read.
                self.cond.notify()
        if answered:
            self.outages.answered(unit.instance)
        if delay is not None and not self.ctx.stopped:
            reason = unit.results.get(unit.pending[0])
            self.outages.failing(unit.instance, f"{reason}", waiting, delay, self._until())

    def _until(self) -> str:
        wall = time.time() + (self.ctx.deadline - time.monotonic())
        return "until " + time.strftime("%H:%M:%SZ", time.gmtime(wall)) + ", the --timeout deadline"

    def _retry_delay(self, unit: Unit, throttle: Unavailable | None, now: float) -> float | None:
        """Seconds until the unit's next attempt, or None when it is finished (or out of time)."""
        left = self.ctx.deadline - now
        if not unit.pending or left < self.reserve:
            return None
        delay = _backoff(unit.attempts)
        if throttle is not None and throttle.retry_after:
            delay = max(delay, throttle.retry_after)
        # Never sleep past the point where one last attempt still fits before the deadline.
        return max(0.0, min(delay, left - self.reserve))


def _observe(
    observer: Observer, instance: str, seconds: float, results: list[Document | SecretError]
) -> None:
    """One call's duration and class. The backend is up when it answered anything (a permanent
    error such as a 403 is an answer too), down when every result is a transient error
    (unreachable, a timeout, 5xx, throttled)."""
    errors = [r for r in results if isinstance(r, SecretError)]
    observer.request(instance, seconds, errors[0].kind if errors else None)
    observer.backend(instance, len(errors) < len(results) or any(not e.transient for e in errors))


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter (tenacity's, imported only once something is retried)."""
    from tenacity import wait_random_exponential

    class _State:  # the one field of tenacity.RetryCallState the wait strategy reads
        attempt_number = attempt

    return float(wait_random_exponential(multiplier=0.1, max=4)(_State()))  # type: ignore[arg-type]
