"""Concurrency that fits the backend, counted at the backend (issue 9, point 7).

Each test runs the real CLI against a local backend that counts what it sees:
requests in flight, mount lookups, token requests, 401 challenges. No timing is
asserted except a lower bound that load can only lengthen: a Retry-After is
waited out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.backends.keyvault_double import KeyVaultDouble
from tests.backends.keyvault_double import keyvault as keyvault  # module-scoped fixture
from tests.backends.vault_double import TOKEN, VaultDouble
from tests.backends.vault_double import vault_double as vault_double  # fixture
from tests.helpers import clean_env, run_cli

N = 40


def vault_project(tmp_path: Path, double: VaultDouble, provider: dict[str, object]) -> dict[str, str]:
    for i in range(N):
        double.kv2[f"secret/app/s{i}"] = {"user": f"u{i}", "password": f"p{i}-value"}
    secrets = {f"s{i}": f"v://secret/app/s{i}#password" for i in range(N)}
    doc = {"version": 1, "providers": {"v": {"type": "vault", **provider}}, "secrets": secrets}
    (tmp_path / "initfetch.yaml").write_text(json.dumps(doc))
    return clean_env(VAULT_ADDR=double.url, VAULT_TOKEN=TOKEN, HOME=str(tmp_path))


def render(tmp_path: Path, env: dict[str, str], *extra: str) -> None:
    r = run_cli(
        ["render", "-o", str(tmp_path / "out"), "--allow-disk", "--timeout", "30", *extra],
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr


def test_per_instance_limit_is_never_exceeded(tmp_path: Path, vault_double: VaultDouble) -> None:
    vault_double.delay = 0.05  # long enough that reads overlap
    render(tmp_path, vault_project(tmp_path, vault_double, {"concurrency": 3}))
    assert vault_double.max_in_flight == 3  # used, and never more


def test_global_concurrency_bounds_the_total(tmp_path: Path, vault_double: VaultDouble) -> None:
    vault_double.delay = 0.05
    render(tmp_path, vault_project(tmp_path, vault_double, {"concurrency": 20}), "--concurrency", "2")
    assert vault_double.max_in_flight == 2


def test_default_concurrency_reads_a_mount_in_a_handful_of_round_trips(
    tmp_path: Path, vault_double: VaultDouble
) -> None:
    vault_double.delay = 0.5  # held long enough that even a loaded machine starts them all
    render(tmp_path, vault_project(tmp_path, vault_double, {}))
    # 40 reads with the default ceiling go out together, not 8 at a time.
    assert vault_double.max_in_flight == N


def test_connection_pool_holds_the_concurrency(tmp_path: Path, vault_double: VaultDouble) -> None:
    vault_double.delay = 0.05
    for i in range(N, 3 * N):  # three reads per connection slot: connections must be reused
        vault_double.kv2[f"secret/more/s{i}"] = {"password": f"p{i}"}
    env = vault_project(tmp_path, vault_double, {"concurrency": 20})
    doc = json.loads((tmp_path / "initfetch.yaml").read_text())
    doc["secrets"].update({f"m{i}": f"v://secret/more/s{i}#password" for i in range(N, 3 * N)})
    (tmp_path / "initfetch.yaml").write_text(json.dumps(doc))
    r = run_cli(["render", "-o", str(tmp_path / "out"), "--allow-disk"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "pool is full" not in r.stderr
    assert vault_double.connections <= 20  # none discarded and reopened


def test_one_mount_lookup_for_concurrent_first_reads(tmp_path: Path, vault_double: VaultDouble) -> None:
    vault_double.delay = 0.02
    render(tmp_path, vault_project(tmp_path, vault_double, {}))
    lookups = [p for p in vault_double.seen if p.startswith("sys/internal/ui/mounts/")]
    assert len(lookups) == 1, lookups
    assert sum(p.startswith("secret/data/") for p in vault_double.seen) == N


def test_429_with_retry_after_lowers_concurrency_and_is_honoured(
    tmp_path: Path, vault_double: VaultDouble
) -> None:
    vault_double.delay = 0.05
    vault_double.throttle = 8  # the whole first window is refused
    vault_double.retry_after = "1"
    env = vault_project(tmp_path, vault_double, {"concurrency": 8})
    render(tmp_path, env)
    reads = vault_double.reads
    refused = [t for t, status, _ in reads if status == 429]
    assert len(refused) == 8
    after = [(t, in_flight) for t, status, in_flight in reads if status == 200]
    assert len(after) == N
    # Honoured: nothing was asked again before Retry-After had passed (load can only delay more).
    assert min(t for t, _ in after) >= max(refused) + 1.0 - 0.05
    # Lowered: the instance halved its window (8 -> 4) and grew back additively from there,
    # so the next requests are never 8 at once again right away.
    assert max(n for _, n in after[:8]) <= 4


def test_azure_one_token_and_one_challenge_before_the_fan_out(
    tmp_path: Path, keyvault: KeyVaultDouble
) -> None:
    for i in range(16):
        keyvault.set_secret(f"s{i}", f"value-{i}")
    vault_a = keyvault.url
    doc = {
        "version": 1,
        "providers": {
            "kv": {
                "type": "azure-keyvault",
                "vault_url": vault_a,
                "ca_file": keyvault.ca_file,
                "auth": {"method": "managed_identity"},
            }
        },
        "secrets": {f"s{i}": f"kv://main/s{i}" for i in range(16)},
    }
    (tmp_path / "initfetch.yaml").write_text(json.dumps(doc))
    tokens_before, requests_before = len(keyvault.token_requests), len(keyvault.requests)
    env = {**clean_env(HOME=str(tmp_path)), **keyvault.env}
    r = run_cli(
        ["render", "-o", str(tmp_path / "out"), "--allow-disk", "--timeout", "30"], env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert len(keyvault.token_requests) - tokens_before == 1
    # One read takes the 401 challenge alone; the other 15 go out with the token.
    assert len(keyvault.requests) - requests_before == 16 + 1


@pytest.mark.parametrize("bad", [0, -3, 2000, "many"])
def test_concurrency_option_is_checked(tmp_path: Path, bad: object) -> None:
    doc = {
        "version": 1,
        "providers": {"v": {"type": "vault", "concurrency": bad}},
        "secrets": {"a": "v://s/a"},
    }
    (tmp_path / "initfetch.yaml").write_text(json.dumps(doc))
    r = run_cli(["check"], cwd=tmp_path)
    assert r.returncode == 2 and "concurrency" in r.stderr, r.stderr
