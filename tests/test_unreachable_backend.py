"""Issue 23, point 3: a wrong or dead backend address waits in a few lines and ends in one
sentence that says what to check: the variable (or manifest option) the address came from,
whether the server is up, and http against https. Real clients (hvac, boto3, the Azure SDK)
against a port nothing listens on."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.helpers import clean_env, run_cli, write


def dead_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


VAULT_MANIFEST = "version: 1\nsecrets:\n  a: vault://secret/app#user\n  b: vault://secret/app#password\n"


def test_a_dead_vault_addr_is_a_few_lines_ending_in_what_to_check(tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", VAULT_MANIFEST)
    address = f"http://127.0.0.1:{dead_port()}"
    env = clean_env(VAULT_ADDR=address, VAULT_TOKEN="t", HOME=str(tmp_path))
    start = time.monotonic()
    r = run_cli(
        ["render", "--timeout", "3", "-o", str(tmp_path / "o"), "--allow-disk"], env=env, cwd=tmp_path
    )
    assert time.monotonic() - start < 20  # the deadline, not the default 60 s
    assert r.returncode == 4, r.stderr
    lines = r.stderr.splitlines()
    # at most one "waiting" line, one line per secret, and the final sentence
    assert len(lines) <= 4, r.stderr
    assert sum("waiting for vault" in line for line in lines) <= 1
    assert "still waiting" not in r.stderr and "attempt" not in r.stderr
    final = lines[-1]
    assert final.startswith("initfetch: error: vault did not answer within --timeout (3s): ")
    assert f"check VAULT_ADDR={address}" in final
    assert "server is up and reachable" in final and "https://" in final and final.endswith("(exit 4)")


@pytest.mark.parametrize(
    ("variables", "options", "expected"),
    [
        ({"BAO_ADDR": "https://127.0.0.1:{port}"}, "", "check BAO_ADDR=https://127.0.0.1:{port}"),
        (
            {},
            "providers:\n  vault: {type: vault, address: 'http://127.0.0.1:{port}'}\n",
            "address in the manifest",
        ),
        ({}, "", "set VAULT_ADDR (or BAO_ADDR): neither is set"),
    ],
)
def test_the_final_line_names_where_the_address_came_from(
    tmp_path: Path, variables: dict[str, str], options: str, expected: str
) -> None:
    port = str(dead_port())
    write(
        tmp_path / "initfetch.yaml",
        VAULT_MANIFEST.replace("secrets:", options.replace("{port}", port) + "secrets:"),
    )
    env = clean_env(
        VAULT_TOKEN="t", HOME=str(tmp_path), **{k: v.replace("{port}", port) for k, v in variables.items()}
    )
    r = run_cli(["preview", "--timeout", "2"], env=env, cwd=tmp_path)
    if not variables and not options and r.returncode != 4:
        pytest.skip("something answers on the Vault CLI's default address here")
    assert r.returncode == 4, r.stderr
    final = r.stderr.splitlines()[-1]
    assert "vault did not answer within --timeout (2s)" in final and expected.replace("{port}", port) in final


def test_a_dead_aws_endpoint_names_the_variable(tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  a: awssm://app/db\n  b: ssm:///app/x\n")
    endpoint = f"http://127.0.0.1:{dead_port()}"
    env = clean_env(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="y",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
    )
    r = run_cli(["preview", "--timeout", "2"], env=env, cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    final = r.stderr.splitlines()[-1]
    # both services, one endpoint: one sentence
    assert final.startswith("initfetch: error: awssm and ssm did not answer within --timeout (2s): ")
    assert f"check AWS_ENDPOINT_URL={endpoint}" in final and final.endswith("(exit 4)")


def test_a_dead_key_vault_names_the_url_and_the_login_endpoint(tmp_path: Path) -> None:
    port = dead_port()
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  kv:\n    type: azure-keyvault\n"
        f"    vault_url: https://127.0.0.1:{port}\n"
        "    auth: {method: client_secret, tenant_id: tenant, client_id: client}\n"
        "secrets:\n  a: kv://app/db\n",
    )
    env = clean_env(AZURE_CLIENT_SECRET="s", AZURE_AUTHORITY_HOST=f"https://127.0.0.1:{port}")
    r = run_cli(["preview", "--timeout", "2"], env=env, cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    final = r.stderr.splitlines()[-1]
    assert final.startswith("initfetch: error: kv did not answer within --timeout (2s): ")
    assert f"check the Key Vault URL https://127.0.0.1:{port}" in final and "AZURE_AUTHORITY_HOST" in final
