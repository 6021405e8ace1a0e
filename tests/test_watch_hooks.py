"""on_change commands (watch/notify.py): they never hold up the watcher, run in their own process
group with a timeout, are coalesced while one runs, report their exit truly and are killed on
stop; a command-only on_change never signals the application. Real processes, real signals."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.watch_helpers as watch_helpers
from initfetch.execute import Supervisor
from initfetch.manifest import load_manifest
from initfetch.manifest.watch import OnChange
from initfetch.templating.render import Rendered
from initfetch.watch.loop import Change
from initfetch.watch.notify import CommandNotifier, ExecNotifier
from tests.helpers import CANARY, CANARY2, assert_no_canary, clean_env, run_cli, write
from tests.watch_helpers import Proc, alive, lines, pids, start, supervise_with, wait_until

procs = watch_helpers.procs
strays = watch_helpers.strays

ENV = {"PATH": os.environ["PATH"]}
HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2}

# An application that notes every signal it gets; SIGTERM ends it with 42.
SIGNAL_APP = r"""
import signal, sys, time
log = sys.argv[1]
def note(signum, frame):
    with open(log, "a") as f:
        f.write(signal.Signals(signum).name + "\n")
    if signum == signal.SIGTERM:
        sys.exit(42)
for s in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
    signal.signal(s, note)
with open(log, "a") as f:
    f.write("START\n")
while True:
    time.sleep(0.05)
"""


def change(*secrets: str) -> Change:
    return Change(list(secrets), [f"conf/{s}" for s in secrets], [], Rendered({}, {}))


@pytest.fixture
def notifiers() -> Iterator[list[CommandNotifier]]:
    made: list[CommandNotifier] = []
    yield made
    for n in made:
        n.close()  # no hook outlives its test


def hook(notifiers: list[CommandNotifier], script: str, timeout: float = 30.0) -> CommandNotifier:
    notifiers.append(CommandNotifier(OnChange(command=("sh", "-c", script), timeout=timeout), ENV))
    return notifiers[-1]


def idle(n: CommandNotifier) -> None:
    assert n.hooks is not None
    hooks = n.hooks
    wait_until(lambda: not hooks.running, what="the hooks to end")


def notify_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "initfetch.notify"]


def test_a_hung_hook_returns_at_once_and_is_killed_with_its_group_after_the_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, notifiers: list[CommandNotifier], strays: list[int]
) -> None:
    caplog.set_level(logging.INFO, logger="initfetch")
    out = tmp_path / "pids"
    n = hook(notifiers, f"sleep 1000 & echo $! > {out}; echo $$ >> {out}; wait", timeout=1)
    began = time.monotonic()
    n(change("a"))
    assert time.monotonic() - began < 0.2  # the watcher goes on at once
    worker, shell = pids(out, 2, strays)
    wait_until(lambda: not alive(worker) and not alive(shell), timeout=10, what="the hook's group killed")
    assert time.monotonic() - began >= 1  # not before its timeout
    idle(n)
    assert notify_lines(caplog) == [
        "on_change command sh did not finish within 1s: killed it and its process group"
    ]


def test_close_kills_a_running_hook_and_its_children_and_drops_the_waiting_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, notifiers: list[CommandNotifier], strays: list[int]
) -> None:
    caplog.set_level(logging.INFO, logger="initfetch")
    runs, out = tmp_path / "runs", tmp_path / "pids"
    script = (
        f'echo "$INITFETCH_CHANGED_SECRETS" >> {runs}; sleep 1000 & echo $! > {out}; echo $$ >> {out}; wait'
    )
    n = hook(notifiers, script, timeout=3600)
    n(change("a"))
    worker, shell = pids(out, 2, strays)
    n(change("b"))  # waits for the running one
    began = time.monotonic()
    n.close()
    assert time.monotonic() - began < 0.5
    wait_until(lambda: not alive(worker) and not alive(shell), timeout=0.5, what="the hook's group killed")
    idle(n)
    assert lines(runs) == ["a"]  # the waiting change was dropped
    n(change("c"))
    idle(n)
    assert lines(runs) == ["a"]  # closed: nothing runs any more
    assert notify_lines(caplog) == ["stopping: killing the on_change command sh, still running"]


def test_changes_during_a_hook_are_coalesced_into_one_more_run_with_the_latest_names(
    tmp_path: Path, notifiers: list[CommandNotifier]
) -> None:
    runs, release = tmp_path / "runs", tmp_path / "release"
    script = (
        f'echo "$INITFETCH_CHANGED_SECRETS|$INITFETCH_CHANGED_FILES" >> {runs}; '
        f"while [ ! -e {release} ]; do sleep 0.05; done"
    )
    n = hook(notifiers, script)
    n(change("a"))
    wait_until(lambda: lines(runs) == ["a|conf/a"], what="the first run")
    for name in ("b", "c", "d"):
        n(change(name))
    release.touch()
    idle(n)
    assert lines(runs) == ["a|conf/a", "d|conf/d"]


@pytest.mark.parametrize(
    "script, outcome",
    [
        ("exit 3", "exited with 3"),
        ("kill -TERM $$", "was killed by SIGTERM"),
        ("kill -KILL $$", "was killed by SIGKILL"),
    ],
)
def test_a_hooks_exit_is_reported_truly(
    script: str, outcome: str, caplog: pytest.LogCaptureFixture, notifiers: list[CommandNotifier]
) -> None:
    caplog.set_level(logging.INFO, logger="initfetch")
    n = hook(notifiers, script)
    n(change("a"))
    idle(n)
    assert notify_lines(caplog) == [f"on_change command sh {outcome}"]


def test_a_missing_command_is_one_line_and_the_next_change_still_runs(
    caplog: pytest.LogCaptureFixture, notifiers: list[CommandNotifier]
) -> None:
    caplog.set_level(logging.INFO, logger="initfetch")
    n = CommandNotifier(OnChange(command=("/nonexistent/reload",)), ENV)
    notifiers.append(n)
    n(change("a"))
    idle(n)
    n(change("b"))
    idle(n)
    assert notify_lines(caplog) == ["on_change command not found: /nonexistent/reload"] * 2


def test_a_hook_starts_with_no_signal_blocked_whatever_thread_submits_it(
    tmp_path: Path, notifiers: list[CommandNotifier]
) -> None:
    mask = tmp_path / "mask"
    # Not a shell: dash clears its signal mask when it starts.
    copy = "import shutil, sys; shutil.copyfile('/proc/self/status', sys.argv[1])"
    n = CommandNotifier(OnChange(command=(sys.executable, "-c", copy, str(mask))), ENV)
    notifiers.append(n)

    def submit() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)  # as initfetch's watcher thread does
        n(change("a"))

    thread = threading.Thread(target=submit)
    thread.start()
    thread.join()
    idle(n)
    (blocked,) = [line.split()[1] for line in lines(mask) if line.startswith("SigBlk:")]
    assert int(blocked, 16) == 0


def test_a_hooks_exit_is_reported_truly_when_the_supervisor_reaps_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As PID 1 the supervisor reaps every child, the hook's too: its status still reaches the hook."""
    caplog.set_level(logging.INFO, logger="initfetch")
    sup = Supervisor(["sleep", "1000"], ENV, stop_grace=5)
    n = ExecNotifier(sup, OnChange(command=("sh", "-c", "exit 3")), lambda r: ENV, ENV)

    def script() -> None:
        wait_until(sup.started.is_set, what="the application")
        for _ in range(3):
            n(change("a"))
            idle(n)
        os.kill(os.getpid(), signal.SIGTERM)

    code, errors = supervise_with(sup, script)
    assert not errors, errors
    assert code == 128 + signal.SIGTERM
    assert notify_lines(caplog) == ["on_change command sh exited with 3"] * 3


@pytest.mark.parametrize(
    "on_change, signals",
    [
        (OnChange(command=("sh", "-c", "true")), []),  # command only: no signal at all
        (OnChange(), ["SIGHUP"]),  # nothing configured: the exec default
        (OnChange(command=("sh", "-c", "true"), signal=signal.SIGUSR1), ["SIGUSR1"]),  # asked for
    ],
)
def test_exec_mode_signals_the_application_only_when_asked_or_without_a_command(
    tmp_path: Path, on_change: OnChange, signals: list[str]
) -> None:
    log = tmp_path / "log"
    app = write(tmp_path / "app.py", SIGNAL_APP)
    sup = Supervisor([sys.executable, str(app), str(log)], ENV)
    n = ExecNotifier(sup, on_change, lambda r: ENV, ENV)

    def script() -> None:
        wait_until(lambda: lines(log) == ["START"], what="the application")
        n(change("a"))
        if n.hooks is not None:
            idle(n)
        sup.send(signal.SIGUSR2)  # a marker: whatever the change sent arrived before it
        wait_until(lambda: "SIGUSR2" in lines(log), what="the marker signal")
        os.kill(os.getpid(), signal.SIGTERM)

    code, errors = supervise_with(sup, script)
    assert not errors, errors
    assert code == 42
    assert lines(log) == ["START", *signals, "SIGUSR2", "SIGTERM"]


# --- the real CLI -----------------------------------------------------------------------------


def watched_file(tmp_path: Path, on_change: str) -> None:
    """A manifest whose secret comes from src/pw, read every 200 ms, with this `on_change:` block."""
    write(tmp_path / "src/pw", CANARY)
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  file: {type: file, refresh: 200ms}\n"
        f"secrets:\n  pw: file://src/pw\nfiles:\n  - {{secret: pw, dest: pw}}\non_change:\n{on_change}",
    )


def test_exec_watch_with_a_command_only_on_change_leaves_the_application_alone(
    tmp_path: Path, procs: list[Proc]
) -> None:
    notified = tmp_path / "notified"
    watched_file(tmp_path, f"  command: [sh, -c, 'echo \"$INITFETCH_CHANGED_FILES\" >> {notified}']\n")
    app, log = write(tmp_path / "app.py", SIGNAL_APP), tmp_path / "app.log"
    p = start(
        procs,
        [
            "exec",
            "--watch",
            "-o",
            str(tmp_path / "out"),
            "--allow-disk",
            "--",
            sys.executable,
            str(app),
            str(log),
        ],
        clean_env(),
        tmp_path,
    )
    wait_until(lambda: lines(log) == ["START"], what="the application")
    write(tmp_path / "src/pw", CANARY2)
    p.wait_log("ran the on_change command sh")
    assert lines(notified) == ["pw"]
    assert p.stop() == 42  # still the first application, which got SIGTERM and nothing before it
    assert lines(log) == ["START", "SIGTERM"]
    assert "sending SIGHUP" not in p.log()
    assert_no_canary(p.log())


def test_render_watch_stop_kills_a_hook_still_running_and_its_children(
    tmp_path: Path, procs: list[Proc], strays: list[int]
) -> None:
    out = tmp_path / "pids"
    watched_file(
        tmp_path,
        f"  command: [sh, -c, 'sleep 1000 & echo $! > {out}; echo $$ >> {out}; wait']\n  timeout: 1h\n",
    )
    p = start(
        procs, ["render", "--watch", "-o", str(tmp_path / "out"), "--allow-disk"], clean_env(), tmp_path
    )
    p.wait_log("watching for changes")
    write(tmp_path / "src/pw", CANARY2)
    worker, shell = pids(out, 2, strays)
    began = time.monotonic()
    assert p.stop() == 0
    assert time.monotonic() - began < 2  # a stop is prompt, whatever a hook does
    wait_until(lambda: not alive(worker) and not alive(shell), timeout=2, what="the hook's group killed")
    assert "killing the on_change command sh" in p.log()
    assert_no_canary(p.log())


# --- the manifest -----------------------------------------------------------------------------


def test_on_change_timeout_is_read_and_a_bad_one_is_one_line_with_its_place(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", "version: 1\non_change: {command: [reload], timeout: 1500ms}\n")
    assert load_manifest(path, {}).watch.on_change.timeout == 1.5
    write(path, "version: 1\non_change: {command: [reload]}\n")
    assert load_manifest(path, {}).watch.on_change.timeout == 30.0
    for value, why in (("soon", "must be a duration such as 30s"), ("0", "must be a duration between")):
        write(path, f"version: 1\non_change:\n  command: [reload]\n  timeout: {value}\n")
        r = run_cli(["check", "-m", str(path)])
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        (problem,) = [line for line in r.stderr.splitlines() if "timeout" in line]
        assert "m.yaml:4:" in problem and f"on_change: timeout {why}" in problem
        assert problem == r.stderr.splitlines()[0] and len(r.stderr.splitlines()) == 2
