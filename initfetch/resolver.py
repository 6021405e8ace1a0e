"""Resolve every secret of a manifest: one read per document, concurrently,
retried within one deadline, every failure reported together.

- References to the same document (same instance, path and version query) are
  served by ONE read. A dynamic Vault credential's username and password must
  come from the same lease, so this is correctness, not only speed.
- Work units (one document, or a batch for providers with `batch_size > 1`)
  run on a pool of `--concurrency` daemon threads, so the total in flight is
  really bounded; each provider instance has its own adaptive limit
  (initfetch.pacing: halves on throttling, honours Retry-After, grows back).
- Transient errors are retried with exponential backoff and full jitter
  (tenacity's, imported at the first retry) until the deadline; a unit waiting
  for its retry holds no thread. A unit still hanging at the deadline is
  reported as unavailable and its thread abandoned (daemon), not waited for.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from initfetch import providers
from initfetch.errors import (
    BadValue,
    MissingKey,
    Problem,
    ResolveFailed,
    SecretError,
    TooLarge,
    Unavailable,
)
from initfetch.limits import exceeded
from initfetch.logs import audit
from initfetch.manifest import Manifest, SecretSpec
from initfetch.pacing import AdaptiveLimit
from initfetch.providers.base import Document, FetchContext, Lease, Provider
from initfetch.redact import Redactor
from initfetch.reference import DocKey

log = logging.getLogger("initfetch.resolver")

OPTIONAL_KINDS = {"not-found", "missing-key"}  # what `optional`/`default` may stand in for
# Threads for the whole run (`--concurrency`): enough that 300 reads at 20 ms take a
# handful of round trips. Each instance has its own ceiling on top (`concurrency:`).
DEFAULT_CONCURRENCY = 64


def last_attempt_reserve(timeout: float) -> float:
    """Seconds kept for the final attempt: the last backoff sleep ends this long before
    the deadline. A tenth of the timeout, between 0.5 s and 5 s."""
    return min(5.0, max(0.5, timeout / 10))


@dataclass
class Resolved:
    """Where one secret came from; never its value."""

    name: str
    ref: str
    provider: str
    outcome: str  # ok | default | absent | a SecretError kind
    version: str | None = None
    lease: Lease | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0
    shared_read: bool = False  # served by a read another reference also used

    def meta(self) -> dict[str, Any]:
        """What templates see as `meta.<name>`."""
        lease = self.lease
        return {
            "provider": self.provider,
            "version": self.version,
            "lease_id": lease.id if lease else None,
            "lease_duration": lease.duration if lease else None,
            "renewable": lease.renewable if lease else None,
            "metadata": self.metadata,
        }


@dataclass
class Resolution:
    values: dict[str, Any]
    info: dict[str, Resolved]
    instances: dict[str, Provider]


@dataclass
class _Unit:
    instance: str
    docs: list[DocKey]
    results: dict[DocKey, Document | SecretError] = field(default_factory=dict)
    ms: dict[DocKey, int] = field(default_factory=dict)
    pending: list[DocKey] = field(default_factory=list)  # still to read (all, then the transient ones)
    attempts: int = 0
    started: float = 0.0


class Resolver:
    def __init__(
        self,
        manifest: Manifest,
        environ: Mapping[str, str],
        redactor: Redactor,
        *,
        timeout: float = 60.0,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.manifest = manifest
        self.environ = environ
        self.redactor = redactor
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.instances: dict[str, Provider] = {}
        self.pacing: dict[str, AdaptiveLimit] = {}

    def instance(self, name: str) -> Provider:
        inst = self.instances.get(name)
        if inst is None:
            conf = self.manifest.providers[name]
            providers.require_sdk(conf.type)
            inst = providers.provider_class(conf.type)(name, conf.options, self.environ)
            self.instances[name] = inst
        return inst

    def resolve(self) -> Resolution:
        specs = [s for s in self.manifest.secrets.values() if s.ref is not None]
        groups: dict[tuple[str, DocKey], list[SecretSpec]] = {}
        for spec in specs:
            assert spec.ref is not None
            groups.setdefault((spec.ref.scheme, spec.ref.doc), []).append(spec)
        ctx = FetchContext(time.monotonic() + self.timeout, max_size=self.manifest.limits.secret_size)
        units = self._units(groups)
        self._run(units, ctx)
        documents: dict[tuple[str, DocKey], tuple[Document | SecretError, int]] = {}
        for unit in units:
            for doc in unit.docs:
                result = unit.results.get(doc) or Unavailable(
                    f"no answer within the {self.timeout:g}s deadline (--timeout)"
                )
                documents[(unit.instance, doc)] = (result, unit.ms.get(doc, int(self.timeout * 1000)))
        return self._select(specs, groups, documents)

    def _units(self, groups: Mapping[tuple[str, DocKey], list[SecretSpec]]) -> list[_Unit]:
        by_instance: dict[str, list[DocKey]] = {}
        for instance, doc in groups:
            by_instance.setdefault(instance, []).append(doc)
        units: list[_Unit] = []
        for name, docs in by_instance.items():
            size = max(1, self.instance(name).batch_size)
            units.extend(_Unit(name, docs[i : i + size]) for i in range(0, len(docs), size))
        return units

    def _run(self, units: list[_Unit], ctx: FetchContext) -> None:
        for name in {u.instance for u in units}:
            if name not in self.pacing:
                self.pacing[name] = AdaptiveLimit(min(self.concurrency, self.instances[name].concurrency))
        scheduler = _Scheduler(units, self.pacing, ctx, self.timeout)
        for i in range(min(self.concurrency, len(units))):
            # Daemon threads: a hung backend must not keep the process past the deadline.
            threading.Thread(
                target=scheduler.work, args=(self.instances,), name=f"fetch-{i}", daemon=True
            ).start()
        scheduler.wait()

    def _select(
        self,
        specs: Sequence[SecretSpec],
        groups: Mapping[tuple[str, DocKey], list[SecretSpec]],
        documents: Mapping[tuple[str, DocKey], tuple[Document | SecretError, int]],
    ) -> Resolution:
        values: dict[str, Any] = {}
        info: dict[str, Resolved] = {}
        problems: list[Problem] = []
        kinds: set[str] = set()
        for spec in specs:
            assert spec.ref is not None
            group_key = (spec.ref.scheme, spec.ref.doc)
            result, ms = documents[group_key]
            resolved = Resolved(
                spec.name,
                str(spec.ref),
                spec.ref.scheme,
                "ok",
                duration_ms=ms,
                shared_read=len(groups[group_key]) > 1,
            )
            try:
                if isinstance(result, SecretError):
                    raise result
                resolved.version, resolved.lease, resolved.metadata = (
                    result.version,
                    result.lease,
                    result.metadata,
                )
                value = (
                    select_key(result.value, spec.ref.key, str(spec.ref)) if spec.ref.key else result.value
                )
                check_text(value)
                values[spec.name] = value
                self.redactor.add(value, spec.name)
            except SecretError as e:
                if spec.optional and e.kind in OPTIONAL_KINDS:
                    resolved.outcome = "default" if spec.default is not None else "absent"
                    if spec.default is not None:
                        values[spec.name] = spec.default
                else:
                    resolved.outcome = e.kind
                    kinds.add(e.kind)
                    problems.append(Problem(spec.loc, f"{spec.name}: {e.kind}: {spec.ref}: {e}"))
            info[spec.name] = resolved
        # Audit only once every value is registered: the redactor then builds its
        # matcher once for all these lines, not once per value.
        for spec in specs:
            resolved = info[spec.name]
            lease = resolved.lease
            audit(
                secret=spec.name,
                ref=resolved.ref,
                provider=resolved.provider,
                type=self.manifest.providers[resolved.provider].type,
                version=resolved.version,
                lease_id=lease.id if lease else None,
                lease_duration=lease.duration if lease else None,
                renewable=lease.renewable if lease else None,
                duration_ms=resolved.duration_ms,
                shared_read=resolved.shared_read,
                outcome=resolved.outcome,
            )
        if problems:
            raise ResolveFailed(problems, kinds=kinds)
        return Resolution(values, info, self.instances)

    def close(self) -> None:
        for inst in self.instances.values():
            try:
                inst.close()
            except Exception as e:  # closing must never mask the run's outcome
                log.debug("closing %s failed: %s", inst.name, type(e).__name__)


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


def check_text(value: Any) -> None:
    """Raise BadValue if a string in `value` cannot be written as UTF-8 (lone surrogates)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise BadValue(
                        "the value holds a character that is not valid text (a lone surrogate)"
                    ) from None
        elif isinstance(item, dict):
            stack.extend(item.values())
            stack.extend(item.keys())
        elif isinstance(item, list):
            stack.extend(item)


def document_size(value: Any, stop: int) -> int:
    """Bytes a value takes as text (JSON-like values: their leaves); stops counting past `stop`."""
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        return len(value) if len(value) > stop else len(value.encode("utf-8", "surrogatepass"))
    total = 0
    stack = [value]
    while stack and total <= stop:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
            total += sum(len(str(k)) for k in item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str | bytes):
            total += document_size(item, stop)
        else:
            total += len(str(item))
    return total


class _Scheduler:
    """Hands units to worker threads when their instance has room; requeues transient failures.

    One lock and one condition for everything: the work per decision is tiny
    next to a network round trip.
    """

    def __init__(
        self, units: list[_Unit], pacing: Mapping[str, AdaptiveLimit], ctx: FetchContext, timeout: float
    ) -> None:
        self.ctx = ctx
        self.pacing = pacing
        self.reserve = last_attempt_reserve(timeout)
        self.ready: dict[str, deque[_Unit]] = {}
        for unit in units:
            unit.pending = list(unit.docs)
            self.ready.setdefault(unit.instance, deque()).append(unit)
        self.delayed: list[tuple[float, int, _Unit]] = []  # (not before, tie-break, unit)
        self.open = len(units)
        self.cond = threading.Condition()

    def wait(self) -> None:
        with self.cond:
            while self.open and self.ctx.remaining() > -0.5:
                self.cond.wait(max(0.01, self.ctx.remaining() + 0.5))

    def work(self, instances: Mapping[str, Provider]) -> None:
        while (taken := self._take()) is not None:
            unit, generation = taken
            got = _call(instances[unit.instance], unit.pending, self.ctx)
            self._finished(unit, generation, got)

    def _take(self) -> tuple[_Unit, int] | None:
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

    def _finished(self, unit: _Unit, generation: int, got: Mapping[DocKey, Document | SecretError]) -> None:
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
            self.cond.notify_all()
        if delay is not None:
            reason = unit.results.get(unit.pending[0])
            log.info(
                "waiting for %s (%s); attempt %d, retrying in %.1fs",
                unit.instance,
                reason,
                unit.attempts,
                delay,
            )

    def _retry_delay(self, unit: _Unit, throttle: Unavailable | None, now: float) -> float | None:
        """Seconds until the unit's next attempt, or None when it is finished (or out of time)."""
        left = self.ctx.deadline - now
        if not unit.pending or left < self.reserve:
            return None
        delay = _backoff(unit.attempts)
        if throttle is not None and throttle.retry_after:
            delay = max(delay, throttle.retry_after)
        # Never sleep past the point where one last attempt still fits before the deadline.
        return max(0.0, min(delay, left - self.reserve))


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter (tenacity's, imported only once something is retried)."""
    from tenacity import wait_random_exponential

    class _State:  # the one field of tenacity.RetryCallState the wait strategy reads
        attempt_number = attempt

    return float(wait_random_exponential(multiplier=0.1, max=4)(_State()))  # type: ignore[arg-type]


def select_key(value: Any, key: tuple[str, ...], ref: str) -> Any:
    """Walk `#key` / `#/a/b` into a JSON-like value; str/bytes are parsed as JSON first."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise MissingKey("the value is binary, so it has no keys") from None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise MissingKey(f"the value is not JSON, so it has no key '{_show(key)}'") from None
    walked: list[str] = []
    for part in key:
        if isinstance(value, dict):
            if part not in value:
                keys = ", ".join(sorted(map(str, value))[:20]) or "none"
                where = f" under '{_show(tuple(walked))}'" if walked else ""
                raise MissingKey(f"no key '{part}'{where} (keys there: {keys})")
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise MissingKey(f"'{_show(tuple(walked)) or '/'}' is not an object, so it has no key '{part}'")
        walked.append(part)
    return value


def _show(key: tuple[str, ...]) -> str:
    return key[0] if len(key) == 1 else "/" + "/".join(key)
