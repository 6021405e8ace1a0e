"""execute.Supervisor: the watcher signals or restarts the child; SIGTERM stops it gracefully."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import pytest

import tests.watch_helpers as watch_helpers
from initfetch.execute import Supervisor, exit_text
from tests.helpers import write
from tests.watch_helpers import alive, pids, supervise_with, wait_until

strays = watch_helpers.strays

CHILD = r"""
import os, signal, sys, time
log = sys.argv[1]
def note(text):
    with open(log, "a") as f:
        f.write(f"{text} {os.getpid()} {os.environ.get('VAL', '-')}\n")
def on_hup(signum, frame):
    note("HUP")
def on_term(signum, frame):
    note("TERM")
    if os.environ.get("IGNORE_TERM") != "1":
        sys.exit(42)
signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGTERM, on_term)
note("START")
end = time.monotonic() + float(os.environ.get("MAX_SECONDS", "3600"))
while time.monotonic() < end:
    time.sleep(0.05)
sys.exit(1)
"""


def lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def test_signal_then_restart_with_new_env_then_graceful_stop(tmp_path: Path) -> None:
    log = tmp_path / "log"
    child = write(tmp_path / "child.py", CHILD)
    sup = Supervisor([sys.executable, str(child), str(log)], {"VAL": "one", "PATH": os.environ["PATH"]})

    def script() -> None:
        wait_until(lambda: [x[0] for x in lines(log)] == ["START"], what="the first child")
        first = lines(log)[0][1]
        assert sup.send(signal.SIGHUP)
        wait_until(lambda: ["HUP", first, "one"] in lines(log), what="SIGHUP in the child")
        sup.restart({"VAL": "two", "PATH": os.environ["PATH"]}, grace=30)
        wait_until(lambda: lines(log)[-1][0] == "START" and lines(log)[-1][2] == "two", what="the restart")
        assert ["TERM", first, "one"] in lines(log)  # the old child was asked to stop first
        os.kill(os.getpid(), signal.SIGTERM)  # what `docker stop` sends initfetch

    code, errors = supervise_with(sup, script)
    assert not errors, errors
    assert code == 42  # the last child's own exit code, mirrored
    assert sup.restarts == 1
    starts = [x for x in lines(log) if x[0] == "START"]
    assert [x[2] for x in starts] == ["one", "two"] and starts[0][1] != starts[1][1]


def test_restart_kills_a_child_that_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    log = tmp_path / "log"
    child = write(tmp_path / "child.py", CHILD)
    env = {"VAL": "one", "IGNORE_TERM": "1", "PATH": os.environ["PATH"]}
    sup = Supervisor([sys.executable, str(child), str(log)], env, stop_grace=0.5)

    def script() -> None:
        wait_until(lambda: lines(log), what="the first child")
        sup.restart({**env, "VAL": "two"}, grace=0.5)
        wait_until(lambda: lines(log)[-1][:1] == ["START"] and lines(log)[-1][2] == "two", what="the restart")
        os.kill(os.getpid(), signal.SIGTERM)  # ignored by the child too: SIGKILL after stop_grace

    code, errors = supervise_with(sup, script)
    assert not errors, errors
    assert code == 128 + signal.SIGKILL
    assert [x[0] for x in lines(log)] == ["START", "TERM", "START", "TERM"]


def test_child_exit_ends_the_run_with_its_code(tmp_path: Path) -> None:
    sup = Supervisor(["sh", "-c", "exit 7"], {"PATH": os.environ["PATH"]})
    assert sup.run() == 7
    assert sup.status is not None and exit_text(sup.status) == "exited with 7"
    sup = Supervisor(["sh", "-c", "kill -TERM $$"], {"PATH": os.environ["PATH"]})
    assert sup.run() == 128 + signal.SIGTERM
    assert sup.status is not None and exit_text(sup.status) == "was killed by SIGTERM"


def test_missing_command_is_127(tmp_path: Path) -> None:
    assert Supervisor(["/nonexistent/app"], {}).run() == 127


def test_a_sigterm_between_two_children_reaches_the_next_one(tmp_path: Path) -> None:
    """SIGTERM while a restart is starting the new child (no child at that instant) is not lost."""
    log = tmp_path / "log"
    child = write(tmp_path / "child.py", CHILD)
    env = {"VAL": "two", "MAX_SECONDS": "20", "PATH": os.environ["PATH"]}
    sup = Supervisor([sys.executable, str(child), str(log)], env)
    sup.started.set()  # as after a first child, which has just been reaped for a restart
    sup._on_signal(signal.SIGTERM, None)  # the signal lands now, with no child running
    # The next child got it: by its handler (42) or before it set one (143); a lost signal
    # would let it run out its 20 s and exit 1.
    assert sup.run() in (42, 128 + signal.SIGTERM)


# A shell that starts two workers, notes their pids and its own, and waits for them.
SHELL_APP = 'sleep 1000 & echo $! >> "$PIDS"; sleep 1000 & echo $! >> "$PIDS"; echo $$ >> "$PIDS"; wait'


def test_restart_and_stop_signal_the_applications_whole_group(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, strays: list[int]
) -> None:
    caplog.set_level(logging.INFO, logger="initfetch")
    first, second = tmp_path / "first", tmp_path / "second"
    env = {"PATH": os.environ["PATH"], "PIDS": str(first)}
    sup = Supervisor(["sh", "-c", SHELL_APP], env, stop_grace=30)
    old: list[int] = []

    def script() -> None:
        old.extend(pids(first, 3, strays))
        sup.restart({**env, "PIDS": str(second)}, grace=30)
        pids(second, 3, strays)
        wait_until(
            lambda: not any(alive(p) for p in old), timeout=10, what="the old shell and its workers gone"
        )
        os.kill(os.getpid(), signal.SIGTERM)

    code, errors = supervise_with(sup, script)
    assert not errors, errors
    assert code == 128 + signal.SIGTERM
    wait_until(
        lambda: not any(alive(p) for p in pids(second, 3)), timeout=10, what="the workers gone on stop"
    )
    assert "sh was killed by SIGTERM; starting it again with its new environment" in caplog.messages


# A worker that ignores SIGTERM notes its pid once it does; its shell notes its own and waits.
STUBBORN_WORKER = (
    "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'a').write(f'{os.getpid()}\\n'); time.sleep(1000)"
)


def test_workers_that_outlive_their_shell_get_sigkill_after_the_grace(
    tmp_path: Path, strays: list[int]
) -> None:
    """The shell dies of SIGTERM at once; a worker that ignores it must not keep the old credentials."""
    app = f'"$PY" -c "{STUBBORN_WORKER}" "$PIDS.worker" & echo $$ >> "$PIDS.shell"; wait'
    env = {"PATH": os.environ["PATH"], "PY": sys.executable, "PIDS": str(tmp_path / "first")}
    sup = Supervisor(["sh", "-c", app], env, stop_grace=0.5)

    def script() -> None:
        old = pids(tmp_path / "first.worker", 1, strays) + pids(tmp_path / "first.shell", 1, strays)
        sup.restart({**env, "PIDS": str(tmp_path / "second")}, grace=0.5)
        pids(tmp_path / "second.worker", 1, strays)
        wait_until(lambda: not any(alive(p) for p in old), timeout=10, what="the old worker gone")
        os.kill(os.getpid(), signal.SIGTERM)

    code, errors = supervise_with(sup, script)
    assert not errors, errors
    assert code == 128 + signal.SIGTERM
    (new_worker,) = pids(tmp_path / "second.worker", 1)
    wait_until(lambda: not alive(new_worker), timeout=10, what="the worker gone on stop")
