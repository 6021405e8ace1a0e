"""cli.exit_now skips the interpreter's teardown, and loses nothing the ordinary exit keeps:
buffered output, atexit handlers (logging's flush), threads that are not daemons, the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_buffered_output_and_atexit_handlers_survive_and_the_code_is_kept() -> None:
    r = _run(
        "import atexit, logging, sys\n"
        "from initfetch.cli import exit_now\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "logging.getLogger('x').error('logged')\n"
        "sys.stdout.write('x' * 200000)\n"
        "exit_now(3)\n"
    )
    assert r.returncode == 3
    assert r.stdout == "x" * 200000 + "atexit ran\n"
    assert "logged" in r.stderr


def test_a_thread_that_is_not_a_daemon_is_waited_for(tmp_path: Path) -> None:
    done = tmp_path / "done"
    r = _run(
        "import threading, time, pathlib\n"
        "from initfetch.cli import exit_now\n"
        f"late = lambda: (time.sleep(0.3), pathlib.Path({str(done)!r}).write_text('y'))\n"
        "t = threading.Thread(target=late)\n"
        "t.start()\n"
        "exit_now(0)\n"
    )
    assert r.returncode == 0, r.stderr
    assert done.read_text() == "y"


def _to_a_closed_pipe(ending: str) -> int:
    read, write = os.pipe()
    os.close(read)
    try:
        code = f"import sys\nfrom initfetch.cli import exit_now\nprint('x' * 10)\n{ending}"
        return subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONPATH": str(REPO)},
            stdout=write,
            stderr=subprocess.DEVNULL,
            timeout=30,
        ).returncode
    finally:
        os.close(write)


def test_a_stdout_nobody_reads_ends_as_the_ordinary_exit_ends() -> None:
    assert _to_a_closed_pipe("exit_now(0)") == _to_a_closed_pipe("sys.exit(0)") == 120
