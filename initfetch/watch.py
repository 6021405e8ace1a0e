"""Watch mode: keep a render current. One more stage on top of resolve -> render -> write.

The schedule (initfetch.schedule) says what is due; a refresh re-resolves only
the documents that are due, through the same resolver (one read per document,
batching, retries and the deadline of a first render), re-renders everything
in memory, and writes only the files whose bytes changed (each atomically, then
the completion marker). An unchanged result writes nothing and notifies no one.

Dynamic secrets follow their lease (renewed at about two thirds of the TTL,
replaced ahead of expiry when they cannot be extended); the Vault token is
renewed the same way, or replaced by a new login. A replaced lease is revoked
only after the application was told and `on_change.revoke_grace` has passed.
A failed refresh keeps the last good render and is retried with backoff; the
status file (initfetch.watch_status) lets `healthcheck --max-stale` see it.
Log lines name secrets, references, classes and versions, never values.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from initfetch import schedule as sched
from initfetch import watch_status
from initfetch.errors import InitfetchError, SecretError
from initfetch.manifest import Manifest
from initfetch.manifest.watch import WatchConfig
from initfetch.outdir import marker as outdir_marker
from initfetch.outdir import writer
from initfetch.outdir.wipe import wipe_files
from initfetch.providers.base import FetchContext, Lease, Provider
from initfetch.redact import Redactor
from initfetch.reference import DocKey
from initfetch.resolve.pacing import AdaptiveLimit
from initfetch.resolve.resolver import DEFAULT_CONCURRENCY, Resolution, Resolved, Resolver
from initfetch.templating.render import Rendered, render

log = logging.getLogger("initfetch.watch")


@dataclass(frozen=True)
class Doc:
    """One document of one provider instance: the unit that is read, renewed or replaced."""

    instance: str
    doc: DocKey


@dataclass(frozen=True)
class Token:
    """The login token of one Vault instance."""

    instance: str


@dataclass
class Change:
    """What one refresh changed; names only."""

    secrets: list[str]
    files: list[str]
    env: list[str]
    rendered: Rendered


@dataclass
class _Revoke:
    at: float
    instance: str
    lease_id: str


@dataclass
class Watcher:
    manifest: Manifest
    environ: Mapping[str, str]
    redactor: Redactor
    config: WatchConfig
    instances: dict[str, Provider]  # shared with the first render's resolver: logged in already
    resolution: Resolution
    rendered: Rendered
    notify: Callable[[Change], None]
    out_dir: Path | None = None  # None: nothing is written (exec without files)
    allow_disk: bool = False
    timeout: float = 60.0
    concurrency: int = DEFAULT_CONCURRENCY
    clock: Callable[[], float] = time.monotonic
    schedule: sched.Schedule = field(default_factory=sched.Schedule)
    cycles: int = 0

    def __post_init__(self) -> None:
        self.values: dict[str, Any] = dict(self.resolution.values)
        self.info: dict[str, Resolved] = dict(self.resolution.info)
        self.docs: dict[Doc, list[str]] = {}
        for spec in self.manifest.secrets.values():
            if spec.ref is not None:
                self.docs.setdefault(Doc(spec.ref.scheme, spec.ref.doc), []).append(spec.name)
        self.leases: dict[Doc | Token, Lease] = {}
        self.revokes: list[_Revoke] = []
        self.expired: set[str] = set()
        self._previous: dict[str, Any] = {}  # the value before the current one, still masked
        self._status_written: dict[str, Any] | None = None
        self._pacing: dict[str, AdaptiveLimit] = {}
        self._plan(self.clock())
        self._status(self.clock())  # from now on the render counts as watched (--max-stale)

    # --- planning ---

    def _plan(self, now: float) -> None:
        for key, names in self.docs.items():
            lease = self._lease_of(names)
            if lease is not None and lease.duration > 0:
                self.leases[key] = lease
                self.schedule.lease(key, lease.duration, lease.renewable, now)
                continue
            conf = self.manifest.providers[key.instance]
            intervals = [self.config.refresh_for(n, key.instance, conf.type) for n in names]
            interval = min((i for i in intervals if i is not None), default=None)
            if interval is not None:
                self.schedule.poll(key, interval, now)
        for name in self.instances:
            if any(k.instance == name for k in self.docs):
                self._plan_token(name, now)

    def _plan_token(self, instance: str, now: float) -> None:
        inst = self.instances[instance]
        try:
            lease = inst.login_lease(self._ctx())
        except SecretError as e:
            log.warning(
                "cannot look up the %s of %s (%s): it is not renewed", inst.login_name, instance, e.kind
            )
            return
        if lease is not None:
            self.leases[Token(instance)] = lease
            self.schedule.lease(Token(instance), lease.duration, lease.renewable, now)

    def _lease_of(self, names: Iterable[str]) -> Lease | None:
        for name in names:
            info = self.info.get(name)
            if info is not None and info.lease is not None:
                return info.lease
        return None

    # --- running ---

    def run(self, stop: threading.Event) -> None:
        """Refresh until `stop` is set."""
        while not stop.is_set():
            wake = [t for t in (self.schedule.next_at(), self._next_revoke()) if t is not None]
            if wake:
                stop.wait(max(0.0, min(wake) - self.clock()))
            else:
                stop.wait()
            if not stop.is_set():
                self.cycle()

    def cycle(self) -> None:
        """Do everything that is due now."""
        now = self.clock()
        self.cycles += 1
        reads: set[Doc] = set()
        for entry in self.schedule.due(now):
            key = entry.key
            if isinstance(key, Token):
                reads |= self._token(key, entry.action, now)
            elif isinstance(key, Doc):
                if entry.action == sched.RENEW and self._renew(key, now):
                    continue
                reads.add(key)
        if reads:
            self.refresh(reads, self.clock())
        self._revoke_due(self.clock())
        self._status(self.clock())

    def _ctx(self) -> FetchContext:
        return FetchContext(time.monotonic() + self.timeout)

    # --- leases and tokens ---

    def _renew(self, key: Doc, now: float) -> bool:
        """Renew a dynamic secret's lease; False when it must be replaced instead."""
        lease = self.leases[key]
        try:
            granted = self.instances[key.instance].renew(lease, self._ctx())
        except SecretError as e:
            if e.transient:
                log.warning("renewing the lease of %s failed (%s); retrying", self._refs(key), e.kind)
                self.schedule.failed(key, now)
                return True
            log.info("the lease of %s cannot be renewed (%s); replacing it", self._refs(key), e.kind)
            self.schedule.refused(key, now)  # a failed replacement is retried as a replacement
            return False
        entry = self.schedule.renewed(key, granted.duration, now)
        # Keep the first TTL: every renewal asks for it again, and a shorter grant means max TTL.
        self.leases[key] = Lease(lease.id, lease.duration, granted.renewable)
        log.info(
            "renewed the lease of %s for %ds%s",
            self._refs(key),
            granted.duration,
            "; it reached its max TTL and will be replaced" if entry.action == sched.REPLACE else "",
        )
        return True

    def _token(self, key: Token, action: str, now: float) -> set[Doc]:
        """Renew the login token, or log in again; a new login replaces every lease of the old token."""
        lease = self.leases[key]
        inst = self.instances[key.instance]
        try:
            if action == sched.RENEW:
                granted = inst.renew_login(lease, self._ctx())
                self.schedule.renewed(key, granted.duration, now)
                log.info("renewed the %s of %s for %ds", inst.login_name, key.instance, granted.duration)
                return set()
            if not inst.can_login_again():
                log.warning(
                    "the %s of %s cannot be renewed further and was given as a token: it expires in %.0fs",
                    inst.login_name,
                    key.instance,
                    max(0.0, (self.schedule.entries[key].expires_at or now) - now),
                )
                self.schedule.remove(key)
                return set()
            new = inst.login_again(self._ctx())
        except SecretError as e:
            if action == sched.RENEW and not e.transient:
                log.info(
                    "the %s of %s cannot be renewed (%s); logging in again",
                    inst.login_name,
                    key.instance,
                    e.kind,
                )
                self.schedule.refused(key, now)
            else:
                log.warning(
                    "the %s of %s: %s failed (%s); retrying", inst.login_name, key.instance, action, e.kind
                )
                self.schedule.failed(key, now)
            return set()
        log.info("logged in to %s again for %s", inst.backend_name, key.instance)
        if new is None:
            self.schedule.remove(key)
        else:
            self.leases[key] = new
            self.schedule.lease(key, new.duration, new.renewable, now)
        # Leases belong to the token that created them and die with it: read them anew.
        return {k for k in self.docs if k.instance == key.instance and k in self.leases}

    def _revoke_due(self, now: float, everything: bool = False) -> None:
        keep = []
        for item in self.revokes:
            if not everything and item.at > now:
                keep.append(item)
                continue
            try:
                self.instances[item.instance].revoke(item.lease_id, self._ctx())
                log.info("revoked lease %s", item.lease_id)
            except SecretError as e:
                log.warning("revoking lease %s failed (%s); it ends at its TTL", item.lease_id, e.kind)
        self.revokes = keep

    def _revoke_tokens(self) -> None:
        """Tokens initfetch logged in for (not one it was given) die with it."""
        for key in [k for k in self.leases if isinstance(k, Token)]:
            inst = self.instances[key.instance]
            if not inst.owns_login():
                continue
            try:
                inst.revoke_login(self._ctx())
                log.info("revoked the %s of %s", inst.login_name, key.instance)
            except SecretError as e:
                log.warning(
                    "revoking the %s of %s failed (%s); it ends at its TTL",
                    inst.login_name,
                    key.instance,
                    e.kind,
                )

    def _next_revoke(self) -> float | None:
        return min((r.at for r in self.revokes), default=None)

    # --- refresh: resolve the subset, render, diff, write, notify ---

    def resolve(self, names: Iterable[str]) -> Resolution:
        """The core resolver on a subset of the manifest, sharing the logged-in provider instances."""
        wanted = set(names)
        subset = dataclasses.replace(
            self.manifest, secrets={n: s for n, s in self.manifest.secrets.items() if n in wanted}
        )
        resolver = Resolver(
            subset, self.environ, self.redactor, timeout=self.timeout, concurrency=self.concurrency
        )
        resolver.instances = self.instances  # shared, never closed here
        resolver.pacing = self._pacing  # what each backend's throttling taught carries over
        return resolver.resolve()

    def refresh(self, keys: set[Doc], now: float) -> bool:
        """Re-read `keys`; on success write what changed and notify. Returns whether it succeeded."""
        names = sorted({n for k in keys for n in self.docs[k]})
        deadline = time.monotonic() + self.timeout  # resolving and rendering share --timeout, as at first
        resolution: Resolution | None = None
        try:
            resolution = self.resolve(names)
            values = {k: v for k, v in self.values.items() if k not in names}
            values.update(resolution.values)
            info = {**self.info, **resolution.info}
            meta = {name: r.meta() for name, r in info.items()}
            rendered = render(
                self.manifest, values, meta, self.redactor, deadline=deadline, timeout=self.timeout
            )
            files = {d: b for d, b in rendered.files.items() if self.rendered.files.get(d) != b}
            if files and self.out_dir is not None:
                writer.write_all(
                    self.out_dir,
                    files,
                    self.manifest.outputs,
                    _marker(info, rendered),
                    allow_disk=self.allow_disk,
                )
        except InitfetchError as e:
            self._failed(keys, e, now)
            if resolution is not None:  # new leases that will not be used: revoke them now
                current = {lease.id for lease in self.leases.values()}
                unused = {
                    (r.provider, r.lease.id)
                    for r in resolution.info.values()
                    if r.lease is not None and r.lease.id not in current
                }
                self.revokes.extend(_Revoke(now, instance, lease_id) for instance, lease_id in unused)
            return False
        env = sorted(
            n
            for n in set(rendered.env) | set(self.rendered.env)
            if rendered.env.get(n) != self.rendered.env.get(n)
        )
        changed = [n for n in names if values.get(n) != self.values.get(n)]
        for name in changed:
            log.info(
                "secret %s changed: %s (%s)", name, info[name].ref, _versions(self.info.get(name), info[name])
            )
            self._previous[name] = self.values.get(name)
        replaced = self._reschedule(keys, info, now)
        self.values, self.info, self.rendered = values, info, rendered
        if changed:
            self._retire()
        for key in keys:
            for name in self.docs[key]:
                self.expired.discard(name)
        if not (files or env):
            log.debug("re-read %d document(s): nothing changed", len(keys))
        else:
            if files:
                log.info("rewrote %d changed file(s): %s", len(files), ", ".join(sorted(files)))
            self.notify(Change(changed, sorted(files), env, rendered))
        # Only now, after the application was told, may the old credentials go (after the grace).
        at = self.clock() + self.config.on_change.revoke_grace
        self.revokes.extend(_Revoke(at, k.instance, lease.id) for k, lease in replaced)
        return True

    def _reschedule(
        self, keys: set[Doc], info: Mapping[str, Resolved], now: float
    ) -> list[tuple[Doc, Lease]]:
        """Schedule the next read or renewal of each refreshed document; returns leases replaced."""
        replaced = []
        for key in keys:
            lease = None
            for name in self.docs[key]:
                if info[name].lease is not None:
                    lease = info[name].lease
            old = self.leases.get(key)
            if lease is not None and lease.duration > 0:
                if old is not None and old.id != lease.id:
                    replaced.append((key, old))
                self.leases[key] = lease
                self.schedule.lease(key, lease.duration, lease.renewable, now)
            else:
                entry = self.schedule.entries[key]
                self.schedule.poll(key, entry.interval or sched.BACKOFF_MAX, now)
        return replaced

    def _failed(self, keys: set[Doc], e: InitfetchError, now: float) -> None:
        for problem in e.problems:
            log.warning("refresh failed, keeping the last good render: %s", problem)
        for key in keys:
            self.schedule.failed(key, now)

    def _retire(self) -> None:
        """Bound the redactor: keep masking the current values and the ones they replaced
        (still in flight until the application reloads), forget older generations.

        Needs `Redactor.retire(keep)` (forget every form except those of `keep` and those
        registered since the previous retire, i.e. this render's derived forms); without
        it the redactor keeps every value ever seen.
        """
        retire = getattr(self.redactor, "retire", None)
        if callable(retire):
            retire([*self.values.values(), *self._previous.values()])

    def _refs(self, key: Doc) -> str:
        return f"{key.instance}://{key.doc}"

    # --- status and exit ---

    def _status(self, now: float) -> None:
        for entry in self.schedule.expired(now):
            if isinstance(entry.key, Doc):
                new = set(self.docs[entry.key]) - self.expired
                if new:
                    log.error(
                        "the lease of %s expired before it could be renewed or replaced",
                        self._refs(entry.key),
                    )
                self.expired |= new
        if self.out_dir is None:
            return
        since = self.schedule.stale_since()
        failing = [
            self._refs(e.key) if isinstance(e.key, Doc) else f"{e.key.instance} token"  # type: ignore[attr-defined]
            for e in self.schedule.entries.values()
            if e.failures
        ]
        wall_since = None if since is None else round(time.time() - (now - since), 3)
        body = watch_status.body(wall_since, sorted(self.expired), failing)
        if body == self._status_written:
            return
        try:
            watch_status.write(self.out_dir, body)
            self._status_written = body
        except OSError as e:
            log.warning("cannot write the watch status file: %s", e.strerror or type(e).__name__)

    def finish(self, *, revoke: bool, wipe: bool) -> None:
        """On exit: revoke replaced leases still in their grace (the application is gone),
        optionally every lease initfetch holds, and optionally the rendered files."""
        if revoke:
            self.revokes.extend(
                _Revoke(0.0, k.instance, lease.id) for k, lease in self.leases.items() if isinstance(k, Doc)
            )
        self._revoke_due(self.clock(), everything=True)
        if revoke:
            self._revoke_tokens()
        if wipe and self.out_dir is not None:
            wipe_files(self.out_dir, self.rendered.files)


def _versions(old: Resolved | None, new: Resolved) -> str:
    """`version 3 -> 4`, or the lease ids of a dynamic secret: never a value."""
    if new.lease is not None or (old is not None and old.lease is not None):
        before = old.lease.id if old is not None and old.lease is not None else "-"
        return f"lease {before} -> {new.lease.id if new.lease else '-'}"
    return f"version {(old.version if old else None) or '-'} -> {new.version or '-'}"


def _marker(info: Mapping[str, Resolved], rendered: Rendered) -> dict[str, Any]:
    return outdir_marker.marker_body(
        {
            name: {"ref": r.ref, "provider": r.provider, "version": r.version, "outcome": r.outcome}
            for name, r in info.items()
        },
        list(rendered.files),
        list(rendered.env),
    )
