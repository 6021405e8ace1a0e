"""KeyVaultProvider with the real azure-identity + azure-keyvault-secrets over HTTPS
against the local Key Vault / token-service double (tests/backends/keyvault_double.py).

The SDK's challenge-resource verification stays on: the double's challenge names
`https://0.0.1:PORT`, a suffix of 127.0.0.1:PORT.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from initfetch.errors import AccessDenied, NotFound, SecretError, Unavailable
from initfetch.providers.azure.keyvault import KeyVaultProvider
from initfetch.providers.base import FetchContext
from initfetch.reference import DocKey
from tests.backends.keyvault_double import KeyVaultDouble, start_keyvault
from tests.backends.keyvault_double import keyvault as keyvault  # module-scoped fixture
from tests.conftest import require

CANARY = "CANARY-azkv-7f3e9b1c"
AZURE_VARS = (
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_TOKEN_CREDENTIALS",
)


@pytest.fixture(scope="module")
def kv(keyvault: KeyVaultDouble) -> KeyVaultDouble:
    try:
        import azure.identity  # noqa: F401
        import azure.keyvault.secrets  # noqa: F401
    except ImportError:
        require(False, "azure-identity and azure-keyvault-secrets are not installed")
    keyvault.v1 = keyvault.set_secret("db-password", "first-pass", content_type="text/plain")  # type: ignore[attr-defined]
    keyvault.v2 = keyvault.set_secret(  # type: ignore[attr-defined]
        "db-password", "second-pass", content_type="text/plain", tags={"env": "test", "owner": "db"}
    )
    keyvault.set_secret(
        "app-json", '{"api_key": "k-123", "nested": {"t": 1}}', content_type="application/json"
    )
    keyvault.set_secret("turned-off", CANARY, enabled=False)
    keyvault.off_old = keyvault.set_secret("half-off", CANARY, enabled=False)  # type: ignore[attr-defined]
    keyvault.set_secret("half-off", "on-again")
    keyvault.set_secret("rbac-denied", CANARY)
    keyvault.deny("rbac-denied", "ForbiddenByRbac")
    keyvault.set_secret("policy-denied", CANARY)
    keyvault.deny("policy-denied", "AccessDenied")
    keyvault.set_secret("flaky", CANARY)
    return keyvault


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    # The SDK reads os.environ for managed identity and DefaultAzureCredential.
    for name in AZURE_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def mi_env(kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in kv.env.items():
        clean_env.setenv(k, v)
    return dict(kv.env)


def make(
    kv: KeyVaultDouble,
    auth: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    **options: Any,
) -> KeyVaultProvider:
    opts: dict[str, Any] = {"vault_url": kv.url, "ca_file": kv.ca_file, **options}
    if auth is not None:
        opts["auth"] = auth
    assert list(KeyVaultProvider.check_options(opts)) == []
    return KeyVaultProvider("kv", opts, environ if environ is not None else dict(os.environ))


def ctx(seconds: float = 20.0) -> FetchContext:
    return FetchContext(time.monotonic() + seconds)


def sp_auth(kv: KeyVaultDouble, **extra: Any) -> dict[str, Any]:
    return {
        "method": "client_secret",
        "tenant_id": kv.tenant_id,
        "client_id": kv.client_id,
        "authority_host": kv.url,
        "disable_instance_discovery": True,
        **extra,
    }


def fetch_error(p: KeyVaultProvider, path: str, seconds: float = 20.0) -> SecretError:
    with pytest.raises(SecretError) as info:
        p.fetch(DocKey(path), ctx(seconds))
    return info.value


# --- reading secrets -------------------------------------------------------------------


def test_managed_identity_reads_latest_with_metadata(kv: KeyVaultDouble, mi_env: dict[str, str]) -> None:
    p = make(kv, {"method": "managed_identity"})
    doc = p.fetch(DocKey("anyvault/db-password"), ctx())
    assert doc.value == "second-pass"
    assert doc.version == kv.v2  # type: ignore[attr-defined]
    assert doc.metadata["content_type"] == "text/plain"
    assert doc.metadata["tags"] == {"env": "test", "owner": "db"}
    assert "second-pass" not in repr(doc.metadata)
    # The token was asked for the challenge's resource: verification ran and passed.
    assert {"endpoint": "msi", "client_id": "", "resource": kv.resource} in kv.token_requests


def test_pinned_version_and_json_value(kv: KeyVaultDouble, mi_env: dict[str, str]) -> None:
    p = make(kv, {"method": "managed_identity"})
    old = p.fetch(DocKey(f"v/db-password/{kv.v1}"), ctx())  # type: ignore[attr-defined]
    assert (old.value, old.version) == ("first-pass", kv.v1)  # type: ignore[attr-defined]
    doc = p.fetch(DocKey("v/app-json"), ctx())
    assert doc.value == '{"api_key": "k-123", "nested": {"t": 1}}'  # the core applies #key
    assert doc.metadata["content_type"] == "application/json"
    assert "tags" not in doc.metadata


def test_user_assigned_managed_identity(kv: KeyVaultDouble, mi_env: dict[str, str]) -> None:
    p = make(kv, {"method": "managed_identity", "client_id": kv.mi_client_id})
    assert p.fetch(DocKey("v/db-password"), ctx()).value == "second-pass"
    assert {"endpoint": "msi", "client_id": kv.mi_client_id, "resource": kv.resource} in kv.token_requests
    wrong = make(kv, {"method": "managed_identity", "client_id": "99999999-0000-4000-8000-000000000000"})
    err = fetch_error(wrong, "v/db-password")
    assert isinstance(err, AccessDenied)
    assert "ManagedIdentityCredential (user-assigned, client_id=99999999" in str(err)


def test_client_secret_from_file(kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch) -> None:
    p = make(kv, sp_auth(kv, client_secret_file=kv.client_secret_file), environ={})
    assert p.fetch(DocKey("v/db-password"), ctx()).value == "second-pass"
    assert p.credential_env() == set()


def test_client_secret_from_env_is_reported_for_stripping(
    kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch
) -> None:
    env = {"KV_SP_SECRET": kv.client_secret}
    p = make(kv, sp_auth(kv, client_secret_env="KV_SP_SECRET"), environ=env)
    assert p.fetch(DocKey("v/db-password"), ctx()).value == "second-pass"
    assert p.credential_env() == {"KV_SP_SECRET"}
    # The default variable, with tenant and client id from the standard variables too.
    env2 = {
        "AZURE_CLIENT_SECRET": kv.client_secret,
        "AZURE_TENANT_ID": kv.tenant_id,
        "AZURE_CLIENT_ID": kv.client_id,
        "AZURE_AUTHORITY_HOST": kv.url,
    }
    p2 = make(kv, {"method": "client_secret", "disable_instance_discovery": True}, environ=env2)
    assert p2.fetch(DocKey("v/app-json"), ctx()).version
    assert p2.credential_env() == {"AZURE_CLIENT_SECRET"}


def test_client_secret_wrong_secret_is_denied_without_leaking(
    kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch
) -> None:
    p = make(kv, sp_auth(kv, client_secret_env="S"), environ={"S": CANARY})
    err = fetch_error(p, "v/db-password")
    assert isinstance(err, AccessDenied)
    assert "ClientSecretCredential" in str(err) and "secret from $S" in str(err)
    assert "AADSTS7000215" in str(err)
    assert CANARY not in str(err)


def test_client_secret_wrong_tenant(kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch) -> None:
    other = "00000000-0000-4000-8000-0000000000ff"
    p = make(kv, sp_auth(kv, tenant_id=other, client_secret_file=kv.client_secret_file), environ={})
    err = fetch_error(p, "v/db-password")
    assert isinstance(err, AccessDenied)
    assert f"tenant={other}" in str(err)
    assert "tenant" in str(err).split("ClientSecretCredential", 1)[1]


def test_missing_client_secret_names_the_variable(kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch) -> None:
    p = make(kv, sp_auth(kv), environ={})
    err = fetch_error(p, "v/db-password")
    assert isinstance(err, AccessDenied)
    assert "AZURE_CLIENT_SECRET" in str(err) and "client_secret_file" in str(err)


def test_client_certificate(kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch) -> None:
    auth = {
        "method": "client_certificate",
        "tenant_id": kv.tenant_id,
        "client_id": kv.client_id,
        "certificate_file": kv.certificate_file,
        "authority_host": kv.url,
        "disable_instance_discovery": True,
    }
    p = make(kv, auth, environ={})
    assert p.fetch(DocKey("v/db-password"), ctx()).value == "second-pass"
    assert p.credential_env() == set()
    err = fetch_error(make(kv, {**auth, "certificate_file": kv.ca_file}, environ={}), "v/db-password")
    assert isinstance(err, AccessDenied) and "certificate_file" in str(err)


def test_workload_identity(kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch, tmp_path: Any) -> None:
    env = {
        "AZURE_FEDERATED_TOKEN_FILE": kv.federated_token_file,
        "AZURE_TENANT_ID": kv.tenant_id,
        "AZURE_CLIENT_ID": kv.client_id,
        "AZURE_AUTHORITY_HOST": kv.url,
    }
    p = make(kv, {"method": "workload_identity", "disable_instance_discovery": True}, environ=env)
    assert p.fetch(DocKey("v/db-password"), ctx()).value == "second-pass"
    assert p.credential_env() == set()
    # An explicit token file that holds the wrong token is refused by the token service.
    bad = tmp_path / "token"
    bad.write_text("not-the-federated-token")
    auth = {
        "method": "workload_identity",
        "token_file": str(bad),
        "tenant_id": kv.tenant_id,
        "client_id": kv.client_id,
        "authority_host": kv.url,
        "disable_instance_discovery": True,
    }
    err = fetch_error(make(kv, auth, environ={}), "v/db-password")
    assert isinstance(err, AccessDenied)
    assert f"WorkloadIdentityCredential (tenant={kv.tenant_id}" in str(err)


def test_default_credential_uses_managed_identity(kv: KeyVaultDouble, mi_env: dict[str, str]) -> None:
    p = make(kv, None)
    assert p.fetch(DocKey("v/db-password"), ctx()).value == "second-pass"
    assert p.credential_env() == set()


def test_default_credential_with_environment_secret(
    kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch
) -> None:
    env = {
        "AZURE_CLIENT_SECRET": kv.client_secret,
        "AZURE_TENANT_ID": kv.tenant_id,
        "AZURE_CLIENT_ID": kv.client_id,
        "AZURE_AUTHORITY_HOST": kv.url,
    }
    for k, v in env.items():
        clean_env.setenv(k, v)
    p = make(kv, {"method": "default", "disable_instance_discovery": True})
    assert p.fetch(DocKey("v/db-password"), ctx()).value == "second-pass"
    assert p.credential_env() == {"AZURE_CLIENT_SECRET"}


# --- errors ---------------------------------------------------------------------------


@pytest.fixture
def mi(kv: KeyVaultDouble, mi_env: dict[str, str]) -> Iterator[KeyVaultProvider]:
    p = make(kv, {"method": "managed_identity"})
    yield p
    p.close()


def test_not_found(kv: KeyVaultDouble, mi: KeyVaultProvider) -> None:
    err = fetch_error(mi, "v/no-such-secret")
    assert isinstance(err, NotFound) and "SecretNotFound" in str(err) and "no-such-secret" in str(err)
    err = fetch_error(mi, "v/db-password/" + "0" * 32)
    assert isinstance(err, NotFound) and "version " + "0" * 32 in str(err)


def test_disabled_secret(kv: KeyVaultDouble, mi: KeyVaultProvider) -> None:
    err = fetch_error(mi, "v/turned-off")
    assert isinstance(err, AccessDenied) and "secret is disabled" in str(err)
    # Only the disabled version is refused; the current one reads.
    err = fetch_error(mi, f"v/half-off/{kv.off_old}")  # type: ignore[attr-defined]
    assert isinstance(err, AccessDenied) and "secret is disabled" in str(err)
    assert mi.fetch(DocKey("v/half-off"), ctx()).value == "on-again"


def test_forbidden_rbac_and_access_policy(kv: KeyVaultDouble, mi: KeyVaultProvider) -> None:
    err = fetch_error(mi, "v/rbac-denied")
    assert isinstance(err, AccessDenied) and "ForbiddenByRbac" in str(err)
    assert "Key Vault Secrets User" in str(err)
    err = fetch_error(mi, "v/policy-denied")
    assert isinstance(err, AccessDenied) and "(AccessDenied)" in str(err)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_unavailable_after_one_try(
    kv: KeyVaultDouble, mi: KeyVaultProvider, status: int
) -> None:
    mi.fetch(DocKey("v/db-password"), ctx())  # log in first, so only the faulty request is counted
    before = len(kv.requests)
    kv.fail("flaky", status, status, status)
    err = fetch_error(mi, "v/flaky")
    assert isinstance(err, Unavailable) and str(status) in str(err)
    assert len(kv.requests) - before == 1  # no SDK retry: the core retries within the deadline
    assert CANARY not in str(err)
    # What the core does next: try again; the double has recovered after the queued faults.
    results = []
    for _ in range(3):
        try:
            results.append(mi.fetch(DocKey("v/flaky"), ctx()).value)
        except Unavailable:
            results.append("unavailable")
    assert results == ["unavailable", "unavailable", CANARY]


def test_canary_never_in_error_messages(kv: KeyVaultDouble, mi: KeyVaultProvider) -> None:
    messages = []
    for path in (
        "v/turned-off",
        f"v/half-off/{kv.off_old}",
        "v/rbac-denied",
        "v/policy-denied",  # type: ignore[attr-defined]
        "v/no-such-secret",
    ):
        err = fetch_error(mi, path)
        messages += [str(err), repr(err), str(err.__cause__), str(err.__context__)]
    kv.fail("flaky", 503)
    messages.append(str(fetch_error(mi, "v/flaky")))
    assert all(CANARY not in m for m in messages)


def test_challenge_resource_is_verified(kv: KeyVaultDouble, mi_env: dict[str, str]) -> None:
    # localhost:PORT is not inside the challenge's resource domain (0.0.1:PORT): the SDK check refuses it.
    p = make(kv, {"method": "managed_identity"}, vault_url=f"https://localhost:{kv.port}")
    err = fetch_error(p, "v/db-password")
    assert isinstance(err, AccessDenied) and "challenge resource" in str(err)


def test_down_vault_is_unavailable_quickly(tmp_path: Any, clean_env: pytest.MonkeyPatch) -> None:
    down = start_keyvault(tmp_path)
    for k, v in down.env.items():
        clean_env.setenv(k, v)
    down.stop()
    p = make(down, {"method": "managed_identity"})
    t0 = time.monotonic()
    err = fetch_error(p, "v/db-password", seconds=5)
    assert isinstance(err, Unavailable) and "connection failed" in str(err)
    assert time.monotonic() - t0 < 2


def test_hanging_vault_is_bounded_by_the_deadline(kv: KeyVaultDouble, mi_env: dict[str, str]) -> None:
    # A port that accepts TCP but never speaks TLS: only the per-request timeout ends the call.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    try:
        p = make(kv, {"method": "managed_identity"}, vault_url=f"https://127.0.0.1:{lsock.getsockname()[1]}")
        t0 = time.monotonic()
        err = fetch_error(p, "v/db-password", seconds=1.0)
        elapsed = time.monotonic() - t0
    finally:
        lsock.close()
    assert isinstance(err, Unavailable)
    assert elapsed < 2.5


# --- sharing ---------------------------------------------------------------------------


def test_one_client_per_vault_shared_by_concurrent_fetches(
    kv: KeyVaultDouble, mi_env: dict[str, str]
) -> None:
    p = make(kv, {"method": "managed_identity"}, vault_urls={"other": kv.url})
    msi_before = sum(1 for r in kv.token_requests if r["endpoint"] == "msi")
    start = threading.Barrier(16)

    def read(i: int) -> str:
        start.wait()
        vault = "other" if i % 2 else "main"
        return str(p.fetch(DocKey(f"{vault}/db-password"), ctx()).value)

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(read, range(16))) == {"second-pass"}
    assert list(p._clients) == [kv.url]  # "other" and "main" both map to the one URL
    p.fetch(DocKey("main/app-json"), ctx())
    msi_after = sum(1 for r in kv.token_requests if r["endpoint"] == "msi")
    assert msi_after - msi_before <= 16  # at most one token per racing first request, then cached
    n = len(kv.token_requests)
    for _ in range(5):
        p.fetch(DocKey("main/db-password"), ctx())
    assert len(kv.token_requests) == n  # the token is reused, not fetched per read
    p.close()


def test_sdk_is_imported_lazily() -> None:
    code = (
        "import sys, initfetch.providers.azure.keyvault as m; "
        "assert not [n for n in sys.modules if n.startswith('azure')], 'azure imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


# --- token service faults ------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429])
def test_token_service_errors_are_unavailable(
    kv: KeyVaultDouble, mi_env: dict[str, str], status: int
) -> None:
    for auth, environ in (
        ({"method": "managed_identity"}, None),
        (sp_auth(kv, client_secret_file=kv.client_secret_file), {}),
    ):
        p = make(kv, auth, environ=environ)
        kv.fail_token(status)
        err = fetch_error(p, "v/db-password")
        assert isinstance(err, Unavailable), err
        assert "token service unavailable while logging in with" in str(err)
        # The core's next attempt logs in and reads.
        assert p.fetch(DocKey("v/db-password"), ctx()).value == "second-pass"


def test_token_service_down_is_unavailable(kv: KeyVaultDouble, clean_env: pytest.MonkeyPatch) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    clean_env.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{closed}/msi/token")
    clean_env.setenv("IDENTITY_HEADER", kv.identity_header)
    for auth in (
        {"method": "managed_identity"},
        {
            **sp_auth(kv, client_secret_file=kv.client_secret_file),
            "authority_host": f"https://127.0.0.1:{closed}",
        },
    ):
        err = fetch_error(make(kv, auth), "v/db-password")
        assert isinstance(err, Unavailable) and "connection failed" in str(err), err
