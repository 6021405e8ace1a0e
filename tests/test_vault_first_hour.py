"""Issue 12, Vault side, against a real OpenBao: the BAO_* family, an unset
VAULT_ADDR said out loud, a web server that is not Vault, a body that is not
JSON (pki/ca/pem), and a write-only endpoint."""

from __future__ import annotations

import pytest

from initfetch.errors import AccessDenied, BadReference, Unavailable
from initfetch.providers.vault.provider import VaultProvider
from tests.backends.local_http import QuietHandler, serve
from tests.backends.openbao import OpenBao, fetch
from tests.backends.openbao import openbao as openbao  # session fixture

CANARY = "CANARY-bao-7d21e0"


def test_bao_variables_are_read_and_vault_ones_win(openbao: OpenBao) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret("firsthour/bao", {"k": CANARY})
    p = VaultProvider(
        "vault", {}, {"BAO_ADDR": openbao.url, "BAO_TOKEN": openbao.root_token, "HOME": "/nonexistent"}
    )
    assert p.client.conn.address == openbao.url and p.client.conn.address_from == "BAO_ADDR"
    assert fetch(p, "vault://secret/firsthour/bao").value == {"k": CANARY}
    assert p.credential_env() == {"BAO_TOKEN"}  # exec strips the token it logged in with
    both = {"VAULT_ADDR": openbao.url, "BAO_ADDR": "http://127.0.0.1:9", "VAULT_TOKEN": openbao.root_token}
    p = VaultProvider("vault", {}, {**both, "BAO_TOKEN": "wrong", "HOME": "/nonexistent"})
    assert p.client.conn.address_from == "VAULT_ADDR"
    assert fetch(p, "vault://secret/firsthour/bao").value == {"k": CANARY}
    p = VaultProvider("vault", {"address": openbao.url}, {"HOME": "/nonexistent"})
    with pytest.raises(AccessDenied, match="VAULT_TOKEN \\(or BAO_TOKEN\\)"):
        fetch(p, "vault://secret/firsthour/bao#k")


def test_unset_address_is_named_in_the_error() -> None:
    p = VaultProvider("vault", {}, {"VAULT_TOKEN": "t", "HOME": "/nonexistent"})
    with pytest.raises(Unavailable, match="VAULT_ADDR and BAO_ADDR are not set"):
        fetch(p, "vault://secret/app#k", timeout=2)


def test_a_web_server_that_is_not_vault_is_not_reported_as_not_found() -> None:
    class NotVault(QuietHandler):
        def do_GET(self) -> None:
            body = b"<html><body>404 Not Found</body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(NotVault) as server:
        p = VaultProvider("vault", {"address": server.url}, {"VAULT_TOKEN": "t", "HOME": "/nonexistent"})
        with pytest.raises(BadReference, match="does not look like Vault or OpenBao"):
            fetch(p, "vault://secret/app#k")


def test_plain_text_bodies_are_values_and_write_only_paths_say_so(openbao: OpenBao) -> None:
    client = openbao.client()
    if "pki/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("pki", path="pki")
        client.secrets.pki.generate_root("internal", "firsthour.test", mount_point="pki")
        client.secrets.pki.create_or_update_role(
            "app", {"allowed_domains": "test", "allow_subdomains": True}, mount_point="pki"
        )
    p = VaultProvider(
        "vault", {"address": openbao.url}, {"VAULT_TOKEN": openbao.root_token, "HOME": "/nonexistent"}
    )
    pem = fetch(p, "vault://pki/ca/pem").value
    assert isinstance(pem, str) and pem.startswith("-----BEGIN CERTIFICATE-----")
    with pytest.raises(BadReference, match="needs the long form with write: parameters"):
        fetch(p, "vault://pki/issue/app")
