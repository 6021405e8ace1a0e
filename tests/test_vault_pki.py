"""PKI certificates in files (a real OpenBao, the real CLI): the layouts servers want
(fullchain, one PEM bundle, separate files, a PKCS#12 keystore with a password secret), the
private key 0400 by default; and in watch mode a certificate issued anew at about two thirds
of its validity, served by a real nginx after `on_change` reloaded it."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.backends.openbao as openbao_backend
from tests.backends.local_http import free_port
from tests.backends.openbao import OpenBao
from tests.conftest import require
from tests.helpers import assert_no_canary, clean_env, run_cli, write
from tests.test_vault_writes import issued, revoked, setup_pki
from tests.watch_helpers import Proc, procs, start, wait_until

openbao = openbao_backend.openbao
__all__ = ["procs"]

CANARY_KEYSTORE_PASSWORD = "CANARY-p12-pass-31d9"


def manifest(mount: str, ttl: str, extra: str = "") -> str:
    return f"""
version: 1
secrets:
  web:
    ref: vault://{mount}/issue/web
    write: {{common_name: web.internal, ttl: {ttl}}}
  ks_pass: env://KS_PASS
templates:
  - {{src: web.crt.tmpl, dest: tls/web.crt, mode: "0444"}}
  - {{src: web.key.tmpl, dest: tls/web.key}}
files:
  - {{secret: web, dest: tls/fullchain.pem, format: fullchain, mode: "0444"}}
  - {{secret: web, dest: tls/haproxy.pem, format: pem_bundle}}
  - {{secret: web, dest: tls/web.p12, format: pkcs12, password: ks_pass}}
{extra}"""


def setup(tmp_path: Path, mount: str, ttl: str, extra: str = "") -> None:
    write(tmp_path / "initfetch.yaml", manifest(mount, ttl, extra))
    write(tmp_path / "web.crt.tmpl", "{{ secrets.web.certificate }}\n")
    write(tmp_path / "web.key.tmpl", "{{ secrets.web.private_key }}\n")


def environ(bao: OpenBao, tmp_path: Path) -> dict[str, str]:
    return clean_env(
        VAULT_ADDR=bao.url, VAULT_TOKEN="root", HOME=str(tmp_path), KS_PASS=CANARY_KEYSTORE_PASSWORD
    )


def test_render_writes_the_usual_layouts_and_the_key_0400(openbao: OpenBao, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs12

    mount = setup_pki(openbao)
    setup(tmp_path, mount, "10m")
    out = tmp_path / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=environ(openbao, tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    tls = out / "tls"
    assert (tls / "web.key").stat().st_mode & 0o777 == 0o400
    assert (tls / "haproxy.pem").stat().st_mode & 0o777 == 0o400
    assert (tls / "web.p12").stat().st_mode & 0o777 == 0o400
    assert (tls / "fullchain.pem").stat().st_mode & 0o777 == 0o444
    chain = x509.load_pem_x509_certificates((tls / "fullchain.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((tls / "web.crt").read_bytes())
    assert chain[0] == cert and len(chain) == 2 and chain[1].subject == cert.issuer
    bundle = (tls / "haproxy.pem").read_text()
    assert bundle.startswith((tls / "fullchain.pem").read_text())
    assert bundle.rstrip().endswith("PRIVATE KEY-----")
    assert (tls / "web.key").read_text().strip() in bundle
    store = pkcs12.load_pkcs12((tls / "web.p12").read_bytes(), CANARY_KEYSTORE_PASSWORD.encode())
    assert store.cert is not None and store.cert.certificate == cert
    assert [c.certificate for c in store.additional_certs] == chain[1:]
    assert format(cert.serial_number, "x") in {s.replace(":", "").lstrip("0") for s in issued(openbao, mount)}
    assert_no_canary(r.stdout, r.stderr, canaries=[CANARY_KEYSTORE_PASSWORD])


def test_files_format_problems(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml",
        """version: 1
secrets:
  web: {ref: vault://pki/issue/web, write: {common_name: a.internal}}
files:
  - {secret: web, dest: a.p12, format: pkcs12}
  - {secret: web, dest: b.pem, format: der}
  - {secret: web, dest: c.pem, format: fullchain, password: web}
""",
    )
    r = run_cli(["check"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2
    assert "format pkcs12 needs password:" in r.stderr
    assert "format must be one of fullchain, pem_bundle, pkcs12" in r.stderr
    assert "password is for format: pkcs12" in r.stderr


def test_check_and_offline_preview_render_the_helpers_with_placeholders(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml",
        """version: 1
secrets:
  web: {ref: vault://pki/issue/web, write: {common_name: a.internal}}
  pw: env://PW
templates:
  - {src: t.tmpl, dest: t}
files:
  - {secret: web, dest: a.p12, format: pkcs12, password: pw}
""",
    )
    write(
        tmp_path / "t.tmpl",
        "{{ secrets.web | pem_bundle }}{{ secrets.web | pkcs12(secrets.pw) | b64encode }}\n",
    )
    assert run_cli(["check"], env=clean_env(), cwd=tmp_path).returncode == 0
    r = run_cli(["preview", "--offline"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "<secret:web/certificate>" in r.stdout and "<secret:web/private_key>" in r.stdout


# --- watch: renewal at two thirds of the validity, served by a real nginx ------------------------


class Nginx:
    """Debian's nginx on 127.0.0.1, serving TLS from OUT_DIR's files (as root it reads them
    before dropping to its workers' user)."""

    def __init__(self, workdir: Path, cert: Path, key: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.conf = workdir / "nginx.conf"
        for d in ("body", "proxy", "logs"):
            (workdir / d).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"""
error_log {workdir}/logs/error.log;
pid {workdir}/nginx.pid;
worker_processes 1;
events {{ worker_connections 32; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{ return 200 "ok"; }}
  }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [self.binary(), "-p", str(workdir), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until(self._listening, 15, "nginx listening")

    @staticmethod
    def binary() -> str:
        return shutil.which("nginx") or "/usr/sbin/nginx"

    def reload_command(self) -> list[str]:
        return [self.binary(), "-p", str(self.dir), "-c", str(self.conf), "-s", "reload"]

    def _listening(self) -> bool:
        assert self.proc.poll() is None, (
            f"nginx exited: {self.proc.stderr.read() if self.proc.stderr else ''}"
        )
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def served_serial(self) -> int:
        from cryptography import x509

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="web.internal") as tls:
                der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def nginx_dir(tmp_path: Path) -> Iterator[list[Nginx]]:
    require(shutil.which("nginx") or Path("/usr/sbin/nginx").exists(), "nginx is not installed")
    started: list[Nginx] = []
    yield started
    for n in started:
        n.stop()


def pem_of(bao: OpenBao, mount: str, serial: str) -> str:
    return str(bao.client().adapter.get(f"/v1/{mount}/cert/{serial}")["data"]["certificate"])


def not_before(pem: str) -> float:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode()).not_valid_before_utc.timestamp()


def sorted_by_issue(bao: OpenBao, mount: str, before: set[str]) -> list[str]:
    """The first two serials issued since `before`, oldest first."""
    new = issued(bao, mount) - before
    return sorted(new, key=lambda s: not_before(pem_of(bao, mount, s)))[:2]


def serial_of(pem: str) -> int:
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def test_watch_issues_a_new_certificate_at_two_thirds_and_nginx_serves_it(
    openbao: OpenBao, tmp_path: Path, procs: list[Proc], nginx_dir: list[Nginx]
) -> None:
    mount = setup_pki(openbao)
    out = tmp_path / "out"
    # First render (no watch), so nginx has files to start with; then the watcher owns them.
    setup(tmp_path, mount, "15s")
    env = environ(openbao, tmp_path)
    first = run_cli(["render", "-o", str(out), "--allow-disk"], env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    nginx = Nginx(tmp_path / "nginx", out / "tls/fullchain.pem", out / "tls/haproxy.pem")
    nginx_dir.append(nginx)
    served_first = nginx.served_serial()
    assert served_first == serial_of((out / "tls/web.crt").read_text())
    reload = ", ".join(f"'{a}'" for a in nginx.reload_command())
    on_change = f"on_change: {{command: [{reload}], revoke_grace: 1s}}\n"
    write(tmp_path / "initfetch.yaml", manifest(mount, "15s").replace(
        "write: {common_name: web.internal, ttl: 15s}",
        "write: {common_name: web.internal, ttl: 15s}\n    revoke_replaced: true",
    ) + on_change)  # fmt: skip
    before = issued(openbao, mount)
    p = start(procs, ["render", "--watch", "-o", str(out), "--allow-disk"], env, tmp_path)
    p.wait_log("watching for changes", timeout=20)
    wait_until(lambda: len(issued(openbao, mount) - before) >= 1, 20, "the watcher's first certificate")
    first_serials = issued(openbao, mount) - before
    # A 15 s certificate (+1 s backdated) is issued anew at about 2/3 of 16 s: ~10 s after the first.
    wait_until(lambda: len(issued(openbao, mount) - before) >= 2, 30, f"a renewal:\n{p.log()}")
    # Issued anew at about 2/3 of the first one's validity (16 s: 15 s + 1 s backdated), from
    # its notBefore: by Vault's own clock, so a slow start of the watcher does not count.
    first_pem, second_pem = (pem_of(openbao, mount, s) for s in sorted_by_issue(openbao, mount, before))
    gap = not_before(second_pem) - not_before(first_pem)
    assert 16 * 0.5 <= gap < 16, gap
    wait_until(lambda: serial_of((out / "tls/web.crt").read_text()) != served_first, 10)
    wait_until(lambda: nginx.served_serial() == serial_of((out / "tls/web.crt").read_text()), 15,
               f"nginx serving the new certificate:\n{p.log()}")  # fmt: skip
    assert nginx.served_serial() != served_first
    # the replaced certificate's serial is revoked after the grace (revoke_replaced: true)
    old = first_serials.pop()
    wait_until(lambda: revoked(openbao, mount, old), 15, f"the old serial revoked:\n{p.log()}")
    assert p.stop() == 0
    log = p.log()
    assert "ran the on_change command" in log and "<secret:web" not in log and "PRIVATE KEY" not in log
    assert f"revoked lease {mount}/cert/{old}" in log  # a serial is not secret: logs name it
    assert_no_canary(p.log(), canaries=[CANARY_KEYSTORE_PASSWORD])
