"""The watcher: keeps a render current, one more stage on top of the pipeline.

The schedule (schedule.py) says what is due; the lease keeper (keeper.py)
renews leases (together, on the resolver's pool) and the login; a refresh
re-resolves only the documents that are due through the same pipeline (one
read per document, batching, retries and the deadline of a first render),
re-renders everything in memory with the templates compiled once, and writes
only the files whose bytes changed (each atomically, then the completion
marker). An unchanged result writes nothing and notifies no one (notify.py).

Under faults: a failed refresh keeps the last good render and is retried with
capped backoff; an outage is logged as one story (resolve/outage.py), a failing
secret once per cause; a file changed under the watcher is written back; a
login that changed (a new login after the token was revoked) makes every lease
of the old one be read again. Every wait ends at once when `request_stop` is
called. The status file (status.py) lets `healthcheck` judge staleness by
itself, whatever state this loop is in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from initfetch.errors import InitfetchError, ResolveFailed, WriteFailed
from initfetch.manifest.watch import WatchConfig
from initfetch.outdir.heal import Fingerprint, changed
from initfetch.outdir.wipe import wipe_files
from initfetch.pipeline import Pipeline, Result
from initfetch.providers.base import Lease
from initfetch.resolve.results import Resolution, Resolved
from initfetch.templating.render import Rendered
from initfetch.watch import schedule as sched
from initfetch.watch.failures import Failures
from initfetch.watch.keeper import Calls, Doc, LeaseKeeper, Login
from initfetch.watch.status import StatusFile

log = logging.getLogger("initfetch.watch")

OUTAGE_SUMMARY_EVERY = 60.0  # seconds between "still waiting" lines while a backend is down
HEAL_EVERY_MAX = 60.0  # rendered files are checked at least this often (and after every refresh)
STUCK_AFTER = 60.0  # a cycle at work longer than this plus twice --timeout: the loop is stuck


@dataclass
class Change:
    """What one refresh changed; names only."""

    secrets: list[str]
    files: list[str]
    env: list[str]
    rendered: Rendered


class Watcher:
    def __init__(
        self,
        pipeline: Pipeline,
        first: Result,
        notify: Callable[[Change], None],
        *,
        config: WatchConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.manifest = pipeline.manifest
        self.redactor = pipeline.redactor
        self.config = config or pipeline.manifest.watch
        self.notify = notify
        self.clock = clock
        self.stop = threading.Event()
        self._wake = threading.Event()  # a stop, or SIGHUP's "refresh everything now"
        self._refresh_all = False
        self.schedule = sched.Schedule()
        self.instances = pipeline.resolver.instances  # logged in already by the first render
        self.observer = pipeline.observer
        resolver = pipeline.resolver
        resolver.stop = self.stop
        resolver.outages.every = OUTAGE_SUMMARY_EVERY
        calls = Calls(self.instances, resolver.pool, pipeline.settings.timeout, self.stop)
        self.keeper = LeaseKeeper(calls, self.schedule, clock)
        self.keeper.observer = self.observer
        self.failures = Failures(OUTAGE_SUMMARY_EVERY, clock)
        self.out_dir = pipeline.settings.out_dir  # None: nothing is written (exec without files)
        self.status = StatusFile(self.out_dir) if self.out_dir is not None else None
        self._write_lock = threading.Lock()  # a write, or the wipe on exit: never both
        self._closed = False
        self.cycles = 0
        self.values: dict[str, Any] = dict(first.resolution.values)
        self.info: dict[str, Resolved] = dict(first.resolution.info)
        self.rendered = first.rendered
        self.prints: dict[str, Fingerprint] = dict(first.written.prints) if first.written else {}
        self.docs: dict[Doc, list[str]] = {}
        for spec in self.manifest.secrets.values():
            if spec.ref is not None:
                self.docs.setdefault(Doc(spec.ref.scheme, spec.ref.doc), []).append(spec.name)
        self.expired: set[str] = set()
        self._previous: dict[str, Any] = {}  # the value before the current one, still masked
        self._logins = {name: inst.login_generation for name, inst in self.instances.items()}
        self._logins_planned = False
        self._thread: threading.Thread | None = None  # while run() runs
        self._busy_since: float | None = None  # when the cycle at work began
        self._plan(self.clock())
        self._update_status(self.clock())  # from now on the render counts as watched (--max-stale)
        self.observer.watching(self)

    def _plan(self, now: float) -> None:
        polls = []
        for key, names in self.docs.items():
            lease = self._lease_of(names, self.info)
            if lease is not None and lease.duration > 0:
                self.keeper.keep(key, lease, now)
                continue
            conf = self.manifest.providers[key.instance]
            intervals = [self.config.refresh_for(n, key.instance, conf.type) for n in names]
            interval = min((i for i in intervals if i is not None), default=None)
            if interval is not None:
                self.schedule.poll(key, interval, now)
                polls.append(interval)
        self.heal_every = min([HEAL_EVERY_MAX, *polls])
        self._next_heal = now + self.heal_every

    @staticmethod
    def _lease_of(names: Iterable[str], info: Mapping[str, Resolved]) -> Lease | None:
        lease = None
        for name in names:
            r = info.get(name)
            if r is not None and r.lease is not None:
                lease = r.lease
        return lease

    # --- running ---

    def request_stop(self) -> None:
        """Stop the loop: every wait, retry and request wait ends at once (a signal handler may call this)."""
        self.stop.set()
        self._wake.set()

    def request_refresh(self) -> None:
        """Re-read every static secret and renew every lease now (SIGHUP)."""
        self._refresh_all = True
        self._wake.set()

    def _plan_logins(self) -> None:
        """Keep each instance's login alive: asks the backends, so it runs on the watcher's
        thread (a backend that hangs must not hold up the main thread's signal handling)."""
        self._logins_planned = True
        for name in self.instances:
            if any(k.instance == name for k in self.docs):
                self.keeper.keep_login(name, self.clock())

    def alive(self) -> bool:
        """The loop runs (`/healthz`): its thread is there, and no cycle has been at work for
        longer than a cycle can take (every call in it ends at --timeout's deadline)."""
        thread, busy = self._thread, self._busy_since
        if thread is None or not thread.is_alive():
            return False
        return busy is None or time.monotonic() - busy <= STUCK_AFTER + 2 * self.pipeline.settings.timeout

    def run(self) -> None:
        """Refresh until `request_stop`."""
        self._thread = threading.current_thread()
        try:
            self._loop()
        finally:
            self._thread = None

    def _loop(self) -> None:
        if not self._logins_planned:
            self._plan_logins()
        while not self.stop.is_set():
            wake = [
                t
                for t in (self.schedule.next_at(), self.keeper.next_revoke(), self._next_heal)
                if t is not None
            ]
            self._wake.wait(max(0.0, min(wake) - self.clock()))
            self._wake.clear()
            if not self.stop.is_set():
                self._busy_since = time.monotonic()
                self.cycle()
                self._busy_since = None

    def cycle(self) -> None:
        """Do everything that is due now."""
        if not self._logins_planned:
            self._plan_logins()
        now = self.clock()
        self.cycles += 1
        reads, renewals = self._due(now)
        if renewals:
            reads |= self.keeper.renew_all(renewals, now)
        reads |= self._after_new_logins(now)
        if reads and not self.stop.is_set():
            self.refresh(reads, self.clock())
        if self.stop.is_set():
            return
        self.keeper.revoke_due(self.clock())
        if reads or self.clock() >= self._next_heal:
            self.heal()
        self._update_status(self.clock())

    def _due(self, now: float) -> tuple[set[Doc], set[Doc]]:
        """What to read and which leases to renew now; logins are renewed (or replaced) here."""
        reads: set[Doc] = set()
        renewals: set[Doc] = set()
        refresh_all, self._refresh_all = self._refresh_all, False
        entries = self.schedule.entries.values() if refresh_all else self.schedule.due(now, ahead=True)
        for entry in list(entries):
            key = entry.key
            if isinstance(key, Login):
                self.keeper.login(key, entry.action, now)
            elif isinstance(key, Doc):
                (renewals if entry.action == sched.RENEW else reads).add(key)
        return reads, renewals

    def _after_new_logins(self, now: float) -> set[Doc]:
        """Instances that logged in again since the last look (a scheduled replacement, or a token
        rejected during a read): the leases of the old login may be gone with it, read them again."""
        reads: set[Doc] = set()
        for name, inst in self.instances.items():
            generation = inst.login_generation
            if generation != self._logins.get(name, generation):
                reads |= self.keeper.leased(name)
                if Login(name) not in self.schedule.entries:
                    self.keeper.keep_login(name, now)
            self._logins[name] = generation
        return reads

    # --- refresh: resolve the subset, render, diff, write, notify ---

    def refresh(self, keys: set[Doc], now: float) -> bool:
        """Re-read `keys`; on success write what changed and notify. Returns whether it succeeded."""
        names = sorted({n for k in keys for n in self.docs[k]})
        deadline = time.monotonic() + self.pipeline.settings.timeout  # resolving and rendering share it
        resolution: Resolution | None = None
        try:
            resolution = self.pipeline.resolve(names)
            values = {k: v for k, v in self.values.items() if k not in names}
            values.update(resolution.values)
            info = {**self.info, **resolution.info}
            if self._unchanged(names, resolution):
                rendered, files = self.rendered, {}  # same values, same meta: the same render
            else:
                rendered = self.pipeline.render(values, info, deadline)
                files = {d: b for d, b in rendered.files.items() if self.rendered.files.get(d) != b}
            if files:
                self._write(info, rendered, files)
        except InitfetchError as e:
            self._failed(keys, e, now)
            if resolution is not None:  # new leases that will not be used: revoke them now
                self.keeper.unused(
                    ((r.provider, r.lease) for r in resolution.info.values() if r.lease is not None), now
                )
            return False
        for key in keys:
            self.observer.refresh(key.instance, None)
        self.failures.resolved(names)
        changed_secrets = [n for n in names if values.get(n) != self.values.get(n)]
        for name in changed_secrets:
            log.info(
                "secret %s changed: %s%s", name, info[name].ref, _versions(self.info.get(name), info[name])
            )
            self._previous[name] = self.values.get(name)
        replaced = self._reschedule(keys, info, now)
        env = _changed_env(self.rendered, rendered)
        self.values, self.info, self.rendered = values, info, rendered
        if changed_secrets:
            # Bound the redactor: keep masking the current values and the ones they replaced
            # (in flight until the application reloads), forget older generations.
            self.redactor.retire([*self.values.values(), *self._previous.values()])
        for key in keys:
            self.expired.difference_update(self.docs[key])
        if not (files or env):
            log.debug("re-read %d document(s): nothing changed", len(keys))
        else:
            if files:
                log.info("rewrote %d changed file(s): %s", len(files), ", ".join(sorted(files)))
            self.notify(Change(changed_secrets, sorted(files), env, rendered))
        # Only now, after the application was told, may the old credentials go (after the grace).
        self.keeper.retire(replaced, self.clock() + self.config.on_change.revoke_grace)
        return True

    def _unchanged(self, names: Iterable[str], resolution: Resolution) -> bool:
        """Whether every re-read secret has the value and the `meta` it had: templates see
        nothing else, so the render would be the one in place (values are compared first:
        the steady state of a watcher is a refresh that changes nothing)."""
        for name in names:
            if resolution.values.get(name) != self.values.get(name) or (name in resolution.values) != (
                name in self.values
            ):
                return False
            new, old = resolution.info.get(name), self.info.get(name)
            if new is None or old is None or new.meta() != old.meta():
                return False
        return True

    def _write(self, info: Mapping[str, Resolved], rendered: Rendered, files: Mapping[str, bytes]) -> None:
        """Write through the pipeline, unless the watcher is closing (the wipe on exit must win)."""
        if self.out_dir is None:
            return
        with self._write_lock:
            if self._closed:
                return
            written = self.pipeline.write(info, rendered, files)
        self.prints.update(written.prints)

    def _reschedule(
        self, keys: set[Doc], info: Mapping[str, Resolved], now: float
    ) -> list[tuple[Doc, Lease]]:
        """Schedule the next read or renewal of each refreshed document; returns leases replaced."""
        replaced = []
        for key in keys:
            lease = self._lease_of(self.docs[key], info)
            if lease is not None and lease.duration > 0:
                old = self.keeper.reread(key, lease, now)
                if old is not None:
                    replaced.append((key, old))
            else:
                entry = self.schedule.entries[key]
                self.schedule.poll(key, entry.interval or sched.BACKOFF_MAX, now)
        return replaced

    def _failed(self, keys: set[Doc], e: InitfetchError, now: float) -> None:
        for key in keys:
            self.schedule.failed(key, now)
        if self.stop.is_set():
            return  # cut short by the stop: not a failure of the backend
        for key in keys:
            self.observer.refresh(key.instance, self._failure_class(key, e))
        log.debug("the refresh of %d document(s) failed: %s", len(keys), e.headline)
        if isinstance(e, ResolveFailed):
            self.failures.failed(e.failures)
        else:  # a template that stopped rendering, a write refused: keyed by their own line
            self.failures.failed({str(p): (e.headline, p) for p in e.problems})

    def _failure_class(self, key: Doc, e: InitfetchError) -> str:
        """The class a failed refresh of `key` counts under: its own secrets' failure, else
        what failed around them (another document, the render, the write)."""
        if isinstance(e, ResolveFailed):
            kinds = [e.failures[n][0] for n in self.docs[key] if n in e.failures]
            return kinds[0] if kinds else "other-document"
        return "write" if isinstance(e, WriteFailed) else "render"

    # --- output kept as written ---

    def heal(self) -> None:
        """Write back rendered files that were modified, replaced or removed (and the marker)."""
        self._next_heal = self.clock() + self.heal_every
        if self.out_dir is None or not self.prints:
            return
        bad = changed(self.out_dir, self.prints)
        if not bad:
            return
        files = {d: self.rendered.files[d] for d in bad if d in self.rendered.files}
        try:
            self._write(self.info, self.rendered, files)
        except InitfetchError as e:
            log.warning("cannot restore %s in %s: %s", ", ".join(bad), self.out_dir, e.problems[0])
            return
        log.warning(
            "restored %d file(s) in %s that were modified, replaced or removed: %s",
            len(bad),
            self.out_dir,
            ", ".join(bad),
        )

    # --- status and exit ---

    def _update_status(self, now: float) -> None:
        for entry in self.schedule.expired(now):
            if isinstance(entry.key, Doc):
                new = set(self.docs[entry.key]) - self.expired
                if new:
                    log.error("the lease of %s expired before it could be renewed or replaced", entry.key)
                self.expired |= new
        if self.status is None:
            return
        wall = time.time() - now  # monotonic -> wall clock
        entries = self.schedule.entries.values()
        due = [(wall + e.due, wall + e.last_ok) for e in entries]
        leases = [e.expires_at for e in entries if isinstance(e.key, Doc) and e.expires_at is not None]
        failing = [_label(e.key) for e in entries if e.failures]
        self.status.update(due, wall + min(leases) if leases else None, sorted(self.expired), failing)

    def finish(self, *, revoke: bool, wipe: bool) -> None:
        """On exit: revoke replaced leases still in their grace (the application is gone),
        optionally every lease initfetch holds, and optionally the rendered files; bounded in
        time, and never while a write is in flight."""
        acquired = self._write_lock.acquire(timeout=0.5)
        self._closed = True
        try:
            self.keeper.finish(revoke)
            if wipe and self.out_dir is not None and acquired:
                wipe_files(self.out_dir, self.rendered.files)
        finally:
            if self.status is not None:
                self.status.close()
            if acquired:
                self._write_lock.release()


def _changed_env(old: Rendered, new: Rendered) -> list[str]:
    return sorted(n for n in set(new.env) | set(old.env) if new.env.get(n) != old.env.get(n))


def _versions(old: Resolved | None, new: Resolved) -> str:
    """` (version 3 -> 4)`, or the lease ids of a dynamic secret; nothing when the backend has no
    versions (a file, a variable). Never a value."""
    if new.lease is not None or (old is not None and old.lease is not None):
        before = old.lease.id if old is not None and old.lease is not None else "-"
        return f" (lease {before} -> {new.lease.id if new.lease else '-'})"
    was, now = (old.version if old else None), new.version
    if was is None and now is None:
        return ""
    return f" (version {was or '-'} -> {now or '-'})"


def _label(key: object) -> str:
    """How a schedule entry is named in the status: a reference, or an instance's login."""
    return f"{key.instance} login" if isinstance(key, Login) else str(key)
