"""A real Prometheus scrapes a live `initfetch render --watch --listen` against a real OpenBao
(dynamic PostgreSQL credentials with a lease, a KV secret) behind the fault proxy: the lease's
expiry moves after a renewal, the backend's up metric goes to 0 during an outage and back
to 1 after it, and no value, reference path or address reaches any endpoint."""

from __future__ import annotations

import calendar
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.backends.openbao as openbao_backend
import tests.backends.postgres as postgres_backend
import tests.watch_helpers as watch_helpers
from tests.backends.fault_proxy import FaultProxy, fault_proxy
from tests.backends.local_http import free_port
from tests.backends.openbao import OpenBao
from tests.backends.postgres import Postgres, configure_database_engine
from tests.backends.prometheus import start_prometheus
from tests.helpers import assert_no_canary, clean_env, write
from tests.watch_helpers import Proc, start, wait_until

openbao = openbao_backend.openbao
postgres = postgres_backend.postgres
procs = watch_helpers.procs

CANARY_PROM = "CANARY-listen-prom-7c3e"


@pytest.fixture
def proxy(openbao: OpenBao) -> Iterator[FaultProxy]:
    with fault_proxy(openbao.url) as p:
        yield p


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def expire_time(bao: OpenBao, lease_id: str) -> float:
    text = bao.client().sys.read_lease(lease_id)["data"]["expire_time"]
    return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))


def watching(procs: list[Proc], tmp_path: Path, proxy: FaultProxy, db_path: str) -> tuple[Proc, str, Path]:
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  vault: {type: vault, refresh: 500ms}\nsecrets:\n"
        "  pw: vault://secret/listen/kv#password\n"
        f"  user: vault://{db_path}#username\n  pass: vault://{db_path}#password\n"
        "files:\n  - {secret: pw, dest: pw}\n  - {secret: user, dest: user}\n"
        "  - {secret: pass, dest: pass}\n",
    )
    port = free_port()
    out = tmp_path / "out"
    env = clean_env(VAULT_ADDR=proxy.url, VAULT_TOKEN="root", HOME=str(tmp_path))
    args = ["render", "--watch", "-o", str(out), "--allow-disk", "--timeout", "10", "--listen", str(port)]
    p = start(procs, [*args, "--max-stale", "1m"], env, tmp_path)
    wait_until(lambda: (out / ".initfetch-ready.json").exists(), what="the first render")
    return p, f"127.0.0.1:{port}", out


def test_prometheus_sees_a_lease_renewed_and_a_backend_go_down_and_come_back(
    openbao: OpenBao, postgres: Postgres, proxy: FaultProxy, tmp_path: Path, procs: list[Proc]
) -> None:
    bao = openbao.client()
    bao.secrets.kv.v2.create_or_update_secret("listen/kv", {"password": CANARY_PROM})
    db_path = configure_database_engine(bao, postgres, role="listen", default_ttl=6, max_ttl=3600)
    p, target, out = watching(procs, tmp_path, proxy, db_path)
    password = (out / "pass").read_text()
    with start_prometheus([target]) as prom:
        wait_until(prom.targets_up, what="Prometheus to scrape initfetch")
        expiry = 'initfetch_lease_expiry_timestamp_seconds{secret="user"}'
        wait_until(lambda: prom.value(expiry) is not None, what="the lease expiry in Prometheus")
        first = prom.value(expiry)
        assert first is not None
        # a renewal at about two thirds of 6 s moves the expiry; Prometheus sees it at a scrape
        wait_until(lambda: (prom.value(expiry) or 0) > first + 1, what="the lease expiry to move")
        leases = bao.sys.list_leases(f"{db_path}/")["data"]["keys"]
        bao_expiry = max(expire_time(openbao, f"{db_path}/{k}") for k in leases)
        assert abs((prom.value(expiry) or 0) - bao_expiry) < 10  # the same expiry, seen two ways

        up = 'initfetch_backend_up{provider="vault"}'
        wait_until(lambda: prom.value(up) == 1, what="vault up in Prometheus")
        proxy.down()
        wait_until(lambda: prom.value(up) == 0, timeout=60, what="vault down in Prometheus")
        failures = 'sum(initfetch_refresh_failures_total{provider="vault",class="unavailable"})'
        wait_until(lambda: (prom.value(failures) or 0) > 0, what="failed refreshes counted")
        proxy.up()
        wait_until(lambda: prom.value(up) == 1, timeout=60, what="vault up again in Prometheus")
        assert (prom.value('initfetch_secret_last_refresh_timestamp_seconds{secret="pw"}') or 0) > 0
        assert prom.value("initfetch_ready") == 1

    bodies = [get(f"http://{target}{path}")[1] for path in ("/metrics", "/readyz", "/healthz", "/x")]
    for body in bodies:
        assert_no_canary(body, canaries=[CANARY_PROM, password])
        # labels are names: no reference path, no backend address
        assert b"listen/kv" not in body and db_path.encode() not in body
        assert proxy.url.encode() not in body and openbao.url.encode() not in body
    assert p.stop() == 0, p.log()
    assert_no_canary(p.log(), canaries=[CANARY_PROM, password])
