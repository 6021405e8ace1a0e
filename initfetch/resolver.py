"""Resolve every secret of a manifest: one read per document, concurrently,
retried within one deadline, every failure reported together.

- References to the same document (same instance, path and version query) are
  served by ONE read. A dynamic Vault credential's username and password must
  come from the same lease, so this is correctness, not only speed.
- Work units (one document, or a batch for providers with `batch_size > 1`)
  run on daemon threads, bounded globally and per provider instance.
- Transient errors are retried with tenacity (exponential backoff with full
  jitter) until the deadline; a unit still hanging at the deadline is reported
  as unavailable, and its thread is abandoned (daemon) rather than waited for.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_random_exponential,
)

from initfetch import providers
from initfetch.errors import MissingKey, Problem, ResolveFailed, SecretError, Unavailable
from initfetch.logs import audit
from initfetch.manifest import Manifest, SecretSpec
from initfetch.providers.base import Document, FetchContext, Lease, Provider
from initfetch.redact import Redactor
from initfetch.reference import DocKey

log = logging.getLogger("initfetch.resolver")

OPTIONAL_KINDS = {"not-found", "missing-key"}  # what `optional`/`default` may stand in for


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


class _StillTransient(Exception):
    """Raised inside a tenacity attempt while some documents are still transient."""


@dataclass
class _Unit:
    instance: str
    docs: list[DocKey]
    results: dict[DocKey, Document | SecretError] = field(default_factory=dict)
    ms: dict[DocKey, int] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)


class Resolver:
    def __init__(
        self,
        manifest: Manifest,
        environ: Mapping[str, str],
        redactor: Redactor,
        *,
        timeout: float = 60.0,
        concurrency: int = 16,
    ) -> None:
        self.manifest = manifest
        self.environ = environ
        self.redactor = redactor
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.instances: dict[str, Provider] = {}

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
        ctx = FetchContext(time.monotonic() + self.timeout)
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
        overall = threading.BoundedSemaphore(self.concurrency)
        per_instance = {
            name: threading.BoundedSemaphore(max(1, inst.max_concurrency))
            for name, inst in self.instances.items()
        }
        for unit in units:
            thread = threading.Thread(
                target=self._run_unit,
                args=(unit, ctx, overall, per_instance[unit.instance]),
                name=f"fetch-{unit.instance}",
                daemon=True,  # a hung backend must not keep the process past the deadline
            )
            thread.start()
        for unit in units:
            unit.done.wait(max(0.0, ctx.remaining()) + 0.5)

    def _run_unit(
        self,
        unit: _Unit,
        ctx: FetchContext,
        overall: threading.BoundedSemaphore,
        mine: threading.BoundedSemaphore,
    ) -> None:
        inst = self.instances[unit.instance]
        pending = list(unit.docs)
        started = time.monotonic()

        def attempt_once() -> None:
            nonlocal pending
            with overall, mine:
                got = _call(inst, pending, ctx)
            now_ms = int((time.monotonic() - started) * 1000)
            unit.results.update(got)
            for doc in pending:
                unit.ms[doc] = now_ms
            pending = [d for d in pending if isinstance(got[d], SecretError) and got[d].transient]  # type: ignore[union-attr]
            if pending:
                raise _StillTransient

        backoff = wait_random_exponential(multiplier=0.1, max=4)
        reserve = last_attempt_reserve(self.timeout)

        def wait(state: RetryCallState) -> float:
            # Never sleep past the point where one last attempt still fits before the deadline.
            return max(0.0, min(backoff(state), ctx.remaining() - reserve))

        retrying = Retrying(
            retry=retry_if_exception_type(_StillTransient),
            wait=wait,
            stop=lambda state: ctx.remaining() < reserve,
            before_sleep=lambda state: _log_retry(unit, pending, state),
            reraise=True,
        )
        try:
            retrying(attempt_once)
        except _StillTransient:
            pass  # the last transient errors stay in unit.results
        finally:
            unit.done.set()

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
            audit(
                secret=spec.name,
                ref=resolved.ref,
                provider=resolved.provider,
                type=self.manifest.providers[resolved.provider].type,
                version=resolved.version,
                lease_id=resolved.lease.id if resolved.lease else None,
                duration_ms=ms,
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
            return {docs[0]: inst.fetch(docs[0], ctx)}
        got = inst.fetch_many(docs, ctx)
        return {d: got.get(d) or SecretError("provider returned no result") for d in docs}
    except SecretError as e:
        return dict.fromkeys(docs, e)
    except Exception as e:  # a provider bug or an unmapped SDK error: fail, do not retry
        err = SecretError(f"unexpected {type(e).__name__} from the {inst.type_name} provider")
        return dict.fromkeys(docs, err)


def _log_retry(unit: _Unit, pending: Iterable[DocKey], state: RetryCallState) -> None:
    first = next(iter(pending), None)
    reason = unit.results.get(first) if first is not None else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.info(
        "waiting for %s (%s); attempt %d, retrying in %.1fs",
        unit.instance,
        reason,
        state.attempt_number,
        wait,
    )


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
