"""`exec --supervise`: signals reach the child, exit codes come back unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import tests.watch_helpers as watch_helpers
from tests.helpers import REPO, clean_env, write
from tests.watch_helpers import alive, lines, pids, wait_until

strays = watch_helpers.strays

TRAP_CHILD = r"""
import signal, sys, time, pathlib
out = pathlib.Path(sys.argv[1])
def handler(signum, frame):
    out.write_text(signal.Signals(signum).name)
    sys.exit(42)
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT, signal.SIGINT):
    signal.signal(s, handler)
pathlib.Path(sys.argv[2]).write_text("ready")
time.sleep(30)
sys.exit(1)
"""


def start(tmp_path: Path, *cmd: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  s: env://S\nenv:\n  S2: '{{ secrets.s }}'\n")
    return subprocess.Popen(
        [sys.executable, "-m", "initfetch", "exec", "--supervise", "--", *cmd],
        env=clean_env(S="v", PYTHONPATH=str(REPO), **(env or {})),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )


def wait_for(path: Path, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT, signal.SIGINT]
)
def test_signal_is_forwarded_to_trapping_child(tmp_path: Path, sig: signal.Signals) -> None:
    got, ready = tmp_path / "got", tmp_path / "ready"
    write(tmp_path / "child.py", TRAP_CHILD)
    proc = start(tmp_path, sys.executable, str(tmp_path / "child.py"), str(got), str(ready))
    wait_for(ready)
    proc.send_signal(sig)
    assert proc.wait(timeout=15) == 42  # the child's own exit code after cleanup
    assert got.read_text() == sig.name


def test_child_killed_by_signal_gives_128_plus_n(tmp_path: Path) -> None:
    proc = start(tmp_path, "sh", "-c", "kill -KILL $$")
    assert proc.wait(timeout=15) == 128 + signal.SIGKILL


def test_exit_code_is_mirrored(tmp_path: Path) -> None:
    assert start(tmp_path, "sh", "-c", "exit 3").wait(timeout=15) == 3
    assert start(tmp_path, "true").wait(timeout=15) == 0


def test_unforwarded_child_default_term(tmp_path: Path) -> None:
    # A child without a handler dies of the forwarded SIGTERM: 128+15.
    ready = tmp_path / "ready"
    proc = start(tmp_path, "sh", "-c", f"touch {ready}; sleep 30 & wait")
    wait_for(ready)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 128 + signal.SIGTERM


def test_orphans_are_reaped_when_pid1(tmp_path: Path) -> None:
    # Run the supervisor as PID 1 of a new PID namespace; a grandchild whose parent exits
    # is re-parented to it and must not stay a zombie.
    import shutil

    from tests.conftest import require

    require(os.geteuid() == 0 and shutil.which("unshare"), "needs root and unshare for a PID namespace")
    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets: {}\n")
    script = (
        "sh -c 'sleep 0.2 &' ; sleep 1; "
        "zombies=$(ps -eo stat= 2>/dev/null | grep -c '^Z' || true); echo zombies=$zombies; "
        "ls /proc | grep -E '^[0-9]+$' | while read p; do "
        "  s=$(sed -n 's/^State:[[:space:]]*//p' /proc/$p/status 2>/dev/null); echo \"$p $s\"; done"
    )
    r = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-m",
            "initfetch",
            "exec",
            "--supervise",
            "--",
            "sh",
            "-c",
            script,
        ],
        env=clean_env(PYTHONPATH=str(REPO)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    states = [line for line in r.stdout.splitlines() if line and line[0].isdigit()]
    assert states and not any("zombie" in line for line in states), r.stdout


# Workers of a shell, each noting its pid once its SIGTERM disposition is set: one notes the
# SIGTERM it gets and exits, one ignores it.
NOTING_WORKER = (
    "import os, signal, sys, time; out = open(sys.argv[1], 'a', buffering=1); "
    "signal.signal(signal.SIGTERM, lambda s, f: (out.write('TERM\\n'), sys.exit(0))); "
    "out.write(f'{os.getpid()}\\n'); time.sleep(1000)"
)
STUBBORN_WORKER = (
    "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(1000)"
)


def test_sigterm_reaches_a_shells_workers_and_none_outlives_initfetch(
    tmp_path: Path, strays: list[int]
) -> None:
    noting, stubborn = tmp_path / "noting", tmp_path / "stubborn"
    app = f'"$PY" -c "$NOTING" {noting} & "$PY" -c "$STUBBORN" {stubborn} & wait'
    env = {"PY": sys.executable, "NOTING": NOTING_WORKER, "STUBBORN": STUBBORN_WORKER}
    proc = start(tmp_path, "sh", "-c", app, env=env)
    workers = pids(noting, 1, strays) + pids(stubborn, 1, strays)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 128 + signal.SIGTERM  # the shell's own end, mirrored
    wait_until(lambda: lines(noting)[1:] == ["TERM"], what="the worker's SIGTERM")
    wait_until(lambda: not any(alive(p) for p in workers), timeout=10, what="no worker left")


def test_an_interactive_application_gets_the_terminal(tmp_path: Path) -> None:
    """`docker run -it`: initfetch is PID 1 in the foreground of a terminal; the application,
    in its own process group, must still be able to read it (not stop on SIGTTIN)."""
    master, slave = os.openpty()
    # initfetch in a new session whose controlling terminal is the pty, as in a container.
    ctty = (
        "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets: {}\n")
    got = tmp_path / "got"
    proc = subprocess.Popen(
        [sys.executable, "-c", ctty, sys.executable, "-m", "initfetch", "exec", "--supervise", "--",
         "sh", "-c", f'read line; echo "got:$line" > {got}'],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        env=clean_env(PYTHONPATH=str(REPO)), cwd=tmp_path,
    )  # fmt: skip
    os.close(slave)
    output: list[bytes] = []
    threading.Thread(target=_drain, args=(master, output), daemon=True).start()
    os.write(master, b"hello\n")
    try:
        assert proc.wait(timeout=30) == 0, b"".join(output)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the session: initfetch; its stopped app gets SIGHUP
            proc.wait(10)
    assert got.read_text() == "got:hello\n"


def _drain(fd: int, into: list[bytes]) -> None:
    """Read a pty's master until the other side is gone, so no writer blocks on a full buffer."""
    try:
        while chunk := os.read(fd, 4096):
            into.append(chunk)
    except OSError:
        pass
    finally:
        os.close(fd)
