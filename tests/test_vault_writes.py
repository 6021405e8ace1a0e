"""Write-style references against a real OpenBao: PKI certificates issued by a write, transit
decryption, a write sent once (never repeated when it may have happened), certificate
revocation, and the manifest's `write:` checks."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import tests.backends.openbao as openbao_backend
from initfetch.errors import BadInput
from initfetch.manifest import load_manifest
from initfetch.providers.base import FetchContext
from tests.backends.fault_proxy import FaultPlan, fault_proxy
from tests.backends.openbao import OpenBao, open_resolver, resolve, vault_provider

openbao = openbao_backend.openbao

CANARY_PLAINTEXT = "CANARY-transit-plain-7c41"


# --- setting up the engines --------------------------------------------------------------------


def setup_pki(bao: OpenBao, ttl: str = "5m", **role: Any) -> str:
    """A PKI mount with a root CA and a role `web` for *.internal; returns the mount."""
    c = bao.client()
    mount = f"pki-{uuid.uuid4().hex[:8]}"
    c.sys.enable_secrets_engine("pki", path=mount, config={"max_lease_ttl": "2h"})
    c.adapter.post(f"/v1/{mount}/root/generate/internal", json={"common_name": "Test Root", "ttl": "2h"})
    c.adapter.post(
        f"/v1/{mount}/roles/web",
        json={
            "allowed_domains": "internal",
            "allow_subdomains": True,
            "max_ttl": ttl,
            "key_type": "ec",
            "key_bits": 256,
            "not_before_duration": "1s",
            **role,
        },
    )
    return mount


def issued(bao: OpenBao, mount: str) -> set[str]:
    """Serials of every certificate the mount has stored (the CA's included)."""
    keys = bao.client().adapter.list(f"/v1/{mount}/certs")["data"]["keys"]
    return {k.replace("-", ":") for k in keys}


def revoked(bao: OpenBao, mount: str, serial: str) -> bool:
    data = bao.client().adapter.get(f"/v1/{mount}/cert/{serial}")["data"]
    return int(data.get("revocation_time") or 0) > 0


def setup_transit(bao: OpenBao, plaintext: str) -> tuple[str, str]:
    """A transit mount with a key `app`; returns (mount, ciphertext of `plaintext`)."""
    c = bao.client()
    mount = f"transit-{uuid.uuid4().hex[:8]}"
    c.sys.enable_secrets_engine("transit", path=mount)
    c.adapter.post(f"/v1/{mount}/keys/app", json={})
    answer = c.adapter.post(
        f"/v1/{mount}/encrypt/app", json={"plaintext": base64.b64encode(plaintext.encode()).decode()}
    )
    return mount, answer["data"]["ciphertext"]


def env(bao: OpenBao, tmp_path: Path, url: str | None = None, **more: str) -> dict[str, str]:
    return {"VAULT_ADDR": url or bao.url, "VAULT_TOKEN": "root", "HOME": str(tmp_path), **more}


def pki_manifest(mount: str, cn: str = "web.internal", extra: str = "") -> str:
    return f"""
version: 1
secrets:
  web:
    ref: vault://{mount}/issue/web
    write: {{common_name: "{cn}", ttl: 2m, alt_names: [api.internal, www.internal]}}
  web_key:
    ref: "vault://{mount}/issue/web#private_key"
    write: {{common_name: "{cn}", ttl: 2m, alt_names: [api.internal, www.internal]}}
{extra}
"""


# --- PKI ---------------------------------------------------------------------------------------


def test_pki_issue_gives_certificate_key_chain_and_a_lease_from_notafter(
    openbao: OpenBao, tmp_path: Path
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    mount = setup_pki(openbao)
    before = issued(openbao, mount)
    result = resolve(tmp_path, pki_manifest(mount), env(openbao, tmp_path), timeout=20)
    web = result.values["web"]
    # one write served both secrets (same path and parameters): one new certificate
    new = issued(openbao, mount) - before
    assert new == {web["serial_number"]}
    assert result.values["web_key"] == web["private_key"]
    cert = x509.load_pem_x509_certificate(web["certificate"].encode())
    key = serialization.load_pem_private_key(web["private_key"].encode(), None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"web.internal", "api.internal", "www.internal"}
    assert web["issuing_ca"] in web["ca_chain"][0] or web["ca_chain"][0] in web["issuing_ca"]
    lease = result.info["web"].lease
    span = cert.not_valid_after_utc.timestamp() - cert.not_valid_before_utc.timestamp()
    assert lease is not None and not lease.renewable and not lease.retire
    assert abs(lease.validity - span) <= 1
    assert 100 <= lease.duration <= 121  # what is left of 2m (+1s of not_before_duration)
    assert lease.id == f"{mount}/cert/{web['serial_number']}"
    meta = result.info["web"].metadata
    assert meta["serial_number"] == web["serial_number"] and meta["write"] is True


def test_different_parameters_are_different_writes(openbao: OpenBao, tmp_path: Path) -> None:
    mount = setup_pki(openbao)
    manifest = f"""
version: 1
secrets:
  a: {{ref: "vault://{mount}/issue/web", write: {{common_name: a.internal}}}}
  b: {{ref: "vault://{mount}/issue/web", write: {{common_name: "${{CN}}"}}}}
"""
    result = resolve(tmp_path, manifest, env(openbao, tmp_path, CN="b.internal"), timeout=20)
    assert result.values["a"]["serial_number"] != result.values["b"]["serial_number"]
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(result.values["b"]["certificate"].encode())
    assert cert.subject.rfc4514_string() == "CN=b.internal"  # ${CN} expanded


def test_revoke_of_the_certificate_lease_revokes_its_serial(openbao: OpenBao, tmp_path: Path) -> None:
    mount = setup_pki(openbao)
    with open_resolver(tmp_path, pki_manifest(mount), env(openbao, tmp_path), timeout=20) as resolver:
        result = resolver.resolve()
        serial = result.values["web"]["serial_number"]
        lease = result.info["web"].lease
        assert not revoked(openbao, mount, serial)
        resolver.instances["vault"].revoke(lease.id, FetchContext(time.monotonic() + 10))
    assert revoked(openbao, mount, serial)


def test_a_refused_issue_is_one_line_and_not_retried(openbao: OpenBao, tmp_path: Path) -> None:
    from initfetch.errors import ResolveFailed

    mount = setup_pki(openbao)
    manifest = f"""
version: 1
secrets:
  web: {{ref: "vault://{mount}/issue/web", write: {{common_name: evil.example.com}}}}
"""
    with pytest.raises(ResolveFailed) as e:
        resolve(tmp_path, manifest, env(openbao, tmp_path), timeout=20)
    lines = str(e.value).splitlines()
    assert len(lines) == 1 and "bad-reference" in lines[0] and "evil.example.com" not in lines[0]


# --- sent once ---------------------------------------------------------------------------------


def _issue_posts(proxy: Any, mount: str) -> int:
    return proxy.paths[f"/v1/{mount}/issue/web"]


@pytest.mark.parametrize("fault", ["reset", "500", "slow"])
def test_a_write_that_may_have_happened_is_not_repeated(openbao: OpenBao, tmp_path: Path, fault: str) -> None:
    from initfetch.errors import ResolveFailed

    mount = setup_pki(openbao)
    plan = FaultPlan(
        eligible=lambda m, p, h: m == "POST" and "/issue/" in p, script=[fault], html_share=0, slow_hold=4
    )
    timeout = 2 if fault == "slow" else 10  # slow: no answer before the deadline
    with fault_proxy(openbao.url, plan) as proxy:
        with pytest.raises(ResolveFailed) as e:
            resolve(tmp_path, pki_manifest(mount), env(openbao, tmp_path, url=proxy.url), timeout=timeout)
        assert _issue_posts(proxy, mount) == 1
    text = str(e.value)
    assert "write-uncertain" in text and "the write may have happened; not repeated" in text
    assert e.value.exit_code == 3


def test_a_write_refused_before_it_was_carried_out_is_retried(openbao: OpenBao, tmp_path: Path) -> None:
    """A 429 (or a sealed 503) means Vault did not carry it out: the resolver tries again."""
    mount = setup_pki(openbao)
    before = issued(openbao, mount)
    plan = FaultPlan(eligible=lambda m, p, h: m == "POST" and "/issue/" in p, script=["429"], burst=(0, 0))
    with fault_proxy(openbao.url, plan) as proxy:
        result = resolve(tmp_path, pki_manifest(mount), env(openbao, tmp_path, url=proxy.url), timeout=20)
        assert _issue_posts(proxy, mount) == 2
    assert issued(openbao, mount) - before == {result.values["web"]["serial_number"]}


def test_a_write_that_never_connected_is_unavailable(tmp_path: Path) -> None:
    from initfetch.errors import ResolveFailed
    from tests.backends.local_http import free_port

    manifest = """
version: 1
secrets:
  web: {ref: "vault://pki/issue/web", write: {common_name: a.internal}}
"""
    environ = {"VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "VAULT_TOKEN": "t", "HOME": str(tmp_path)}
    with pytest.raises(ResolveFailed) as e:
        resolve(tmp_path, manifest, environ, timeout=2)
    assert e.value.exit_code == 4 and "write-uncertain" not in str(e.value)


# --- transit -----------------------------------------------------------------------------------


def test_transit_decrypt_with_the_ciphertext_from_env_and_from_a_file(
    openbao: OpenBao, tmp_path: Path
) -> None:
    mount, ciphertext = setup_transit(openbao, CANARY_PLAINTEXT)
    (tmp_path / "blob.txt").write_text(ciphertext + "\n")
    manifest = f"""
version: 1
secrets:
  from_env:
    ref: "vault://{mount}/decrypt/app#plaintext"
    write: {{ciphertext: "${{APP_CIPHERTEXT}}"}}
  from_file:
    ref: "vault://{mount}/decrypt/app#plaintext"
    write: {{ciphertext: {{file: blob.txt}}}}
"""
    result = resolve(tmp_path, manifest, env(openbao, tmp_path, APP_CIPHERTEXT=ciphertext), timeout=20)
    assert result.values["from_env"] == CANARY_PLAINTEXT
    assert result.values["from_file"] == CANARY_PLAINTEXT
    assert result.info["from_env"].lease is None


def test_transit_ciphertext_file_missing_is_one_line(openbao: OpenBao, tmp_path: Path) -> None:
    from initfetch.errors import ResolveFailed

    mount, _ = setup_transit(openbao, CANARY_PLAINTEXT)
    manifest = f"""
version: 1
secrets:
  x: {{ref: "vault://{mount}/decrypt/app#plaintext", write: {{ciphertext: {{file: nope.txt}}}}}}
"""
    with pytest.raises(ResolveFailed) as e:
        resolve(tmp_path, manifest, env(openbao, tmp_path), timeout=10)
    assert len(str(e.value).splitlines()) == 1 and "nope.txt" in str(e.value)


# --- the manifest ------------------------------------------------------------------------------


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Any:
    path = tmp_path / "initfetch.yaml"
    path.write_text(text)
    return load_manifest(path, environ or {})


def test_write_parameters_become_the_document_key(tmp_path: Path) -> None:
    from initfetch.reference import FromFile

    m = load(
        tmp_path,
        """
version: 1
secrets:
  web:
    ref: vault://pki/issue/web
    write: {common_name: "${CN}", ttl: 72h, alt_names: [a.internal, b.internal], exclude_cn_from_sans: true}
    revoke_replaced: true
  plain: {ref: "transit/decrypt/app", write: {ciphertext: {file: c.txt}}}
""".replace('"transit/', '"vault://transit/'),
        {"CN": "web.internal"},
    )
    write = m.secrets["web"].ref.doc.write
    assert dict(write.params) == {
        "alt_names": "a.internal,b.internal",
        "common_name": "web.internal",
        "exclude_cn_from_sans": "true",
        "ttl": "72h",
    }
    assert write.revoke_replaced is True
    assert m.secrets["plain"].ref.doc.write.params == (("ciphertext", FromFile(str(tmp_path / "c.txt"))),)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("{ref: 'env://X', write: {a: b}}", "a env provider has no write-style references"),
        ("{ref: 'vault://pki/issue/web?version=1', write: {}}", "takes no ?query"),
        ("{ref: vault://pki/issue/web, write: [a]}", "write must be a mapping"),
        ("{ref: vault://pki/issue/web, write: {'bad name': x}}", "bad write parameter name"),
        ("{ref: vault://pki/issue/web, write: {a: {b: c}}}", "a mapping must be {file: PATH}"),
        ("{ref: vault://pki/issue/web, write: {a: null}}", "must be a string, a number"),
        ("{ref: vault://secret/app, revoke_replaced: true}", "revoke_replaced is for a write-style"),
        (
            "{ref: vault://pki/issue/web, write: {}, revoke_replaced: 1}",
            "revoke_replaced must be true or false",
        ),
    ],
)
def test_write_problems_are_one_line_each(tmp_path: Path, secret: str, message: str) -> None:
    with pytest.raises(BadInput) as e:
        load(tmp_path, f"version: 1\nsecrets:\n  s: {secret}\n")
    assert any(message in str(p) for p in e.value.problems), str(e.value)
    assert all(":3" in str(p) for p in e.value.problems)


def test_a_write_parameter_value_is_never_quoted(tmp_path: Path) -> None:
    with pytest.raises(BadInput) as e:
        load(
            tmp_path, "version: 1\nsecrets:\n  s: {ref: vault://t/decrypt/k, write: {password: '${NOPE}'}}\n"
        )
    assert "NOPE is not set" in str(e.value)
    with pytest.raises(BadInput) as e:
        load(
            tmp_path, "version: 1\nsecrets:\n  s: {ref: vault://t/decrypt/k, write: {p4ss-w0rd!: hunter2}}\n"
        )
    assert "hunter2" not in str(e.value) and "p4ss-w0rd!" not in str(e.value)


def test_provider_fetch_of_a_write_doc(openbao: OpenBao) -> None:
    """The provider on its own: a DocKey with a Write is a POST."""
    from initfetch.reference import DocKey, Write

    mount, ciphertext = setup_transit(openbao, CANARY_PLAINTEXT)
    provider = vault_provider(openbao)
    try:
        doc = DocKey(f"{mount}/decrypt/app", (), Write((("ciphertext", ciphertext),)))
        got = provider.fetch(doc, FetchContext(time.monotonic() + 10))
        assert got.value["plaintext"] == CANARY_PLAINTEXT
    finally:
        provider.close()


# --- preview and check never write unless asked -----------------------------------------------


def _cli_manifest(tmp_path: Path, mount: str) -> Path:
    (tmp_path / "tls.tmpl").write_text("{{ secrets.web.certificate }}{{ secrets.web.private_key }}")
    path = tmp_path / "initfetch.yaml"
    path.write_text(
        pki_manifest(mount)
        + "templates:\n  - {src: tls.tmpl, dest: tls.pem}\nfiles:\n  - {secret: web_key, dest: tls.key}\n"
    )
    return path


def test_check_and_offline_preview_contact_nothing_and_show_placeholders(
    openbao: OpenBao, tmp_path: Path
) -> None:
    from tests.helpers import clean_env, run_cli

    mount = setup_pki(openbao)
    before = issued(openbao, mount)
    path = _cli_manifest(tmp_path, mount)
    environ = clean_env(VAULT_ADDR=openbao.url, VAULT_TOKEN="root", HOME=str(tmp_path))
    check = run_cli(["check", "-m", str(path)], env=environ)
    offline = run_cli(["preview", "--offline", "-m", str(path)], env=environ)
    assert check.returncode == 0, check.stderr
    assert offline.returncode == 0, offline.stderr
    assert "<secret:web/certificate>" in offline.stdout and "<secret:web_key>" in offline.stdout
    assert issued(openbao, mount) == before


def test_online_preview_skips_writes_unless_allowed_and_then_revokes(
    openbao: OpenBao, tmp_path: Path
) -> None:
    from tests.helpers import clean_env, run_cli

    mount = setup_pki(openbao)
    before = issued(openbao, mount)
    path = _cli_manifest(tmp_path, mount)
    environ = clean_env(VAULT_ADDR=openbao.url, VAULT_TOKEN="root", HOME=str(tmp_path))
    skipped = run_cli(["preview", "-m", str(path)], env=environ)
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped: a write" in skipped.stdout and "<secret:web_key>" in skipped.stdout
    assert issued(openbao, mount) == before
    allowed = run_cli(["preview", "--allow-writes", "-m", str(path)], env=environ)
    assert allowed.returncode == 0, allowed.stderr
    assert "PRIVATE KEY" not in allowed.stdout  # masked
    new = issued(openbao, mount) - before
    assert len(new) == 1  # one write for both secrets
    assert revoked(openbao, mount, new.pop())  # and revoked when the preview ended
    assert "revoked 1 lease(s) this preview created" in allowed.stderr


def test_doctor_diff_and_scan_never_write(openbao: OpenBao, tmp_path: Path) -> None:
    from tests.helpers import clean_env, run_cli

    mount = setup_pki(openbao)
    before = issued(openbao, mount)
    path = _cli_manifest(tmp_path, mount)
    environ = clean_env(VAULT_ADDR=openbao.url, VAULT_TOKEN="root", HOME=str(tmp_path))
    doctor = run_cli(["doctor", "-m", str(path)], env=environ)
    assert "a write-style secret; doctor never writes" in doctor.stdout, doctor.stdout + doctor.stderr
    out = tmp_path / "out"
    out.mkdir()
    diff = run_cli(["diff", "-m", str(path), "-o", str(out)], env=environ)
    assert diff.returncode == 0 and "tls.pem" in diff.stdout, diff.stdout + diff.stderr
    (tmp_path / "repo").mkdir()
    scan = run_cli(["scan", "-m", str(path), str(tmp_path / "repo")], env=environ)
    assert scan.returncode == 0, scan.stderr
    assert issued(openbao, mount) == before
