"""Building a Watcher the way the CLI does: a first render through the pipeline, then watch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from initfetch.execute import Supervisor
from initfetch.manifest import load_manifest
from initfetch.manifest.watch import WatchConfig
from initfetch.pipeline import Pipeline, Settings
from initfetch.redact import Redactor
from initfetch.watch.loop import Change, Watcher
from tests.helpers import write


class Clock:
    """A monotonic clock the test moves by hand: no sleeping, no timing assertions."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def start_watcher(
    tmp_path: Path,
    manifest: str,
    environ: Mapping[str, str],
    config: WatchConfig | None = None,
    *,
    clock: Callable[[], float] | None = None,
    notify: Callable[[Change], None] | None = None,
    timeout: float = 10.0,
    out: Path | None = None,
) -> tuple[Watcher, list[Change]]:
    path = write(tmp_path / "initfetch.yaml", manifest)
    loaded = load_manifest(path, environ)
    out = out or tmp_path / "out"
    settings = Settings(timeout=timeout, out_dir=out, allow_disk=True)
    pipeline = Pipeline(loaded, environ, Redactor(), settings)
    first = pipeline.run()
    pipeline.write(first.resolution.info, first.rendered)
    changes: list[Change] = []
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    watcher = Watcher(pipeline, first, notify or changes.append, config=config or WatchConfig(), **kwargs)
    return watcher, changes


def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- a real initfetch process -------------------------------------------------------------


class Proc:
    """A running initfetch; stderr is collected on a thread so the pipe never fills."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "initfetch", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err: list[str] = []
        assert self.proc.stderr is not None
        stream = self.proc.stderr
        self.reader = threading.Thread(target=lambda: self.err.extend(iter(stream.readline, "")), daemon=True)
        self.reader.start()

    def log(self) -> str:
        return "".join(self.err)

    def wait_log(self, text: str, count: int = 1, timeout: float = 60) -> None:
        def seen() -> bool:
            assert self.proc.poll() is None, f"initfetch exited early ({self.proc.returncode}):\n{self.log()}"
            return self.log().count(text) >= count

        wait_until(seen, timeout, f"{text!r} in the log:\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


def start(procs: list[Proc], args: list[str], env: dict[str, str], cwd: Path) -> Proc:
    procs.append(Proc(args, env, cwd))
    return procs[-1]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def fingerprint(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def alive(pid: int) -> bool:
    """The process runs (a zombie, dead but not yet reaped by whoever is its parent now, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def pids(path: Path, count: int, strays: list[int] | None = None) -> list[int]:
    """The `count` pids a test's shell wrote to `path`, one a line, once it has written them all;
    noted in `strays` (the fixture) to be killed at the end of the test."""
    wait_until(lambda: len(lines(path)) >= count, what=f"{count} pids in {path.name}")
    found = [int(x) for x in lines(path)[:count]]
    if strays is not None:
        strays.extend(found)
    return found


def supervise_with(sup: Supervisor, script: Callable[[], None]) -> tuple[int, list[BaseException]]:
    """Run the supervisor in this (main) thread while `script` drives it from another thread."""
    errors: list[BaseException] = []

    def drive() -> None:
        try:
            script()
        except BaseException as e:  # reported by the test, after the supervisor returned
            errors.append(e)
            if sup.pid:
                os.killpg(sup.pid, signal.SIGKILL)  # the whole group: no worker left behind

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    code = sup.run()
    thread.join(30)
    return code, errors


@pytest.fixture
def strays() -> Iterator[list[int]]:
    """Pids of processes a test started; what is left of them is killed when it ends, failed or not."""
    noted: list[int] = []
    yield noted
    for pid in noted:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
