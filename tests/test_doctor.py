"""`initfetch doctor`: endpoint, login and identity, and access to each document, per
provider instance, against the real backends (OpenBao, moto with IAM enforced, the Key
Vault double). Each failure is the sentence to act on; no value is ever printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tests.backends.openbao as openbao_backend
from initfetch import doctor
from initfetch.providers.base import Endpoint
from tests.backends.local_http import free_port
from tests.backends.openbao import OpenBao
from tests.helpers import clean_env, run_cli, write

openbao = openbao_backend.openbao

CANARY_DOCTOR = "CANARY-doctor-0d4c8e-never-in-the-table"
CANARY_DOCTOR_KEY = "CANARY-doctor-key-5a1f0b-never-either"

VAULT_MANIFEST = """\
version: 1
secrets:
  ok: vault://secret/doctor/ok#password
  wrong_key: vault://secret/doctor/ok#passwd
  denied: vault://secret/doctor/denied#b
  missing: vault://secret/doctor/missing#c
  maybe: {ref: "vault://secret/doctor/missing#c", optional: true}
"""


@pytest.fixture(scope="module")
def vault(openbao: OpenBao) -> OpenBao:
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret("doctor/ok", {"password": CANARY_DOCTOR, "user": "app"})
    c.secrets.kv.v2.create_or_update_secret("doctor/denied", {"b": CANARY_DOCTOR_KEY})
    c.sys.create_or_update_policy(
        "doctor-app",
        'path "secret/data/doctor/ok" { capabilities = ["read"] }\n'
        'path "secret/data/doctor/missing" { capabilities = ["read"] }\n',
    )
    return openbao


def app_token(server: OpenBao) -> str:
    auth = server.client().auth.token.create(policies=["doctor-app"], ttl="1h", display_name="ci")["auth"]
    return str(auth["client_token"])


def doctor_run(tmp_path: Path, manifest: str, **env: str) -> Any:
    write(tmp_path / "initfetch.yaml", manifest)
    return run_cli(["doctor"], env=clean_env(HOME=str(tmp_path), **env), cwd=tmp_path)


def cell(stdout: str, check: str) -> str:
    """The line of the table whose CHECK column is `check`."""
    for line in stdout.splitlines()[1:]:
        if line.split(None, 3)[2] == check or line.split(None, 4)[2:4] == check.split():
            return line
    raise AssertionError(f"no row {check!r} in:\n{stdout}")


def test_vault_identity_policies_and_one_sentence_per_document(tmp_path: Path, vault: OpenBao) -> None:
    r = doctor_run(tmp_path, VAULT_MANIFEST, VAULT_ADDR=vault.url, VAULT_TOKEN=app_token(vault))
    assert r.returncode == 3, r.stderr  # as render: not found / denied / missing key
    out = r.stdout
    assert out.splitlines()[0].split() == ["PROVIDER", "CHECK", "RESULT", "DETAIL"]
    assert "ok" in cell(out, "endpoint Vault") and "TCP ok, HTTP 200" in cell(out, "endpoint Vault")
    login = cell(out, "login")
    assert "display name: token-ci" in login and "policies: default, doctor-app" in login
    assert "renewable: yes" in login and "ttl: " in login
    assert "readable (version 1)" in cell(out, "ok")
    # A wrong JSON key is said as such: the document is readable, the key is not in it.
    wrong = cell(out, "wrong_key")
    assert "missing-key" in wrong and "no key 'passwd' (keys there: password, user)" in wrong
    denied = cell(out, "denied")
    assert "access-denied" in denied
    assert 'add path "secret/data/doctor/denied" { capabilities = ["read"] }' in denied
    assert "(it grants: deny)" in denied
    assert "not-found" in cell(out, "missing")
    assert "absent" in cell(out, "maybe")
    assert "3 check(s) failed" in r.stderr


def test_vault_expired_token_is_named_not_denied(tmp_path: Path, vault: OpenBao) -> None:
    token = app_token(vault)
    vault.client().auth.token.revoke(token)
    r = doctor_run(tmp_path, VAULT_MANIFEST, VAULT_ADDR=vault.url, VAULT_TOKEN=token)
    assert r.returncode == 3, r.stderr
    login = cell(r.stdout, "login")
    assert "FAILED" in login and "is no longer valid" in login and "not a policy problem" in login
    assert "permission denied" not in r.stdout
    assert "skipped" in cell(r.stdout, "denied")


def test_vault_down_is_exit_4_with_what_to_check(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = run_cli(
        ["doctor", "--timeout", "3"],
        env=clean_env(HOME=str(tmp_path), VAULT_ADDR=url, VAULT_TOKEN="t"),
        cwd=write(tmp_path / "initfetch.yaml", VAULT_MANIFEST).parent,
    )
    assert r.returncode == 4, r.stderr
    endpoint = cell(r.stdout, "endpoint Vault")
    assert "FAILED" in endpoint and "TCP to port" in endpoint
    assert "check VAULT_ADDR=" in cell(r.stdout, "login")


def test_reach_reports_dns_and_tls(tmp_path: Path, vault: OpenBao) -> None:
    ok, detail = doctor.reach(Endpoint("http://no-such-host.invalid:8200", "Vault"), 2.0)
    assert not ok and "DNS: no-such-host.invalid does not resolve" in detail
    # https against a plain-http server: TLS fails, said as such
    ok, detail = doctor.reach(Endpoint(vault.url.replace("http://", "https://"), "Vault"), 2.0)
    assert not ok and "TLS failed" in detail
