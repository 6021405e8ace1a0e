"""The watcher: keeps a render current, one more stage on top of the pipeline.

The schedule (schedule.py) says what is due; the lease keeper (keeper.py)
renews leases and the login; a refresh re-resolves only the documents that are
due through the same pipeline (one read per document, batching, retries and
the deadline of a first render), re-renders everything in memory with the
templates compiled once, and writes only the files whose bytes changed (each
atomically, then the completion marker). An unchanged result writes nothing
and notifies no one (notify.py). A failed refresh keeps the last good render
and is retried with backoff; the status file (status.py) lets
`healthcheck --max-stale` see it. Log lines name secrets, references, classes
and versions, never values.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from initfetch.errors import InitfetchError
from initfetch.manifest.watch import WatchConfig
from initfetch.outdir.wipe import wipe_files
from initfetch.pipeline import Pipeline, Result
from initfetch.providers.base import Lease
from initfetch.resolve.resolver import Resolution, Resolved
from initfetch.templating.render import Rendered
from initfetch.watch import schedule as sched
from initfetch.watch.keeper import Doc, LeaseKeeper, Login
from initfetch.watch.status import StatusFile

log = logging.getLogger("initfetch.watch")


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
        schedule: sched.Schedule | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.manifest = pipeline.manifest
        self.redactor = pipeline.redactor
        self.config = config or pipeline.manifest.watch
        self.notify = notify
        self.clock = clock
        self.schedule = schedule or sched.Schedule()
        self.instances = pipeline.resolver.instances  # logged in already by the first render
        self.keeper = LeaseKeeper(self.instances, self.schedule, pipeline.settings.timeout, clock)
        self.out_dir = pipeline.settings.out_dir  # None: nothing is written (exec without files)
        self.status = StatusFile(self.out_dir) if self.out_dir is not None else None
        self.cycles = 0
        self.values: dict[str, Any] = dict(first.resolution.values)
        self.info: dict[str, Resolved] = dict(first.resolution.info)
        self.rendered = first.rendered
        self.docs: dict[Doc, list[str]] = {}
        for spec in self.manifest.secrets.values():
            if spec.ref is not None:
                self.docs.setdefault(Doc(spec.ref.scheme, spec.ref.doc), []).append(spec.name)
        self.expired: set[str] = set()
        self._previous: dict[str, Any] = {}  # the value before the current one, still masked
        self._plan(self.clock())
        self._update_status(self.clock())  # from now on the render counts as watched (--max-stale)

    def _plan(self, now: float) -> None:
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
        for name in self.instances:
            if any(k.instance == name for k in self.docs):
                self.keeper.keep_login(name, now)

    @staticmethod
    def _lease_of(names: Iterable[str], info: Mapping[str, Resolved]) -> Lease | None:
        lease = None
        for name in names:
            r = info.get(name)
            if r is not None and r.lease is not None:
                lease = r.lease
        return lease

    # --- running ---

    def run(self, stop: threading.Event) -> None:
        """Refresh until `stop` is set."""
        while not stop.is_set():
            wake = [t for t in (self.schedule.next_at(), self.keeper.next_revoke()) if t is not None]
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
            if isinstance(key, Login):
                if self.keeper.login(key, entry.action, now):
                    reads |= self.keeper.leased(key.instance)  # leases die with the old login
            elif isinstance(key, Doc):
                if entry.action == sched.RENEW and self.keeper.renew(key, now):
                    continue
                reads.add(key)
        if reads:
            self.refresh(reads, self.clock())
        self.keeper.revoke_due(self.clock())
        self._update_status(self.clock())

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
            rendered = self.pipeline.render(values, info, deadline)
            files = {d: b for d, b in rendered.files.items() if self.rendered.files.get(d) != b}
            if files and self.out_dir is not None:
                self.pipeline.write(info, rendered, files)
        except InitfetchError as e:
            self._failed(keys, e, now)
            if resolution is not None:  # new leases that will not be used: revoke them now
                self.keeper.unused(
                    ((r.provider, r.lease) for r in resolution.info.values() if r.lease is not None), now
                )
            return False
        changed = [n for n in names if values.get(n) != self.values.get(n)]
        for name in changed:
            log.info(
                "secret %s changed: %s (%s)", name, info[name].ref, _versions(self.info.get(name), info[name])
            )
            self._previous[name] = self.values.get(name)
        replaced = self._reschedule(keys, info, now)
        env = _changed_env(self.rendered, rendered)
        self.values, self.info, self.rendered = values, info, rendered
        if changed:
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
            self.notify(Change(changed, sorted(files), env, rendered))
        # Only now, after the application was told, may the old credentials go (after the grace).
        self.keeper.retire(replaced, self.clock() + self.config.on_change.revoke_grace)
        return True

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
        for problem in e.problems:
            log.warning("refresh failed, keeping the last good render: %s", problem)
        for key in keys:
            self.schedule.failed(key, now)

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
        since = self.schedule.stale_since()
        failing = [
            str(e.key) if isinstance(e.key, Doc) else f"{e.key.instance} token"  # type: ignore[attr-defined]
            for e in self.schedule.entries.values()
            if e.failures
        ]
        wall_since = None if since is None else round(time.time() - (now - since), 3)
        self.status.update(wall_since, sorted(self.expired), failing)

    def finish(self, *, revoke: bool, wipe: bool) -> None:
        """On exit: revoke replaced leases still in their grace (the application is gone),
        optionally every lease initfetch holds, and optionally the rendered files."""
        self.keeper.finish(revoke)
        if wipe and self.out_dir is not None:
            wipe_files(self.out_dir, self.rendered.files)


def _changed_env(old: Rendered, new: Rendered) -> list[str]:
    return sorted(n for n in set(new.env) | set(old.env) if new.env.get(n) != old.env.get(n))


def _versions(old: Resolved | None, new: Resolved) -> str:
    """`version 3 -> 4`, or the lease ids of a dynamic secret: never a value."""
    if new.lease is not None or (old is not None and old.lease is not None):
        before = old.lease.id if old is not None and old.lease is not None else "-"
        return f"lease {before} -> {new.lease.id if new.lease else '-'}"
    return f"version {(old.version if old else None) or '-'} -> {new.version or '-'}"
