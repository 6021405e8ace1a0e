"""Watch mode under faults, as a platform team tries it: real `initfetch` processes, a real
OpenBao behind the fault proxy taken down, hung and brought back, real signals.

Each test states one promise of docs/watch.md ("Faults"): a stop is prompt at any moment, no
signal kills initfetch without its cleanup, healthcheck tells the truth from the clock, a
changed file is written back, one writer per OUT_DIR, and an outage is a few log lines.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.backends.openbao as openbao_backend
import tests.watch_helpers as watch_helpers
from tests.backends.fault_proxy import FaultProxy, fault_proxy
from tests.backends.openbao import OpenBao
from tests.helpers import assert_no_canary, clean_env, run_cli, write
from tests.watch_helpers import Proc, start, wait_until

openbao = openbao_backend.openbao
procs = watch_helpers.procs

CANARY_WATCH = "CANARY-faults-9d20-watch"
CANARY_WATCH2 = "CANARY-faults-41ab-watch"
STOP_WITHIN = 2.0  # seconds: the contract (DESIGN.md, "Watch mode under faults")


@pytest.fixture
def proxy(openbao: OpenBao) -> Iterator[FaultProxy]:
    with fault_proxy(openbao.url) as p:
        yield p


def env(proxy: FaultProxy, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(VAULT_ADDR=proxy.url, VAULT_TOKEN="root", HOME=str(tmp_path), **extra)


def kv_manifest(tmp_path: Path, path: str, refresh: str = "300ms", extra: str = "") -> None:
    write(
        tmp_path / "initfetch.yaml",
        f"version: 1\nproviders:\n  vault: {{type: vault, refresh: {refresh}}}\n"
        f"secrets:\n  pw: vault://secret/{path}#password\nfiles:\n  - {{secret: pw, dest: pw}}\n{extra}",
    )


def watching(procs: list[Proc], tmp_path: Path, proxy: FaultProxy, *flags: str) -> tuple[Proc, Path]:
    out = tmp_path / "out"
    p = start(
        procs, ["render", "--watch", "-o", str(out), "--allow-disk", *flags], env(proxy, tmp_path), tmp_path
    )
    wait_until(lambda: (out / ".initfetch-ready.json").exists(), what="the first render")
    return p, out


def stop_timed(p: Proc, sig: int = signal.SIGTERM) -> tuple[int, float]:
    begun = time.monotonic()
    p.proc.send_signal(sig)
    code = p.proc.wait(30)
    p.reader.join(10)
    return code, time.monotonic() - begun


# --- 1. a stop is prompt, whatever the watcher is doing ----------------------------------------


@pytest.mark.parametrize("fault", ["down", "hang"])
def test_sigterm_while_a_refresh_retries_or_hangs_stops_within_two_seconds(
    openbao: OpenBao, proxy: FaultProxy, tmp_path: Path, procs: list[Proc], fault: str
) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret(f"faults/{fault}", {"password": CANARY_WATCH})
    kv_manifest(tmp_path, f"faults/{fault}")
    p, out = watching(procs, tmp_path, proxy, "--wipe-on-exit")  # --timeout 60: a refresh may retry 60 s
    getattr(proxy, fault)()
    if fault == "down":
        p.wait_log("waiting for vault")
    else:
        wait_until(lambda: proxy.counts["slow"] >= 1, what="a request to hang")
    code, took = stop_timed(p)
    assert code == 0, p.log()
    assert took < STOP_WITHIN, f"stopped after {took:.2f}s"
    assert "stopping" in p.log()
    assert not (out / "pw").exists() and not (out / ".initfetch-ready.json").exists()  # wiped
    assert_no_canary(p.log())


def test_sigterm_during_the_first_render_stops_at_once(
    proxy: FaultProxy, tmp_path: Path, procs: list[Proc]
) -> None:
    kv_manifest(tmp_path, "faults/first")
    proxy.down()
    out = tmp_path / "out"
    p = start(procs, ["render", "--watch", "-o", str(out), "--allow-disk"], env(proxy, tmp_path), tmp_path)
    p.wait_log("waiting for vault")
    p.proc.send_signal(signal.SIGHUP)  # ignored during the first render, never fatal
    p.wait_log("received SIGHUP during the first render; ignored")
    code, took = stop_timed(p)
    assert code == 128 + signal.SIGTERM and took < STOP_WITHIN
    assert "terminated by SIGTERM" in p.log() and not (out / "pw").exists()


# --- 2. signals as users expect -----------------------------------------------------------------


def test_sighup_refreshes_now_usr1_usr2_are_ignored_sigquit_stops(
    openbao: OpenBao, proxy: FaultProxy, tmp_path: Path, procs: list[Proc]
) -> None:
    c = openbao.client()
    c.secrets.kv.v2.create_or_update_secret("faults/hup", {"password": CANARY_WATCH})
    kv_manifest(tmp_path, "faults/hup", refresh="1h")
    p, out = watching(procs, tmp_path, proxy)
    c.secrets.kv.v2.create_or_update_secret("faults/hup", {"password": CANARY_WATCH2})
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        p.proc.send_signal(sig)
        p.wait_log(f"received {signal.Signals(sig).name}: ignored")
    assert (out / "pw").read_text() == CANARY_WATCH  # refresh: 1h, nothing read yet
    p.proc.send_signal(signal.SIGHUP)
    wait_until(
        lambda: (out / "pw").read_text() == CANARY_WATCH2, timeout=10, what="the refresh SIGHUP asked for"
    )
    assert "reading every secret again now" in p.log()
    code, took = stop_timed(p, signal.SIGQUIT)
    assert code == 0 and took < STOP_WITHIN and "stopping" in p.log()
    assert_no_canary(p.log())


# --- 6. healthcheck tells the truth from the clock ----------------------------------------------


def healthy(out: Path, max_stale: str) -> bool:
    return run_cli(["healthcheck", "-o", str(out), "--max-stale", max_stale]).returncode == 0


def test_healthcheck_turns_unhealthy_while_a_refresh_is_still_retrying(
    openbao: OpenBao, proxy: FaultProxy, tmp_path: Path, procs: list[Proc]
) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret("faults/stale", {"password": CANARY_WATCH})
    kv_manifest(tmp_path, "faults/stale", refresh="500ms")
    p, out = watching(procs, tmp_path, proxy)  # --timeout 60: the refresh keeps retrying for a minute
    wait_until(lambda: healthy(out, "2s"), what="a healthy watcher")
    proxy.down()
    p.wait_log("waiting for vault")
    began = time.monotonic()
    wait_until(lambda: not healthy(out, "2s"), timeout=15, what="healthcheck to see the stale render")
    assert time.monotonic() - began < 6  # about 2 s past the due refresh, not at the attempt's end
    assert "refresh failed" not in p.log()  # the attempt is still retrying: it never ended
    proxy.up()
    wait_until(lambda: healthy(out, "2s"), timeout=20, what="healthy again")
    assert "answers again" in p.log()
    assert stop_timed(p)[0] == 0


def test_a_hung_watcher_turns_unhealthy_without_writing_anything(
    openbao: OpenBao, proxy: FaultProxy, tmp_path: Path, procs: list[Proc]
) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret("faults/frozen", {"password": CANARY_WATCH})
    kv_manifest(tmp_path, "faults/frozen", refresh="500ms")
    p, out = watching(procs, tmp_path, proxy)
    wait_until(lambda: healthy(out, "2s"), what="a healthy watcher")
    p.proc.send_signal(signal.SIGSTOP)  # frozen: it can write nothing more
    try:
        wait_until(lambda: not healthy(out, "2s"), timeout=10, what="healthcheck to see the frozen watcher")
    finally:
        p.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: healthy(out, "2s"), timeout=10, what="healthy again once it runs")
    assert stop_timed(p)[0] == 0


def require_root() -> None:
    from tests.conftest import require

    require(os.geteuid() == 0, "mounting a small tmpfs needs root")


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    require_root()
    import subprocess

    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_status_holds_when_out_dir_is_full_or_remounted_read_only(
    openbao: OpenBao, proxy: FaultProxy, tmp_path: Path, procs: list[Proc], small_tmpfs: Path
) -> None:
    import subprocess

    openbao.client().secrets.kv.v2.create_or_update_secret("faults/full", {"password": CANARY_WATCH})
    kv_manifest(tmp_path, "faults/full", refresh="300ms")
    out = small_tmpfs / "out"
    p = start(procs, ["render", "--watch", "-o", str(out)], env(proxy, tmp_path), tmp_path)
    wait_until(lambda: (out / ".initfetch-watch.json").exists(), what="the watcher's status")
    fd = os.open(small_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)  # fill the tmpfs to the last byte
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    # Refreshes keep succeeding (nothing changed): the status is rewritten in place, so the
    # render stays confirmed current for longer than --max-stale, full disk or not.
    time.sleep(3)
    assert healthy(out, "2s"), p.log()
    # A read-only remount is refused while the watcher holds its status open for writing.
    r = subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], capture_output=True, text=True)
    assert r.returncode != 0, "the kernel should refuse a read-only remount under a writer"
    assert healthy(out, "2s")
    assert stop_timed(p)[0] == 0


# --- 7. self-healing output ---------------------------------------------------------------------


def test_a_modified_replaced_or_deleted_file_is_written_back_without_a_notification(
    openbao: OpenBao, proxy: FaultProxy, tmp_path: Path, procs: list[Proc]
) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret("faults/heal", {"password": CANARY_WATCH})
    notified = tmp_path / "notified"
    kv_manifest(
        tmp_path, "faults/heal", refresh="300ms", extra=f"on_change: {{command: [touch, '{notified}']}}\n"
    )
    p, out = watching(procs, tmp_path, proxy)
    target = out / "pw"
    os.chmod(target, 0o600)
    target.write_text("tampered")  # modified in place
    wait_until(lambda: target.read_text() == CANARY_WATCH, timeout=10, what="the file written back")
    target.unlink()  # deleted
    wait_until(lambda: target.exists() and target.read_text() == CANARY_WATCH, timeout=10, what="restored")
    target.unlink()
    target.symlink_to(tmp_path / "initfetch.yaml")  # replaced by a symlink
    wait_until(
        lambda: not target.is_symlink() and target.read_text() == CANARY_WATCH, timeout=10, what="restored"
    )
    assert oct(target.stat().st_mode & 0o777) == "0o400"
    assert p.log().count("restored 1 file(s)") >= 3
    assert not notified.exists()  # nothing else is told
    assert stop_timed(p)[0] == 0
    assert_no_canary(p.log())


# --- 8. one writer per OUT_DIR ------------------------------------------------------------------


def test_a_second_writer_is_refused_and_a_killed_watcher_leaves_no_lock(
    openbao: OpenBao, proxy: FaultProxy, tmp_path: Path, procs: list[Proc]
) -> None:
    openbao.client().secrets.kv.v2.create_or_update_secret("faults/lock", {"password": CANARY_WATCH})
    kv_manifest(tmp_path, "faults/lock", refresh="1h")
    p, out = watching(procs, tmp_path, proxy)
    for args in (["render", "--watch"], ["render"]):
        r = run_cli(
            [*args, "-o", str(out), "--allow-disk"], env=env(proxy, tmp_path), cwd=tmp_path, timeout=30
        )
        assert r.returncode == 5, r.stderr
        assert (
            f"another initfetch (pid {p.proc.pid}, render --watch) writes to this output directory"
            in r.stderr
        )
        assert r.stderr.count("\n") == 2  # the line, and the exit line
    before = proxy.counts["requests"]
    p.proc.kill()
    p.proc.wait(10)
    r = run_cli(
        ["render", "-o", str(out), "--allow-disk"], env=env(proxy, tmp_path), cwd=tmp_path, timeout=30
    )
    assert r.returncode == 0, r.stderr
    assert proxy.counts["requests"] > before


# --- 9. an outage is a few lines ----------------------------------------------------------------


def test_an_outage_with_300_secrets_is_a_few_log_lines(
    openbao: OpenBao, proxy: FaultProxy, tmp_path: Path, procs: list[Proc]
) -> None:
    c = openbao.client()
    for i in range(300):
        c.secrets.kv.v2.create_or_update_secret(f"faults/many/{i}", {"password": f"v{i}"})
    secrets = "".join(f"  s{i}: vault://secret/faults/many/{i}#password\n" for i in range(300))
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  vault: {type: vault, refresh: 500ms}\nsecrets:\n" + secrets,
    )
    out = tmp_path / "out"
    p = start(
        procs,
        ["render", "--watch", "-o", str(out), "--allow-disk", "--timeout", "5"],
        env(proxy, tmp_path),
        tmp_path,
    )
    wait_until(lambda: (out / ".initfetch-ready.json").exists(), what="the first render")
    mark = len(p.log())
    proxy.down()
    time.sleep(12)  # two refresh deadlines (--timeout 5) and their backoff
    proxy.up()
    p.wait_log("answers again", timeout=40)
    outage = p.log()[mark:]
    lines = [line for line in outage.splitlines() if line.strip()]
    assert len(lines) <= 8, "\n".join(lines)
    assert outage.count("waiting for vault") == 1 and outage.count("answers again") == 1
    assert stop_timed(p)[0] == 0


# --- 6. exec --watch without files has a status too ---------------------------------------------


def test_exec_watch_without_files_keeps_a_status_healthcheck_can_read(
    tmp_path: Path, procs: list[Proc]
) -> None:
    write(tmp_path / "src/v", CANARY_WATCH)
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  file: {type: file, refresh: 300ms}\n"
        "secrets:\n  v: file://src/v\nenv:\n  V: '{{ secrets.v }}'\n",
    )
    out = tmp_path / "status-dir"  # on disk: no secret is written there, only the marker and status
    p = start(procs, ["exec", "--watch", "-o", str(out), "--", "sleep", "60"], clean_env(), tmp_path)
    wait_until(lambda: (out / ".initfetch-watch.json").exists(), what="the status")
    assert healthy(out, "2s")
    assert sorted(f.name for f in out.iterdir()) == [
        ".initfetch-lock",
        ".initfetch-ready.json",
        ".initfetch-watch.json",
    ]
    code, took = stop_timed(p)
    assert code == 128 + signal.SIGTERM and took < STOP_WITHIN  # sleep died of the forwarded SIGTERM
