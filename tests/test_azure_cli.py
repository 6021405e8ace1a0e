"""End to end: `initfetch render` / `exec` with an azure-keyvault instance against the Key Vault double."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.backends.keyvault_double import KeyVaultDouble
from tests.backends.keyvault_double import keyvault as keyvault  # module-scoped fixture
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
INITFETCH = ROOT / ".venv" / "bin" / "initfetch"
CANARY = "CANARY-azcli-51d0e2"


@pytest.fixture(scope="module")
def kv(keyvault: KeyVaultDouble) -> KeyVaultDouble:
    require(INITFETCH.exists(), "the initfetch entry point is not installed in .venv")
    keyvault.set_secret("db-password", CANARY, content_type="text/plain")
    keyvault.set_secret("app-json", json.dumps({"api_key": "k-" + CANARY}), content_type="application/json")
    return keyvault


def base_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "INITFETCH_"))
    }
    return {**env, **extra}


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INITFETCH), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def manifest(
    tmp_path: Path, kv: KeyVaultDouble, auth: dict[str, Any], secrets: dict[str, str], **extra: Any
) -> Path:
    doc = {
        "version": 1,
        "providers": {
            "kv": {"type": "azure-keyvault", "vault_url": kv.url, "ca_file": kv.ca_file, "auth": auth}
        },
        "secrets": secrets,
        **extra,
    }
    path = tmp_path / "initfetch.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


def test_render_with_managed_identity(kv: KeyVaultDouble, tmp_path: Path) -> None:
    m = manifest(
        tmp_path,
        kv,
        {"method": "managed_identity"},
        {"db": "kv://main/db-password", "api": "kv://main/app-json#api_key"},
        files=[{"secret": "db", "dest": "db"}, {"secret": "api", "dest": "api"}],
    )
    out = tmp_path / "out"
    r = run(
        ["render", "-m", str(m), "-o", str(out), "--allow-disk", "--timeout", "20"],
        base_env(kv.env),
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "db").read_text() == CANARY
    assert (out / "api").read_text() == "k-" + CANARY
    assert CANARY not in r.stdout + r.stderr


def test_render_failures_exit_3_without_values(kv: KeyVaultDouble, tmp_path: Path) -> None:
    kv.set_secret("off", CANARY, enabled=False)
    m = manifest(
        tmp_path, kv, {"method": "managed_identity"}, {"a": "kv://main/no-such-secret", "b": "kv://main/off"}
    )
    r = run(
        ["render", "-m", str(m), "-o", str(tmp_path / "out"), "--allow-disk", "--timeout", "20"],
        base_env(kv.env),
        tmp_path,
    )
    assert r.returncode == 3, r.stderr
    assert "no-such-secret" in r.stderr and "secret is disabled" in r.stderr
    assert CANARY not in r.stdout + r.stderr
    assert not (tmp_path / "out" / "a").exists()


def test_exec_strips_the_client_secret_variable(kv: KeyVaultDouble, tmp_path: Path) -> None:
    auth = {
        "method": "client_secret",
        "tenant_id": kv.tenant_id,
        "client_id": kv.client_id,
        "client_secret_env": "KV_SP_SECRET",
        "authority_host": kv.url,
        "disable_instance_discovery": True,
    }
    m = manifest(tmp_path, kv, auth, {"db": "kv://main/db-password"}, env={"DB_PASSWORD": "{{ secrets.db }}"})
    code = (
        "import os, json; print(json.dumps({k: os.environ.get(k) for k in ('DB_PASSWORD', 'KV_SP_SECRET')}))"
    )
    r = run(
        [
            "exec",
            "-m",
            str(m),
            "-o",
            str(tmp_path / "out"),
            "--allow-disk",
            "--timeout",
            "20",
            "--",
            sys.executable,
            "-c",
            code,
        ],
        base_env({"KV_SP_SECRET": kv.client_secret}),
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {"DB_PASSWORD": CANARY, "KV_SP_SECRET": None}


def test_down_vault_exits_4_within_the_deadline(kv: KeyVaultDouble, tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    m = manifest(tmp_path, kv, {"method": "managed_identity"}, {"db": "kv://main/db-password"})
    doc = json.loads(m.read_text())
    doc["providers"]["kv"]["vault_url"] = f"https://127.0.0.1:{port}"
    m.write_text(json.dumps(doc))
    r = run(
        ["render", "-m", str(m), "-o", str(tmp_path / "out"), "--allow-disk", "--timeout", "2"],
        base_env(kv.env),
        tmp_path,
    )
    assert r.returncode == 4, r.stderr
    assert "unavailable" in r.stderr
