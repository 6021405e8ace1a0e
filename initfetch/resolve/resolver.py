"""Resolve the secrets of a manifest: one read per document, concurrently, retried within
one deadline, every failure reported together.

References to the same document (same instance, path and version query) are
served by ONE read: a dynamic Vault credential's username and password must
come from the same lease, so this is correctness, not only speed. The reads run
on initfetch.resolve.scheduler; what each reference takes from its document
(`#key`, optional/default) is decided here, and audited once all values are
registered with the redactor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from initfetch import providers
from initfetch.errors import Problem, ResolveFailed, SecretError, Unavailable, WriteUncertain
from initfetch.limits import DEFAULT_CONCURRENCY
from initfetch.logs import audit
from initfetch.manifest import Manifest, SecretSpec
from initfetch.observe import NULL, Observer
from initfetch.providers.base import Document, FetchContext, Provider
from initfetch.redact import Redactor
from initfetch.reference import DocKey
from initfetch.resolve.outage import Outages
from initfetch.resolve.pacing import AdaptiveLimit
from initfetch.resolve.pool import WorkerPool
from initfetch.resolve.results import Resolution, Resolved
from initfetch.resolve.scheduler import Fetching, Unit, run_units
from initfetch.resolve.values import check_text, select_key

log = logging.getLogger("initfetch.resolver")

OPTIONAL_KINDS = {"not-found", "missing-key"}  # what `optional`/`default` may stand in for

Group = tuple[str, DocKey]  # (provider instance, document): one read


class Resolver:
    """Resolves a manifest's secrets, all or some, as often as asked.

    The provider instances it makes (and their logins) and what pacing learned
    of each backend are kept between calls, so a watcher resolving a few due
    secrets again reuses them.
    """

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
        self.pool = WorkerPool(self.concurrency)
        self.outages = Outages()
        self.stop: threading.Event | None = None  # a watcher's: every wait ends when it is set
        self.observer: Observer = NULL  # --listen's metrics: each call's duration, backends up/down

    def instance(self, name: str) -> Provider:
        inst = self.instances.get(name)
        if inst is None:
            conf = self.manifest.providers[name]
            providers.require_sdk(conf.type)
            inst = providers.provider_class(conf.type)(name, conf.options, self.environ)
            self.instances[name] = inst
        return inst

    def resolve(self, names: Collection[str] | None = None) -> Resolution:
        """Resolve every secret (or those in `names`); raise ResolveFailed listing every failure."""
        specs = [
            s
            for s in self.manifest.secrets.values()
            if s.ref is not None and (names is None or s.name in names)
        ]
        groups: dict[Group, list[SecretSpec]] = {}
        for spec in specs:
            assert spec.ref is not None
            groups.setdefault((spec.ref.scheme, spec.ref.doc), []).append(spec)
        limit = self.manifest.limits.secret_size
        ctx = FetchContext(time.monotonic() + self.timeout, max_size=limit, stop=self.stop)
        units = self._units(groups)
        for name in {u.instance for u in units}:
            if name not in self.pacing:
                self.pacing[name] = AdaptiveLimit(min(self.concurrency, self.instances[name].concurrency))
        run_units(units, ctx, Fetching(self.instances, self.pacing, self.pool, self.outages, self.observer))
        documents: dict[Group, tuple[Document | SecretError, int]] = {}
        for unit in units:
            for doc in unit.docs:
                result = unit.results.get(doc) or _no_answer(doc, self.timeout)
                documents[(unit.instance, doc)] = (result, unit.ms.get(doc, int(self.timeout * 1000)))
        return self._select(specs, groups, documents)

    def _units(self, groups: Mapping[Group, list[SecretSpec]]) -> list[Unit]:
        by_instance: dict[str, list[DocKey]] = {}
        for instance, doc in groups:
            by_instance.setdefault(instance, []).append(doc)
        units: list[Unit] = []
        for name, docs in by_instance.items():
            size = max(1, self.instance(name).batch_size)
            for i in range(0, len(docs), size):
                batch = docs[i : i + size]
                units.append(Unit(name, batch, counts={d: len(groups[(name, d)]) for d in batch}))
        return units

    def _select(
        self,
        specs: Sequence[SecretSpec],
        groups: Mapping[Group, list[SecretSpec]],
        documents: Mapping[Group, tuple[Document | SecretError, int]],
    ) -> Resolution:
        values: dict[str, Any] = {}
        info: dict[str, Resolved] = {}
        problems: list[Problem] = []
        failures: dict[str, tuple[str, Problem]] = {}
        for spec in specs:
            assert spec.ref is not None
            group = (spec.ref.scheme, spec.ref.doc)
            result, ms = documents[group]
            resolved = Resolved(
                spec.name,
                str(spec.ref),
                spec.ref.scheme,
                "ok",
                duration_ms=ms,
                shared_read=len(groups[group]) > 1,
            )
            error = self._take(spec, result, resolved, values)
            if error is not None:
                problem = Problem(spec.loc, f"{spec.name}: {error.kind}: {spec.ref}: {error}")
                problems.append(problem)
                failures[spec.name] = (error.kind, problem)
            info[spec.name] = resolved
        # Audit only once every value is registered: the redactor then builds its
        # matcher once for all these lines, not once per value.
        for spec in specs:
            self._audit(info[spec.name])
        if problems:
            raise ResolveFailed(problems, failures=failures)
        return Resolution(values, info, self.instances)

    def _take(
        self, spec: SecretSpec, result: Document | SecretError, resolved: Resolved, values: dict[str, Any]
    ) -> SecretError | None:
        """What `spec` takes from its document into `values`; the error if it takes nothing."""
        assert spec.ref is not None
        try:
            if isinstance(result, SecretError):
                raise result
            resolved.version, resolved.lease, resolved.metadata = (
                result.version,
                result.lease,
                result.metadata,
            )
            value = select_key(result.value, spec.ref.key, str(spec.ref)) if spec.ref.key else result.value
            check_text(value)
            values[spec.name] = value
            if spec.ref.key is None and result.public and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k not in result.public}
            self.redactor.add(value, spec.name)
        except SecretError as e:
            if spec.optional and e.kind in OPTIONAL_KINDS:
                resolved.outcome = "default" if spec.default is not None else "absent"
                if spec.default is not None:
                    values[spec.name] = spec.default
                return None
            resolved.outcome = e.kind
            return e
        return None

    def _audit(self, resolved: Resolved) -> None:
        lease = resolved.lease
        audit(
            secret=resolved.name,
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

    def close(self) -> None:
        for inst in self.instances.values():
            try:
                inst.close()
            except Exception as e:  # closing must never mask the run's outcome
                log.debug("closing %s failed: %s", inst.name, type(e).__name__)


def _no_answer(doc: DocKey, timeout: float) -> SecretError:
    """What a document that got no answer by the deadline failed with. A write may be in
    flight still: it may have happened, and is not made again."""
    if doc.write is not None:
        return WriteUncertain(
            f"no answer to the write within the {timeout:g}s deadline (--timeout): "
            "the write may have happened; not repeated"
        )
    return Unavailable(f"no answer within the {timeout:g}s deadline (--timeout)")
