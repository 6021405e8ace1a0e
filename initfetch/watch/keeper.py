"""The lease keeper: keeps dynamic secrets' leases and each instance's login alive,
through the Provider interface only (renew, revoke, login_lease, renew_login,
login_again, revoke_login), so it works for any backend that has leases.

- A lease is renewed at about two thirds of its TTL; one that cannot be renewed
  (refused, or at its max TTL) is replaced by reading the secret again.
- The login is renewed the same way, or replaced by a new login where the method
  can log in again; a new login replaces every lease of the old one.
- A replaced lease is revoked only after the application was told and
  `on_change.revoke_grace` has passed (`retire`); on exit, what is still in its
  grace is revoked, and with --revoke-on-exit every lease and login it made.

Lease ids and TTLs are logged, never a value.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from initfetch.errors import LeaseRevoked, LoginExpired, NotRenewable, SecretError, Unavailable
from initfetch.observe import NULL, Observer
from initfetch.providers.base import FetchContext, Lease, Provider
from initfetch.reference import DocKey
from initfetch.resolve.pool import WorkerPool, run_all
from initfetch.watch import schedule as sched

log = logging.getLogger("initfetch.watch")


@dataclass(frozen=True)
class Doc:
    """One document of one provider instance: the unit that is read, renewed or replaced."""

    instance: str
    doc: DocKey

    def __str__(self) -> str:
        return f"{self.instance}://{self.doc}"


@dataclass(frozen=True)
class Login:
    """The login of one provider instance (a Vault token)."""

    instance: str


@dataclass
class _Revoke:
    at: float
    instance: str
    lease_id: str


# On exit, revoking what is left must fit in the stop deadline (2 s in all).
FINISH_BUDGET = 1.0


@dataclass
class Calls:
    """How the keeper reaches the backends: the provider instances, the pool its renewals run
    on together, the deadline of one call, and the stop event that cuts every wait short."""

    instances: Mapping[str, Provider]
    pool: WorkerPool
    timeout: float
    stop: threading.Event


class LeaseKeeper:
    def __init__(self, calls: Calls, schedule: sched.Schedule, clock: Callable[[], float]) -> None:
        self.calls = calls
        self.instances = calls.instances
        self.schedule = schedule
        self.clock = clock
        self.leases: dict[Doc | Login, Lease] = {}
        self.revokes: list[_Revoke] = []
        self._budget: float | None = None  # set while finishing: every call fits in it, stop or not
        self.observer: Observer = NULL

    def _ctx(self) -> FetchContext:
        if self._budget is not None:
            return FetchContext(self._budget)
        return FetchContext(time.monotonic() + self.calls.timeout, stop=self.calls.stop)

    # --- what to keep ---

    def keep(self, key: Doc | Login, lease: Lease, now: float) -> None:
        """A lease granted at `now` (a dynamic read, or a login): renew or replace it in time."""
        self.leases[key] = lease
        self.schedule.lease(key, lease.duration, lease.renewable, now, lease.validity)

    def keep_login(self, instance: str, now: float) -> None:
        """Keep the instance's login alive, if it has one that expires."""
        inst = self.instances[instance]
        try:
            lease = inst.login_lease(self._ctx())
        except SecretError as e:
            log.warning(
                "cannot look up the %s of %s (%s): it is not renewed", inst.login_name, instance, e.kind
            )
            return
        if lease is not None:
            self.keep(Login(instance), lease, now)

    def reread(self, key: Doc, lease: Lease | None, now: float) -> Lease | None:
        """A document read again at `now`: keep its new lease; returns the old lease it replaces."""
        old = self.leases.get(key)
        if lease is None or lease.duration <= 0:
            return None
        self.keep(key, lease, now)
        return old if old is not None and old.id != lease.id else None

    # --- what is due ---

    def renew_all(self, keys: set[Doc], now: float) -> set[Doc]:
        """Renew these leases together on the pool; returns the ones that must be replaced (read again)."""
        ctx = self._ctx()
        calls = {key: (lambda key=key: self._renew(key, ctx)) for key in keys}
        results = run_all(self.calls.pool, calls, ctx.deadline, self.calls.stop)
        replace = set()
        for key in sorted(keys, key=str):
            result = results.get(key, Unavailable("no answer before the deadline"))
            if not self._renewed(key, result, now):
                replace.add(key)
        return replace

    def _renew(self, key: Doc, ctx: FetchContext) -> Lease:
        """One renewal, told to the observer: its duration and class, the backend up or down."""
        began = time.monotonic()
        failure: SecretError | None = None
        try:
            return self.instances[key.instance].renew(self.leases[key], ctx)
        except SecretError as e:
            failure = e
            raise
        finally:
            if not self.calls.stop.is_set():
                self.observer.request(
                    key.instance, time.monotonic() - began, failure.kind if failure else None
                )
                self.observer.backend(key.instance, failure is None or not failure.transient)

    def _renewed(self, key: Doc, result: Lease | BaseException, now: float) -> bool:
        """Account for one renewal; False when the lease must be replaced instead."""
        lease = self.leases[key]
        if isinstance(result, BaseException) and not isinstance(result, SecretError):
            result = SecretError(f"unexpected {type(result).__name__} renewing the lease")
        if isinstance(result, SecretError):
            e = result
            if not self.calls.stop.is_set() and not isinstance(e, NotRenewable):
                # a lease that cannot be renewed is replaced: the read that replaces it counts
                self.observer.refresh(key.instance, e.kind)
            if e.transient:
                log.warning("renewing the lease of %s failed (%s); retrying", key, e.kind)
                self.schedule.failed(key, now)
                return True
            log.info("the lease of %s cannot be renewed (%s); replacing it", key, e.kind)
            self.schedule.refused(key, now)  # a failed replacement is retried as a replacement
            return False
        granted = result
        self.observer.refresh(key.instance, None)
        entry = self.schedule.renewed(key, granted.duration, now)
        # Keep the first TTL: every renewal asks for it again, and a shorter grant means max TTL.
        self.leases[key] = dataclasses.replace(lease, renewable=granted.renewable)
        log.info(
            "renewed the lease of %s for %ds%s",
            key,
            granted.duration,
            "; it reached its max TTL and will be replaced" if entry.action == sched.REPLACE else "",
        )
        return True

    def login(self, key: Login, action: str, now: float) -> bool:
        """Renew the login, or log in again. True when a new login replaced the old one: every
        lease of the old login dies with it, so the caller reads those secrets again."""
        lease = self.leases[key]
        inst = self.instances[key.instance]
        try:
            if action == sched.RENEW:
                granted = inst.renew_login(lease, self._ctx())
                self.schedule.renewed(key, granted.duration, now)
                log.info("renewed the %s of %s for %ds", inst.login_name, key.instance, granted.duration)
                return False
            if not inst.can_login_again():
                log.warning(
                    "the %s of %s cannot be renewed further and was given as a token: it expires in %.0fs",
                    inst.login_name,
                    key.instance,
                    max(0.0, (self.schedule.entries[key].expires_at or now) - now),
                )
                self.schedule.remove(key)
                return False
            new = inst.login_again(self._ctx())
        except LoginExpired as e:
            # A token it was given and cannot replace: say so once, stop asking.
            log.error("%s: %s; its secrets can no longer be refreshed", key.instance, e)
            self.schedule.remove(key)
            return False
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
            return False
        log.info("logged in to %s again for %s", inst.backend_name, key.instance)
        if new is None:
            self.schedule.remove(key)
        else:
            self.keep(key, new, now)
        return True

    def leased(self, instance: str) -> set[Doc]:
        """The documents of `instance` that hold a lease its login's end would take with it."""
        return {
            k
            for k, lease in self.leases.items()
            if isinstance(k, Doc) and k.instance == instance and not lease.outlives_login
        }

    # --- revoking ---

    def retire(self, replaced: Iterable[tuple[Doc, Lease]], at: float) -> None:
        """Revoke leases that were replaced, at `at` (after the application's grace); one that
        says not to (`retire`: a certificate, unless the manifest asks) is left to expire."""
        self.revokes.extend(_Revoke(at, k.instance, lease.id) for k, lease in replaced if lease.retire)

    def unused(self, leases: Iterable[tuple[str, Lease]], now: float) -> None:
        """New leases a failed refresh created and will never use: revoke them now."""
        current = {lease.id for lease in self.leases.values()}
        fresh = {(instance, lease.id) for instance, lease in leases if lease.id not in current}
        self.revokes.extend(_Revoke(now, instance, lease_id) for instance, lease_id in fresh)

    def next_revoke(self) -> float | None:
        return min((r.at for r in self.revokes), default=None)

    def revoke_due(self, now: float, everything: bool = False) -> None:
        keep = []
        for n, item in enumerate(self.revokes):
            if not everything and item.at > now:
                keep.append(item)
                continue
            if self._budget is not None and time.monotonic() >= self._budget:
                left = len(self.revokes) - n
                log.warning("%d lease(s) not revoked: no time left before exit; they end at their TTL", left)
                break
            try:
                self.instances[item.instance].revoke(item.lease_id, self._ctx())
                log.info("revoked lease %s", item.lease_id)
            except LeaseRevoked:
                log.info("lease %s was already revoked", item.lease_id)
            except SecretError as e:
                log.warning("revoking lease %s failed (%s); it ends at its TTL", item.lease_id, e.kind)
        self.revokes = keep

    def finish(self, revoke: bool) -> None:
        """On exit: revoke replaced leases still in their grace (the application is gone), and
        with `revoke` every lease this watcher holds and every login it made itself; all of it
        within FINISH_BUDGET, so a backend that is down cannot hold the exit up."""
        self._budget = time.monotonic() + FINISH_BUDGET
        if revoke:  # everything, certificates too: the application is gone
            held = [(k, lease) for k, lease in self.leases.items() if isinstance(k, Doc)]
            self.revokes.extend(_Revoke(0.0, k.instance, lease.id) for k, lease in held)
        self.revoke_due(self.clock(), everything=True)
        if revoke:
            self._revoke_logins()

    def _revoke_logins(self) -> None:
        """Logins initfetch made (not a token it was given) die with it."""
        for key in [k for k in self.leases if isinstance(k, Login)]:
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
