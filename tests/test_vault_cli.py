"""End to end: the initfetch CLI against a real OpenBao (render with lease meta, exec, check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tests.backends.openbao as openbao_backend
from tests.backends.openbao import OpenBao
from tests.conftest import require

# Fixtures shared with other test modules.
openbao = openbao_backend.openbao

CANARY = "CANARY-cli-a4c7e2"
INITFETCH = Path(sys.executable).parent / "initfetch"


@pytest.fixture(scope="module")
def bao(openbao: OpenBao) -> OpenBao:
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret("cliapp/db", {"user": "app", "password": CANARY + "-1"})
    c.secrets.kv.v2.create_or_update_secret("cliapp/db", {"user": "app", "password": CANARY + "-2"})
    c.sys.enable_auth_method("approle", path="cli-approle")
    c.sys.create_or_update_policy("cliapp", 'path "secret/data/cliapp/*" { capabilities = ["read"] }')
    c.auth.approle.create_or_update_approle("app", token_policies=["cliapp"], mount_point="cli-approle")
    return openbao


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    require(INITFETCH.exists(), "the initfetch entry point is not installed in the venv")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "INITFETCH_"))}
    return subprocess.run(
        [str(INITFETCH), *args], env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_render_kv2_versions_and_template_meta(bao: OpenBao, tmp_path: Path) -> None:
    (tmp_path / "db.json.j2").write_text(
        '{"password": {{ secrets.cur | tojson }}, "old": {{ secrets.old | tojson }},'
        ' "version": {{ meta.cur.version | tojson }}}\n'
    )
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\n"
        "secrets:\n"
        "  cur: vault://secret/cliapp/db#password\n"
        "  old: vault://secret/cliapp/db?version=1#password\n"
        "templates:\n"
        "  - src: db.json.j2\n"
        "    dest: db.json\n"
    )
    out = tmp_path / "out"
    r = run(
        ["render", "-o", str(out), "--allow-disk"],
        {"VAULT_ADDR": bao.url, "VAULT_TOKEN": "root", "HOME": str(tmp_path)},
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "db.json").read_text()) == {
        "password": CANARY + "-2",
        "old": CANARY + "-1",
        "version": "2",
    }
    assert CANARY not in r.stderr + r.stdout


def test_render_reports_denied_and_missing_together(bao: OpenBao, tmp_path: Path) -> None:
    c = bao.client()
    role_id = c.auth.approle.read_role_id("app", mount_point="cli-approle")["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id("app", mount_point="cli-approle")["data"]["secret_id"]
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\n"
        "providers:\n"
        "  vault:\n"
        "    type: vault\n"
        f"    address: {bao.url}\n"
        "    auth: {method: approle, mount: cli-approle, role_id_env: ROLE_ID, secret_id_env: SECRET_ID}\n"
        "secrets:\n"
        "  ok: vault://secret/cliapp/db#password\n"
        "  denied: vault://secret/other/db#password\n"
        "  missing: vault://secret/cliapp/nope#password\n"
    )
    r = run(
        ["render", "-o", str(tmp_path / "out"), "--allow-disk", "--timeout", "10"],
        {"ROLE_ID": role_id, "SECRET_ID": secret_id, "HOME": str(tmp_path)},
        tmp_path,
    )
    assert r.returncode == 3, r.stderr
    assert "secret/data/other/db" in r.stderr and "access-denied" in r.stderr
    assert "secret/cliapp/nope does not exist" in r.stderr
    assert CANARY not in r.stderr + r.stdout and secret_id not in r.stderr
    assert not (tmp_path / "out" / ".initfetch-ready.json").exists()


def test_exec_strips_vault_token_from_the_child(bao: OpenBao, tmp_path: Path) -> None:
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\nsecrets:\n  pw: vault://secret/cliapp/db#password\n"
        'env:\n  DB_PASSWORD: "{{ secrets.pw }}"\n'
    )
    child = (
        "import os,json;print(json.dumps({'pw': os.environ.get('DB_PASSWORD'),"
        " 'tok': 'VAULT_TOKEN' in os.environ, 'addr': os.environ.get('VAULT_ADDR')}))"
    )
    r = run(
        ["exec", "-o", str(tmp_path / "out"), "--allow-disk", "--", sys.executable, "-c", child],
        {"VAULT_ADDR": bao.url, "VAULT_TOKEN": "root", "HOME": str(tmp_path)},
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {"pw": CANARY + "-2", "tok": False, "addr": bao.url}


def test_check_reports_auth_block_problems_offline(tmp_path: Path) -> None:
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\n"
        "providers:\n"
        "  vault:\n"
        "    type: vault\n"
        "    address: https://vault.invalid:8200\n"
        "    auth: {method: kubernetes, rolee: web}\n"
        "secrets:\n"
        "  a: vault://secret/app?version=zero#k\n"
    )
    r = run(["check"], {"HOME": str(tmp_path)}, tmp_path)
    assert r.returncode == 2, r.stderr
    assert "rolee" in r.stderr and "needs 'role'" in r.stderr
    assert "version must be a positive integer" in r.stderr
