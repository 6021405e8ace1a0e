"""A token Vault stops accepting, against a real OpenBao: a login method logs in again once
(however many reads were rejected at once) and the read is retried; a token given as is is
named as expired, once; a real permission denial stays one; a rotated token file is read
again; a lease Vault no longer holds is LeaseRevoked."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import tests.backends.openbao as openbao_backend
from initfetch.errors import AccessDenied, LeaseRevoked, LoginExpired, SecretError
from initfetch.providers.base import FetchContext
from initfetch.providers.vault.provider import VaultProvider
from initfetch.reference import parse
from tests.backends.openbao import FakeAPI, OpenBao, fetch, start_fake_rabbitmq
from tests.helpers import register_canary

openbao = openbao_backend.openbao

CANARY = "CANARY-relogin-3c81e0"
REF = "vault://secret/relogin/db#password"
DENIED_REF = "vault://secret/relogin-other/db#password"  # outside the policy below
PROBE = "/v1/sys/internal/ui/mounts"  # the token check (the mount lookups have a path after it)
AGAIN = "after the token was rejected"  # the info line of a new login


@pytest.fixture(scope="module")
def bao(openbao: OpenBao) -> OpenBao:
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret("relogin/db", {"password": CANARY})
    c.secrets.kv.v2.create_or_update_secret("relogin-other/db", {"password": CANARY + "-other"})
    c.sys.enable_secrets_engine("kv", path="relogin-kv1", options={"version": "1"})
    c.secrets.kv.v1.create_or_update_secret("app", {"password": CANARY + "-kv1"}, mount_point="relogin-kv1")
    c.sys.create_or_update_policy(
        "relogin",
        'path "secret/data/relogin/*" { capabilities = ["read"] }\n'
        'path "relogin-kv1/*" { capabilities = ["read"] }\n'
        'path "rabbit-relogin/creds/*" { capabilities = ["read"] }',
    )
    return openbao


@pytest.fixture(scope="module")
def approle(bao: OpenBao) -> dict[str, Any]:
    """An AppRole at auth/relogin-approle whose tokens may read secret/relogin/* only."""
    c = bao.client()
    c.sys.enable_auth_method("approle", path="relogin-approle")
    c.auth.approle.create_or_update_approle(
        "app", token_policies=["relogin"], token_ttl="1h", mount_point="relogin-approle"
    )
    role_id = c.auth.approle.read_role_id("app", mount_point="relogin-approle")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id("app", mount_point="relogin-approle")["data"]["secret_id"]
    return {
        "method": "approle",
        "mount": "relogin-approle",
        "role_id": role_id,
        "secret_id_env": "SECRET_ID",
        "_secret_id": register_canary(secret_id),
    }


def approle_provider(bao: OpenBao, approle: dict[str, Any]) -> VaultProvider:
    auth = {k: v for k, v in approle.items() if not k.startswith("_")}
    environ = {
        "VAULT_ADDR": bao.url,
        "HOME": str(bao.workdir / "no-home"),
        "SECRET_ID": approle["_secret_id"],
    }
    return VaultProvider("vault", {"auth": auth}, environ)


def token_provider(bao: OpenBao, **environ: str) -> VaultProvider:
    return VaultProvider(
        "vault", {}, {"VAULT_ADDR": bao.url, "HOME": str(bao.workdir / "no-home"), **environ}
    )


def child_token(bao: OpenBao, **options: Any) -> str:
    """A token under the relogin policy, as an operator would hand one out."""
    created = bao.client().auth.token.create(policies=["relogin"], ttl="1h", **options)
    return register_canary(str(created["auth"]["client_token"]))


def revoke(bao: OpenBao, token: str) -> None:
    """Revoke a token the way an operator does, by its accessor."""
    c = bao.client()
    accessor = c.auth.token.lookup(token)["data"]["accessor"]
    c.auth.token.revoke_accessor(accessor)


class Spy:
    """Counts the HTTP requests a provider sends (by path) and the logins it makes."""

    def __init__(self, p: VaultProvider) -> None:
        self.paths: list[str] = []
        self.logins: list[int] = []
        session = p.client.transport
        real_request, real_login = session.request, p.client.auth.login

        def request(method: str, url: str, *args: object, **kwargs: object) -> object:
            self.paths.append(urlsplit(url).path)
            return real_request(method, url, *args, **kwargs)

        def login(client: Any) -> None:
            self.logins.append(1)
            time.sleep(0.05)  # a slow login widens the window for a second one
            real_login(client)

        session.request = request
        p.client.auth.login = login  # type: ignore[method-assign]

    def count(self, path: str) -> int:
        return sum(1 for p in self.paths if p == path)


def together(n: int, work: Callable[[], object]) -> list[object]:
    """Run `work` on n threads released at once; what each returned or raised."""
    barrier = threading.Barrier(n)
    out: list[object] = []

    def one() -> None:
        barrier.wait()
        try:
            out.append(work())
        except SecretError as e:
            out.append(e)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == n
    return out


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    caplog.set_level(logging.INFO, "initfetch")
    yield lambda: [r.getMessage() for r in caplog.records]


# --- a login method logs in again ---------------------------------------------------------


def test_approle_token_revoked_logs_in_again_once_and_the_read_succeeds(
    bao: OpenBao, approle: dict[str, Any], info_logs: Callable[[], list[str]]
) -> None:
    p = approle_provider(bao, approle)
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.login_generation == 1
    first = register_canary(str(p.client.token))
    spy = Spy(p)
    revoke(bao, first)
    assert fetch(p, REF).value == {"password": CANARY}
    assert spy.logins == [1] and p.login_generation == 2
    assert spy.count(PROBE) == 1
    second = register_canary(str(p.client.token))
    assert second != first
    again = [m for m in info_logs() if AGAIN in m]
    assert again == ["logged in to Vault again for vault after the token was rejected"]
    # Later reads use the new token without another check.
    assert fetch(p, REF).value == {"password": CANARY}
    assert spy.logins == [1] and spy.count(PROBE) == 1


def test_a_read_under_a_mount_not_looked_up_yet_recovers_too(bao: OpenBao, approle: dict[str, Any]) -> None:
    """The mount lookup is refused as well then, and the path is read as it is: that refusal
    is checked like any other, and the read after the new login finds the engine."""
    p = approle_provider(bao, approle)
    fetch(p, REF)
    register_canary(str(p.client.token))
    revoke(bao, str(p.client.token))
    doc = fetch(p, "vault://relogin-kv1/app#password")
    assert doc.value == {"password": CANARY + "-kv1"} and doc.metadata["kv_version"] == 1
    assert p.login_generation == 2


def test_200_concurrent_reads_after_a_revocation_share_one_check_and_one_login(
    bao: OpenBao, approle: dict[str, Any], info_logs: Callable[[], list[str]]
) -> None:
    p = approle_provider(bao, approle)
    fetch(p, REF)  # logged in, the mount known
    register_canary(str(p.client.token))
    spy = Spy(p)
    revoke(bao, str(p.client.token))
    doc = parse(REF).doc
    ctx = FetchContext(time.monotonic() + 60)
    results = together(200, lambda: p.fetch(doc, ctx))
    failures = [r for r in results if isinstance(r, SecretError)]
    assert failures == []
    assert all(getattr(r, "value", None) == {"password": CANARY} for r in results)
    assert spy.logins == [1] and p.login_generation == 2
    assert spy.count(PROBE) == 1
    assert len([m for m in info_logs() if AGAIN in m]) == 1


def test_a_real_permission_denial_stays_access_denied_without_a_new_login(
    bao: OpenBao, approle: dict[str, Any], info_logs: Callable[[], list[str]]
) -> None:
    p = approle_provider(bao, approle)
    fetch(p, REF)
    spy = Spy(p)
    for _ in range(3):
        with pytest.raises(AccessDenied) as e:
            fetch(p, DENIED_REF)
        assert e.value.kind == "access-denied"
        assert "permission denied reading secret/data/relogin-other/db" in str(e.value)
    assert spy.logins == [] and p.login_generation == 1
    assert not [m for m in info_logs() if AGAIN in m]
    assert fetch(p, REF).value == {"password": CANARY}


def test_a_live_token_without_the_default_policy_is_not_taken_for_a_dead_one(bao: OpenBao) -> None:
    """Such a token cannot look itself up (lookup-self is in the default policy): the check
    must not need any policy, or a real denial would be reported as an expired token."""
    token = child_token(bao, no_default_policy=True)
    p = token_provider(bao, VAULT_TOKEN=token)
    with pytest.raises(AccessDenied) as e:
        fetch(p, DENIED_REF)
    assert e.value.kind == "access-denied" and not isinstance(e.value, LoginExpired)
    assert fetch(p, REF).value == {"password": CANARY}  # still usable


# --- a token given as is ------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["VAULT_TOKEN", "BAO_TOKEN"])
def test_a_revoked_static_token_is_login_expired_naming_its_variable_checked_once(
    bao: OpenBao, variable: str
) -> None:
    token = child_token(bao)
    p = token_provider(bao, **{variable: token})
    assert fetch(p, REF).value == {"password": CANARY}
    assert not p.can_login_again() and not p.owns_login()
    revoke(bao, token)
    spy = Spy(p)
    doc = parse(REF).doc
    ctx = FetchContext(time.monotonic() + 30)
    results = together(50, lambda: p.fetch(doc, ctx))
    assert all(isinstance(r, LoginExpired) for r in results), {type(r).__name__ for r in results}
    message = str(results[0])
    assert message == (
        f"the Vault token (from {variable}) is no longer valid: revoked or expired; give initfetch a new one"
    )
    assert {str(r) for r in results} == {message}
    assert all(isinstance(r, LoginExpired) and r.kind == "login-expired" for r in results)
    assert token not in message
    assert spy.count(PROBE) == 1 and spy.logins == []
    # Known now: the next read fails at once, without asking Vault anything.
    sent = len(spy.paths)
    with pytest.raises(LoginExpired):
        fetch(p, REF)
    assert len(spy.paths) == sent


def test_a_token_from_home_vault_token_is_named_as_such(bao: OpenBao, tmp_path: Path) -> None:
    token = child_token(bao)
    (tmp_path / ".vault-token").write_text(token)
    p = VaultProvider("vault", {"address": bao.url}, {"HOME": str(tmp_path)})
    fetch(p, REF)
    revoke(bao, token)
    with pytest.raises(LoginExpired, match=r"the Vault token \(from ~/.vault-token\) is no longer valid"):
        fetch(p, REF)


# --- a token file ---------------------------------------------------------------------------


def test_a_rotated_token_file_is_read_again_after_the_old_token_was_revoked(
    bao: OpenBao, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    old = child_token(bao)
    path.write_text(old + "\n")
    p = VaultProvider(
        "vault",
        {"address": bao.url, "auth": {"method": "token", "token_file": str(path)}},
        {"HOME": str(tmp_path), "VAULT_TOKEN": "s.not-this-one"},
    )
    assert p.can_login_again() and not p.owns_login()
    assert fetch(p, REF).value == {"password": CANARY}
    revoke(bao, old)
    # Not rotated yet: the file still holds the dead token. One check for all the reads, each
    # told so (not "permission denied"), and no new login generation for the same token.
    spy = Spy(p)
    doc = parse(REF).doc
    results = together(20, lambda: p.fetch(doc, FetchContext(time.monotonic() + 30)))
    expected = (
        f"the Vault token in auth.token_file {path} is no longer valid: revoked or expired, "
        "and the file holds no new one yet"
    )
    assert [str(r) for r in results if isinstance(r, LoginExpired)] == [expected] * 20
    assert spy.count(PROBE) == 1 and p.login_generation == 1
    sent = len(spy.paths)
    with pytest.raises(LoginExpired):
        fetch(p, REF)
    assert len(spy.paths) == sent  # the file is read again, Vault is not asked
    new = child_token(bao)
    path.write_text(new + "\n")  # what a sidecar or the kubelet does
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.client.token == new and p.login_generation == 2
    # A scheduled new login (the watcher's login_again) reads the file again too.
    generation = p.login_generation
    newer = child_token(bao)
    path.write_text(newer)
    lease = p.login_again(FetchContext(time.monotonic() + 10))
    assert p.client.token == newer and p.login_generation == generation + 1
    assert lease is not None and lease.duration > 0


@pytest.mark.parametrize(
    ("auth", "again", "owns"),
    [
        (None, False, False),  # VAULT_TOKEN
        ({"method": "token", "token_env": "T"}, False, False),
        ({"method": "token", "token_file": "/run/token"}, True, False),
        ({"method": "approle", "role_id": "r", "secret_id_file": "/s"}, True, True),
        ({"method": "kubernetes", "role": "web", "token_file": "/sa"}, True, True),
        ({"method": "jwt", "role": "ci", "token_file": "/jwt"}, True, True),
    ],
)
def test_which_logins_can_be_made_again_and_which_are_owned(
    auth: dict[str, Any] | None, again: bool, owns: bool
) -> None:
    options: dict[str, Any] = {"address": "http://127.0.0.1:1"}
    if auth is not None:
        options["auth"] = auth
    p = VaultProvider("vault", options, {"VAULT_TOKEN": "s.x"})
    assert (p.can_login_again(), p.owns_login()) == (again, owns)


# --- leases -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbit(bao: OpenBao) -> Iterator[FakeAPI]:
    fake = start_fake_rabbitmq()
    c = bao.client()
    c.sys.enable_secrets_engine("rabbitmq", path="rabbit-relogin")
    c.write(
        "rabbit-relogin/config/connection",
        connection_uri=fake.url,
        username="a",
        password="a",
        verify_connection=False,
    )
    c.write("rabbit-relogin/config/lease", ttl=300, max_ttl=3600)
    c.write("rabbit-relogin/roles/app", vhosts='{"/": {"read": ".*"}}')
    yield fake
    fake.stop()


def test_renewing_a_revoked_lease_is_lease_revoked(bao: OpenBao, rabbit: FakeAPI) -> None:
    p = token_provider(bao, VAULT_TOKEN=bao.root_token)
    lease = fetch(p, "vault://rabbit-relogin/creds/app#username").lease
    assert lease is not None and lease.renewable
    ctx = FetchContext(time.monotonic() + 10)
    assert p.renew(lease, ctx).duration > 0
    bao.client().sys.revoke_lease(lease.id)
    with pytest.raises(LeaseRevoked) as e:
        p.renew(lease, ctx)
    assert e.value.kind == "lease-revoked"
    assert str(e.value) == f"the lease {lease.id} was revoked or has expired"
    p.revoke(lease.id, ctx)  # revoking a lease that is gone already is not an error


def test_renewing_a_lease_after_the_login_was_revoked_logs_in_again_and_finds_it_gone(
    bao: OpenBao, approle: dict[str, Any], rabbit: FakeAPI
) -> None:
    """Revoking a token revokes the leases it created: the renewal is rejected for the dead
    token, logs in again, and then learns the lease is gone."""
    p = approle_provider(bao, approle)
    lease = fetch(p, "vault://rabbit-relogin/creds/app#username").lease
    assert lease is not None
    register_canary(str(p.client.token))
    revoke(bao, str(p.client.token))
    with pytest.raises(LeaseRevoked):
        p.renew(lease, FetchContext(time.monotonic() + 10))
    assert p.login_generation == 2


# --- the watcher (issue "Watch mode holds under faults", point 5) ------------------------------


def test_a_watcher_recovers_from_a_revoked_approle_token_at_its_next_refresh(
    bao: OpenBao, approle: dict[str, Any], tmp_path: Path, info_logs: Callable[[], list[str]]
) -> None:
    """The token lives an hour: without a new login on rejection, every refresh would fail
    until the scheduled renewal."""
    from initfetch.manifest.watch import WatchConfig
    from tests.watch_helpers import start_watcher, wait_until

    c = bao.client()
    c.secrets.kv.v2.create_or_update_secret("relogin/watch", {"v": "one"})
    manifest = (
        "version: 1\nproviders:\n  vault:\n    type: vault\n    auth:\n      method: approle\n"
        f"      mount: relogin-approle\n      role_id: {approle['role_id']}\n      secret_id_env: SECRET_ID\n"
        "secrets:\n  v: vault://secret/relogin/watch#v\nfiles:\n  - {secret: v, dest: v}\n"
    )
    environ = {"VAULT_ADDR": bao.url, "HOME": str(tmp_path), "SECRET_ID": approle["_secret_id"]}
    watcher, _ = start_watcher(tmp_path, manifest, environ, WatchConfig(providers={"vault": 0.3}))
    inst = watcher.instances["vault"]
    token = register_canary(str(inst.client.token))
    loop = threading.Thread(target=watcher.run, daemon=True)
    loop.start()
    try:
        revoke(bao, token)
        c.secrets.kv.v2.create_or_update_secret("relogin/watch", {"v": "two"})
        wait_until(lambda: (tmp_path / "out/v").read_text() == "two", timeout=15, what="the new value")
        assert inst.login_generation == 2
        assert len([m for m in info_logs() if AGAIN in m]) == 1
        register_canary(str(inst.client.token))
    finally:
        watcher.request_stop()
        loop.join(30)
        watcher.finish(revoke=True, wipe=False)
    assert not loop.is_alive()


def test_a_watched_static_token_that_is_revoked_is_named_once_and_no_longer_renewed(
    openbao: OpenBao, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The watcher's token renewal meets a revoked VAULT_TOKEN: one line naming it as no longer
    valid, and the renewal is dropped (not "logging in again", which a given token cannot)."""
    from initfetch.manifest.watch import WatchConfig
    from tests.watch_helpers import Clock, start_watcher

    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret("relogin/watched", {"password": "watched-value-1"})
    token = c.auth.token.create(policies=["root"], ttl="1h", renewable=True)["auth"]["client_token"]
    clock = Clock()
    secrets = ["  pw0: vault://secret/relogin/watched#password"]
    secrets += [f"  k{i}: vault://secret/relogin/w{i}#password" for i in range(5)]
    manifest = "version: 1\nsecrets:\n" + "\n".join(secrets) + "\n"
    for i in range(5):
        c.secrets.kv.v2.create_or_update_secret(f"relogin/w{i}", {"password": f"w-value-{i}"})
    env = {"VAULT_ADDR": openbao.url, "VAULT_TOKEN": token, "HOME": str(tmp_path)}
    watcher, _ = start_watcher(tmp_path, manifest, env, WatchConfig(providers={"vault": 3600}), clock=clock)
    watcher.cycle()  # plans the token's renewal
    c.auth.token.revoke(token)
    caplog.set_level(logging.INFO, logger="initfetch")
    clock.advance(2500)  # past two thirds of the hour: the renewal is due
    watcher.cycle()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("initfetch")]
    expired = [m for m in messages if "no longer valid" in m]
    assert len(expired) == 1 and "VAULT_TOKEN" in expired[0] and token not in expired[0], messages
    assert not any("logging in again" in m or "cannot be renewed further" in m for m in messages)
    assert not [k for k in watcher.schedule.entries if type(k).__name__ == "Login"]
    clock.advance(2500)  # the secrets are due: their refresh fails for the same cause, one line for all
    watcher.cycle()
    failed = [r.getMessage() for r in caplog.records if "refresh failed" in r.getMessage()]
    assert len(failed) == 1 and "6 secrets login-expired" in failed[0], failed
