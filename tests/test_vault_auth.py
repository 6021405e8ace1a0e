"""Vault login methods against a real OpenBao: token, AppRole (+ wrapped secret id), JWT, Kubernetes."""

from __future__ import annotations

import http.client
import importlib.util
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.backends.openbao as openbao_backend
from initfetch.errors import AccessDenied
from initfetch.providers.vault.provider import VaultProvider
from tests.backends.local_http import LocalServer, QuietHandler
from tests.backends.openbao import (
    FakeAPI,
    OpenBao,
    fetch,
    resolve,
    start_fake_tokenreview,
)
from tests.conftest import require

# Fixtures shared with other test modules.
openbao = openbao_backend.openbao

CANARY = "CANARY-auth-51be0d"
REF = "vault://secret/authapp/db#password"


@pytest.fixture(scope="module")
def bao(openbao: OpenBao) -> OpenBao:
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret("authapp/db", {"password": CANARY})
    c.sys.create_or_update_policy("authapp", 'path "secret/data/authapp/*" { capabilities = ["read"] }')
    return openbao


def provider(bao: OpenBao, auth: dict[str, Any] | None = None, **environ: str) -> VaultProvider:
    options: dict[str, Any] = {"address": bao.url}
    if auth is not None:
        options["auth"] = auth
    problems = list(VaultProvider.check_options(options))
    assert problems == []
    return VaultProvider("vault", options, {"HOME": str(bao.workdir / "no-home"), **environ})


# --- token ---------------------------------------------------------------------------------


def test_token_from_vault_token(bao: OpenBao) -> None:
    p = provider(bao, VAULT_TOKEN="root")
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.credential_env() == {"VAULT_TOKEN"}


def test_token_from_file_wins_and_is_not_an_env_credential(bao: OpenBao, tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("root\n")
    p = provider(bao, {"method": "token", "token_file": str(tmp_path / "tok")}, VAULT_TOKEN="s.wrong")
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.credential_env() == set()


def test_token_from_home_vault_token(bao: OpenBao, tmp_path: Path) -> None:
    (tmp_path / ".vault-token").write_text("root")
    p = VaultProvider("vault", {"address": bao.url}, {"HOME": str(tmp_path)})
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.credential_env() == set()


def test_no_token_anywhere_is_access_denied(bao: OpenBao) -> None:
    with pytest.raises(AccessDenied, match="no Vault token"):
        fetch(provider(bao), REF)


# --- AppRole ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def approle(bao: OpenBao) -> dict[str, Any]:
    c = bao.client()
    c.sys.enable_auth_method("approle", path="approle-x")
    c.auth.approle.create_or_update_approle("app", token_policies=["authapp"], mount_point="approle-x")
    role_id = c.auth.approle.read_role_id("app", mount_point="approle-x")["data"]["role_id"]

    def secret_id() -> str:
        return str(c.auth.approle.generate_secret_id("app", mount_point="approle-x")["data"]["secret_id"])

    def wrapped_secret_id() -> str:
        r = c.adapter.post("/v1/auth/approle-x/role/app/secret-id", wrap_ttl="60s")
        return str(r["wrap_info"]["token"])

    return {"role_id": role_id, "secret_id": secret_id, "wrapped": wrapped_secret_id}


def test_approle_from_files_with_custom_mount(bao: OpenBao, approle: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "role_id").write_text(approle["role_id"] + "\n")
    (tmp_path / "secret_id").write_text(approle["secret_id"]())
    auth = {
        "method": "approle",
        "mount": "approle-x",
        "role_id_file": str(tmp_path / "role_id"),
        "secret_id_file": str(tmp_path / "secret_id"),
    }
    p = provider(bao, auth, VAULT_TOKEN="root")
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.client.token != "root"  # logged in through AppRole, VAULT_TOKEN ignored
    assert p.credential_env() == set()


def test_approle_from_env_reports_credential_env(bao: OpenBao, approle: dict[str, Any]) -> None:
    auth = {"method": "approle", "mount": "approle-x", "role_id_env": "ROLE", "secret_id_env": "SECRET"}
    p = provider(bao, auth, ROLE=approle["role_id"], SECRET=approle["secret_id"](), VAULT_TOKEN="root")
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.credential_env() == {"ROLE", "SECRET"}


def test_approle_role_id_as_value(bao: OpenBao, approle: dict[str, Any]) -> None:
    auth = {"method": "approle", "mount": "approle-x", "role_id": approle["role_id"], "secret_id_env": "S"}
    assert fetch(provider(bao, auth, S=approle["secret_id"]()), REF).value == {"password": CANARY}


def test_approle_bad_secret_id_is_access_denied_without_the_secret(
    bao: OpenBao, approle: dict[str, Any]
) -> None:
    bad = "CANARY-secretid-0000-1111"
    auth = {"method": "approle", "mount": "approle-x", "role_id": approle["role_id"], "secret_id_env": "S"}
    p = provider(bao, auth, S=bad)
    with pytest.raises(AccessDenied) as e:
        fetch(p, REF)
    msg = str(e.value)
    assert "approle login at auth/approle-x was refused" in msg
    assert bad not in msg and approle["role_id"] not in msg
    # A refused login is permanent: the next document fails the same way without a new login.
    with pytest.raises(AccessDenied):
        fetch(p, REF)


def test_approle_wrapped_secret_id_is_unwrapped(
    bao: OpenBao, approle: dict[str, Any], tmp_path: Path
) -> None:
    wrapping_token = approle["wrapped"]()
    (tmp_path / "wrapped").write_text(wrapping_token)
    auth = {
        "method": "approle",
        "mount": "approle-x",
        "role_id": approle["role_id"],
        "secret_id_file": str(tmp_path / "wrapped"),
        "secret_id_wrapped": True,
    }
    assert fetch(provider(bao, auth), REF).value == {"password": CANARY}
    # A wrapping token works once: a second use (someone intercepted it) is refused.
    with pytest.raises(AccessDenied, match="already used") as e:
        fetch(provider(bao, auth), REF)
    assert wrapping_token not in str(e.value)


class FlakyProxy(LocalServer):
    """A forwarding proxy in front of OpenBao that fails the first request to one path.

    `mode` is "503" (answer like a Vault in standby) or "reset" (drop the connection
    with a TCP RST). `log` records "METHOD path" for every request it saw.
    """

    def __init__(self, upstream: str, fail_path: str, mode: str) -> None:
        self.log: list[str] = []
        super().__init__(_proxy_handler(upstream, fail_path, mode, self.log))


def _proxy_handler(upstream: str, fail_path: str, mode: str, log: list[str]) -> type[QuietHandler]:
    host, port = upstream.removeprefix("http://").split(":")
    failed = threading.Event()

    class Handler(QuietHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            log.append(f"{self.command} {self.path}")
            if self.path == fail_path and not failed.is_set():
                failed.set()
                if mode == "reset":
                    # SO_LINGER 0: close() sends RST, the client sees "connection reset".
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                data = json.dumps({"errors": ["Vault is sealed"]}).encode()
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("content-length", "connection", "transfer-encoding", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            finally:
                conn.close()

        do_GET = do_POST = do_PUT = do_DELETE = handle_any

    return Handler


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_approle_wrapped_secret_id_survives_a_transient_login_failure(
    bao: OpenBao, approle: dict[str, Any], tmp_path: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The Compose "Vault still starting" case: the first login fails transiently, the core retries,
    and the retry logs in with the secret id unwrapped the first time (a wrapping token works once)."""
    wrapping_token = approle["wrapped"]()
    environ = {"ROLE": approle["role_id"], "WRAPPED": wrapping_token, "HOME": str(tmp_path)}
    caplog.set_level("DEBUG")
    with FlakyProxy(bao.url, "/v1/auth/approle-x/login", mode) as proxy:
        manifest = (
            "version: 1\n"
            "providers:\n"
            "  vault:\n"
            "    type: vault\n"
            f"    address: {proxy.url}\n"
            "    auth: {method: approle, mount: approle-x, role_id_env: ROLE, secret_id_env: WRAPPED,"
            " secret_id_wrapped: true}\n"
            "secrets:\n"
            f"  pw: {REF}\n"
        )
        res = resolve(tmp_path, manifest, environ, timeout=15)
    assert res.values["pw"] == CANARY
    calls = [line for line in proxy.log if "unwrap" in line or "login" in line]
    assert calls == [
        "POST /v1/sys/wrapping/unwrap",
        "POST /v1/auth/approle-x/login",  # failed transiently
        "POST /v1/auth/approle-x/login",  # retried with the cached secret id, no second unwrap
    ]
    assert wrapping_token not in caplog.text and CANARY not in caplog.text


# --- JWT -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_key(bao: OpenBao) -> Any:
    require(importlib.util.find_spec("jwt"), "PyJWT is not installed")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    c = bao.client()
    c.sys.enable_auth_method("jwt", path="ci-jwt")
    c.adapter.post(
        "/v1/auth/ci-jwt/config",
        json={"jwt_validation_pubkeys": [public_pem], "bound_issuer": "https://ci.example"},
    )
    c.adapter.post(
        "/v1/auth/ci-jwt/role/deploy",
        json={
            "role_type": "jwt",
            "user_claim": "sub",
            "bound_audiences": ["vault"],
            "token_policies": ["authapp"],
            "token_ttl": "10m",
        },
    )
    return key


def mint(key: Any, iss: str = "https://ci.example") -> str:
    import jwt

    now = int(time.time())
    claims = {"iss": iss, "sub": "pipeline-42", "aud": "vault", "iat": now, "nbf": now - 5, "exp": now + 300}
    return str(jwt.encode(claims, key, algorithm="RS256"))


def test_jwt_login_from_token_file(bao: OpenBao, jwt_key: Any, tmp_path: Path) -> None:
    (tmp_path / "id_token").write_text(mint(jwt_key))
    auth = {"method": "jwt", "mount": "ci-jwt", "role": "deploy", "token_file": str(tmp_path / "id_token")}
    assert fetch(provider(bao, auth), REF).value == {"password": CANARY}


def test_jwt_login_from_env(bao: OpenBao, jwt_key: Any) -> None:
    auth = {"method": "jwt", "mount": "ci-jwt", "role": "deploy", "token_env": "CI_ID_TOKEN"}
    p = provider(bao, auth, CI_ID_TOKEN=mint(jwt_key))
    assert fetch(p, REF).value == {"password": CANARY}
    assert p.credential_env() == {"CI_ID_TOKEN"}


def test_jwt_wrong_issuer_is_access_denied(bao: OpenBao, jwt_key: Any) -> None:
    token = mint(jwt_key, iss="https://evil.example")
    auth = {"method": "jwt", "mount": "ci-jwt", "role": "deploy", "token_env": "T"}
    with pytest.raises(AccessDenied, match="jwt login at auth/ci-jwt was refused") as e:
        fetch(provider(bao, auth, T=token), REF)
    assert token not in str(e.value)


# --- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube(bao: OpenBao) -> Iterator[FakeAPI]:
    import trustme

    api = start_fake_tokenreview("apps", "web", "uid-1")
    c = bao.client()
    c.sys.enable_auth_method("kubernetes", path="k8s")
    c.adapter.post(
        "/v1/auth/k8s/config",
        json={
            "kubernetes_host": api.url,
            "disable_local_ca_jwt": True,
            "kubernetes_ca_cert": trustme.CA().cert_pem.bytes().decode(),
        },
    )
    c.adapter.post(
        "/v1/auth/k8s/role/web",
        json={
            "bound_service_account_names": ["web"],
            "bound_service_account_namespaces": ["apps"],
            "token_policies": ["authapp"],
        },
    )
    yield api
    api.stop()


def service_account_jwt() -> str:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": "https://kubernetes.default.svc",
        "sub": "system:serviceaccount:apps:web",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 600,
        "kubernetes.io": {"namespace": "apps", "serviceaccount": {"name": "web", "uid": "uid-1"}},
        "jti": uuid.uuid4().hex,
    }
    return str(jwt.encode(claims, key, algorithm="RS256"))


def test_kubernetes_login_with_token_file(bao: OpenBao, kube: FakeAPI, tmp_path: Path) -> None:
    sa_token = service_account_jwt()
    (tmp_path / "token").write_text(sa_token)
    auth = {"method": "kubernetes", "mount": "k8s", "role": "web", "token_file": str(tmp_path / "token")}
    assert fetch(provider(bao, auth), REF).value == {"password": CANARY}
    reviews = [r for r in kube.requests if r[1] == "/apis/authentication.k8s.io/v1/tokenreviews"]
    assert reviews and sa_token.encode() in reviews[-1][2]


def test_kubernetes_wrong_role_is_access_denied(bao: OpenBao, kube: FakeAPI, tmp_path: Path) -> None:
    sa_token = service_account_jwt()
    (tmp_path / "token").write_text(sa_token)
    auth = {"method": "kubernetes", "mount": "k8s", "role": "nope", "token_file": str(tmp_path / "token")}
    with pytest.raises(AccessDenied, match="kubernetes login at auth/k8s") as e:
        fetch(provider(bao, auth), REF)
    assert sa_token not in str(e.value)


def test_kubernetes_default_token_file_missing(bao: OpenBao) -> None:
    with pytest.raises(AccessDenied, match="/var/run/secrets/kubernetes.io/serviceaccount/token"):
        fetch(provider(bao, {"method": "kubernetes", "role": "web"}), REF)


# --- offline validation of the auth block ---------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "keypath", "fragment"),
    [
        ({"method": "ldap"}, ("auth", "method"), "unknown auth method 'ldap'"),
        ({"method": "approle", "role_id": "x", "bogus": 1}, ("auth", "bogus"), "unknown option 'bogus'"),
        ({"method": "approle"}, ("auth",), "needs one of role_id, role_id_file or role_id_env"),
        ({"method": "approle", "role_id": "x", "role_id_env": "R"}, ("auth", "role_id_env"), "only one"),
        ({"method": "approle", "role_id": "x", "secret_id_wrapped": True}, ("auth", "secret_id_wrapped"), ""),
        (
            {"method": "approle", "role_id": "x", "secret_id_wrapped": "yes"},
            ("auth", "secret_id_wrapped"),
            "",
        ),
        ({"method": "kubernetes"}, ("auth",), "needs 'role'"),
        ({"method": "jwt", "token_file": "/t"}, ("auth",), "needs 'role'"),
        ({"method": "jwt", "role": "r"}, ("auth",), "needs one of token, token_file or token_env"),
        ({"method": "jwt", "role": "r", "token": "eyJ"}, ("auth", "token"), "not inline"),
        ({"method": "token", "role": "r"}, ("auth", "role"), "unknown option 'role'"),
        ({"method": "kubernetes", "role": "r", "mount": ""}, ("auth", "mount"), "non-empty"),
    ],
)
def test_check_options_auth_problems(auth: dict[str, Any], keypath: tuple[str, ...], fragment: str) -> None:
    problems = list(VaultProvider.check_options({"auth": auth}))
    assert any(k == keypath and fragment in m for k, m in problems), problems


def test_check_options_top_level() -> None:
    problems = dict(
        VaultProvider.check_options(
            {"adress": "x", "address": "vault:8200", "client_key": "/k", "tls_skip_verify": "yes"}
        )
    )
    assert ("adress",) in problems and ("address",) in problems
    assert ("client_key",) in problems and ("tls_skip_verify",) in problems
    assert list(VaultProvider.check_options({})) == []
    assert list(VaultProvider.check_options({"auth": {"method": "kubernetes", "role": "r"}})) == []
