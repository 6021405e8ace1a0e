"""vault:// reads against a real OpenBao dev server: KV v1/v2, versions, leases, namespaces, 403."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

import tests.backends.openbao as openbao_backend
from initfetch.errors import AccessDenied, BadReference, NotFound
from initfetch.providers.base import FetchContext
from initfetch.providers.vault.provider import VaultProvider
from initfetch.reference import parse
from tests.backends.openbao import (
    FakeAPI,
    OpenBao,
    fetch,
    resolve,
    seed_demo,
    start_fake_rabbitmq,
    vault_provider,
)

# Fixtures shared with other test modules.
openbao = openbao_backend.openbao

CANARY = "CANARY-kv-7f3a9c"


@pytest.fixture(scope="module")
def seeded(openbao: OpenBao) -> OpenBao:
    c = openbao.client()
    kv2 = c.secrets.kv.v2
    kv2.create_or_update_secret("kvt/db", {"username": "app", "password": CANARY + "-v1"})
    kv2.create_or_update_secret("kvt/db", {"username": "app", "password": CANARY + "-v2"})
    kv2.create_or_update_secret("kvt/db", {"username": "app", "password": CANARY + "-v3"})
    kv2.delete_secret_versions("kvt/db", versions=[1])
    kv2.destroy_secret_versions("kvt/db", versions=[2])
    kv2.create_or_update_secret("kvt/gone", {"password": CANARY})
    kv2.delete_latest_version_of_secret("kvt/gone")
    kv2.create_or_update_secret("kvt/nested", {"cfg": {"a": {"b": CANARY}}})
    c.sys.enable_secrets_engine("kv", path="kvt1", options={"version": "1"})
    c.secrets.kv.v1.create_or_update_secret("app/smtp", {"password": CANARY + "-kv1"}, mount_point="kvt1")
    # A mount path with a slash in it, and a v2 mount under a non-default name.
    c.sys.enable_secrets_engine("kv", path="team/kv", options={"version": "2"})
    c.secrets.kv.v2.create_or_update_secret("x", {"k": "team-value"}, mount_point="team/kv")
    return openbao


def test_kv2_latest_version_is_the_whole_map(seeded: OpenBao) -> None:
    doc = fetch(vault_provider(seeded), "vault://secret/kvt/db#password")
    assert doc.value == {"username": "app", "password": CANARY + "-v3"}
    assert doc.version == "3"
    assert doc.lease is None
    assert doc.metadata["kv_version"] == 2 and doc.metadata["mount"] == "secret/"


def test_kv2_pinned_version(seeded: OpenBao) -> None:
    p = vault_provider(seeded)
    doc = fetch(p, "vault://secret/kvt/db?version=3")
    assert doc.value["password"] == CANARY + "-v3" and doc.version == "3"


def test_kv2_deleted_version_is_not_found_and_says_deleted(seeded: OpenBao) -> None:
    with pytest.raises(NotFound) as e:
        fetch(vault_provider(seeded), "vault://secret/kvt/db?version=1")
    assert "version 1 of secret/kvt/db was deleted" in str(e.value)
    assert CANARY not in str(e.value)


def test_kv2_destroyed_version_is_not_found_and_says_destroyed(seeded: OpenBao) -> None:
    with pytest.raises(NotFound) as e:
        fetch(vault_provider(seeded), "vault://secret/kvt/db?version=2")
    assert "version 2 of secret/kvt/db was destroyed" in str(e.value)
    assert CANARY not in str(e.value)


def test_kv2_deleted_current_version(seeded: OpenBao) -> None:
    with pytest.raises(NotFound) as e:
        fetch(vault_provider(seeded), "vault://secret/kvt/gone")
    assert "current version (1) of secret/kvt/gone was deleted" in str(e.value)


def test_kv2_missing_secret_and_missing_version(seeded: OpenBao) -> None:
    p = vault_provider(seeded)
    with pytest.raises(NotFound, match="secret/kvt/nope does not exist"):
        fetch(p, "vault://secret/kvt/nope")
    with pytest.raises(NotFound, match="version 99 of secret/kvt/db does not exist"):
        fetch(p, "vault://secret/kvt/db?version=99")


def test_kv2_nested_values_are_kept(seeded: OpenBao) -> None:
    assert fetch(vault_provider(seeded), "vault://secret/kvt/nested").value == {"cfg": {"a": {"b": CANARY}}}


def test_kv1_is_read_as_is(seeded: OpenBao) -> None:
    doc = fetch(vault_provider(seeded), "vault://kvt1/app/smtp#password")
    assert doc.value == {"password": CANARY + "-kv1"}
    assert doc.version is None and doc.lease is None
    assert doc.metadata["kv_version"] == 1


def test_version_on_kv1_is_a_bad_reference(seeded: OpenBao) -> None:
    with pytest.raises(BadReference, match="needs a KV v2 mount; kvt1/ is a KV v1 mount"):
        fetch(vault_provider(seeded), "vault://kvt1/app/smtp?version=1")


def test_kv2_mount_with_slash_in_its_path(seeded: OpenBao) -> None:
    doc = fetch(vault_provider(seeded), "vault://team/kv/x")
    assert doc.value == {"k": "team-value"} and doc.metadata["mount"] == "team/kv/"


def test_mount_detection_is_cached_per_mount(seeded: OpenBao) -> None:
    p = vault_provider(seeded)
    seen: list[str] = []
    fetch(p, "vault://secret/kvt/db")  # logs in, builds the session
    real = p.client.transport.request

    def spy(method: str, url: str, *args: object, **kwargs: object) -> object:
        seen.append(urlsplit(url).path)
        return real(method, url, *args, **kwargs)

    p.client.transport.request = spy
    fetch(p, "vault://secret/kvt/nested")
    fetch(p, "vault://kvt1/app/smtp")
    fetch(p, "vault://kvt1/app/smtp")
    preflights = [s for s in seen if "sys/internal/ui/mounts" in s]
    assert preflights == ["/v1/sys/internal/ui/mounts/kvt1/app/smtp"]


def test_no_mount_is_not_found(seeded: OpenBao) -> None:
    with pytest.raises(NotFound, match="no secrets engine is mounted there"):
        fetch(vault_provider(seeded), "vault://nomount/x")


def test_mount_alone_is_a_bad_reference(seeded: OpenBao) -> None:
    assert VaultProvider.check_reference(parse("vault://secret")) is not None


@pytest.mark.parametrize(
    "ref",
    [
        "vault://secret/a?version=0",
        "vault://secret/a?version=x",
        "vault://secret/a?stage=1",
        "vault:///secret/a",
    ],
)
def test_check_reference_rejects(ref: str) -> None:
    assert VaultProvider.check_reference(parse(ref))


def test_check_reference_accepts() -> None:
    for ref in ("vault://secret/a/b?version=3#k", "vault://database/creds/app#username", "vault://secret/a"):
        assert VaultProvider.check_reference(parse(ref)) is None


# --- 403 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def restricted_token(seeded: OpenBao) -> str:
    c = seeded.client()
    c.sys.create_or_update_policy("kvt-ro", 'path "secret/data/kvt/db" { capabilities = ["read"] }')
    return str(c.auth.token.create(policies=["kvt-ro"], ttl="1h")["auth"]["client_token"])


def test_restricted_token_reads_its_path(seeded: OpenBao, restricted_token: str) -> None:
    doc = fetch(vault_provider(seeded, token=restricted_token), "vault://secret/kvt/db")
    assert doc.version == "3"


def test_403_names_the_denied_path(seeded: OpenBao, restricted_token: str) -> None:
    with pytest.raises(AccessDenied) as e:
        fetch(vault_provider(seeded, token=restricted_token), "vault://secret/kvt/nested")
    assert "permission denied reading secret/data/kvt/nested" in str(e.value)
    assert CANARY not in str(e.value) and restricted_token not in str(e.value)


def test_403_on_a_mount_without_any_access(seeded: OpenBao, restricted_token: str) -> None:
    with pytest.raises(AccessDenied) as e:
        fetch(vault_provider(seeded, token=restricted_token), "vault://kvt1/app/smtp")
    msg = str(e.value)
    assert "kvt1/app/smtp" in msg and "sys/internal/ui/mounts/kvt1/app/smtp was denied" in msg
    assert CANARY not in msg


def test_bad_token_is_access_denied(seeded: OpenBao) -> None:
    with pytest.raises(AccessDenied) as e:
        fetch(vault_provider(seeded, token="s.CANARYbogusTOKEN123"), "vault://secret/kvt/db")
    assert "CANARYbogusTOKEN" not in str(e.value)


# --- namespaces ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced(seeded: OpenBao) -> OpenBao:
    seeded.client().sys.create_namespace("team-a")
    ns = seeded.client(namespace="team-a")
    ns.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
    ns.secrets.kv.v2.create_or_update_secret("nsapp/db", {"password": "in-team-a"})
    return seeded


def test_namespace_option_sends_header(namespaced: OpenBao) -> None:
    doc = fetch(vault_provider(namespaced, namespace="team-a"), "vault://secret/nsapp/db")
    assert doc.value == {"password": "in-team-a"}
    with pytest.raises(NotFound):  # the root namespace has no such secret
        fetch(vault_provider(namespaced), "vault://secret/nsapp/db")


def test_namespace_from_vault_namespace_variable(namespaced: OpenBao) -> None:
    p = VaultProvider(
        "vault", {}, {"VAULT_ADDR": namespaced.url, "VAULT_TOKEN": "root", "VAULT_NAMESPACE": "team-a"}
    )
    assert fetch(p, "vault://secret/nsapp/db").value == {"password": "in-team-a"}


# --- dynamic secrets with a lease (rabbitmq engine, fake management API) ------------------


@pytest.fixture(scope="module")
def rabbit(seeded: OpenBao) -> Iterator[FakeAPI]:
    api = start_fake_rabbitmq()
    c = seeded.client()
    c.sys.enable_secrets_engine("rabbitmq")
    c.adapter.post(
        "/v1/rabbitmq/config/connection",
        json={
            "connection_uri": api.url,
            "username": "admin",
            "password": "admin",
            "verify_connection": False,
        },
    )
    c.adapter.post("/v1/rabbitmq/config/lease", json={"ttl": 600, "max_ttl": 3600})
    vhosts = json.dumps({"/": {"configure": ".*", "write": ".*", "read": ".*"}})
    c.adapter.post("/v1/rabbitmq/roles/app", json={"vhosts": vhosts})
    yield api
    api.stop()


def test_dynamic_secret_has_a_renewable_lease_and_the_whole_map(seeded: OpenBao, rabbit: FakeAPI) -> None:
    before = len(rabbit.requests)
    doc = fetch(vault_provider(seeded), "vault://rabbitmq/creds/app#username")
    assert set(doc.value) == {"username", "password"}
    assert doc.lease is not None and doc.lease.id.startswith("rabbitmq/creds/app/")
    assert doc.lease.renewable is True and 0 < doc.lease.duration <= 600
    assert doc.version is None and doc.metadata["engine"] == "rabbitmq"
    # One read created exactly one user on the fake RabbitMQ.
    users = [r for r in rabbit.requests[before:] if r[0] == "PUT" and r[1].startswith("/api/users/")]
    assert len(users) == 1 and doc.value["username"] in users[0][1]
    # The lease is real: Vault renews it.
    renewed = seeded.client().sys.renew_lease(doc.lease.id)
    assert renewed["lease_id"] == doc.lease.id


def test_lease_reaches_templates_through_the_resolver(seeded: OpenBao, rabbit: FakeAPI, tmp_path) -> None:  # type: ignore[no-untyped-def]
    manifest = (
        "version: 1\nsecrets:\n"
        "  user: vault://rabbitmq/creds/app#username\n"
        "  pass: vault://rabbitmq/creds/app#password\n"
        "  db: vault://secret/kvt/db#password\n"
    )
    environ = {"VAULT_ADDR": seeded.url, "VAULT_TOKEN": "root", "HOME": str(tmp_path)}
    before = len(rabbit.requests)
    res = resolve(tmp_path, manifest, environ, timeout=10)
    users = [r for r in rabbit.requests[before:] if r[0] == "PUT" and r[1].startswith("/api/users/")]
    assert len(users) == 1  # username and password came from one read, one lease
    assert res.values["user"] in users[0][1]
    meta = res.info["user"].meta()
    assert meta["lease_id"].startswith("rabbitmq/creds/app/") and meta["renewable"] is True
    assert res.info["pass"].lease == res.info["user"].lease
    assert res.info["db"].version == "3"


# --- concurrency: one login shared by many threads ------------------------------------------


def test_concurrent_fetches_share_one_login(seeded: OpenBao, caplog: pytest.LogCaptureFixture) -> None:
    p = vault_provider(seeded)
    logins: list[int] = []
    original = p.client.auth.login

    def counting_login(client) -> None:  # type: ignore[no-untyped-def]
        logins.append(1)
        time.sleep(0.05)  # widen the race window
        original(client)

    p.client.auth.login = counting_login  # type: ignore[method-assign]
    ctx = FetchContext(time.monotonic() + 10)
    out: list[object] = []
    threads = [
        threading.Thread(target=lambda: out.append(p.fetch(parse("vault://secret/kvt/db").doc, ctx)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and logins == [1]


def test_tls_skip_verify_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="initfetch.providers.vault"):
        VaultProvider("v", {"address": "https://vault:8200", "tls_skip_verify": True}, {})
    assert "verification is OFF" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="initfetch.providers.vault"):
        p = VaultProvider("v", {"address": "https://vault:8200"}, {"VAULT_SKIP_VERIFY": "1"})
    assert "VAULT_SKIP_VERIFY is ignored" in caplog.text
    assert p.client.conn.verify is True


def test_seed_demo_references_resolve(openbao: OpenBao) -> None:
    """`make demo` seeds with seed_demo(); every reference it advertises must resolve."""
    refs = seed_demo(openbao)
    p = vault_provider(openbao)
    for ref in refs:
        parsed = parse(ref)
        assert parsed.key is not None
        assert parsed.key[0] in fetch(p, ref).value, ref
