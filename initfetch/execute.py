"""Starting the application: replace initfetch (execve) or supervise it as PID 1.

Replace is the default: the application gets initfetch's PID and signals
arrive natively. `--supervise` keeps initfetch as PID 1 for images without an
init: it forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
child, reaps every zombie re-parented to it, and exits with the child's code
(128+N when the child died of signal N).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

log = logging.getLogger("initfetch.exec")

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


def child_env(base: Mapping[str, str], extra: Mapping[str, str], remove: set[str]) -> dict[str, str]:
    """The application's environment: initfetch's own, minus login credentials, plus the manifest's."""
    env = {k: v for k, v in base.items() if k not in remove and not k.startswith("INITFETCH_")}
    env.update(extra)
    return env


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def replace(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """execve the command; only returns (with 126/127) if it cannot be started."""
    _flush()
    try:
        os.execvpe(argv[0], list(argv), dict(env))
    except OSError as e:
        return _cannot_start(argv[0], e)
    return EXIT_CANNOT_EXECUTE  # pragma: no cover - execvpe does not return


def _cannot_start(command: str, e: OSError) -> int:
    """The shell's convention: 127 when the command is not found, 126 when it cannot run."""
    if isinstance(e, FileNotFoundError):
        log.error("command not found: %s", command)
        return EXIT_NOT_FOUND
    log.error("cannot execute %s: %s", command, e.strerror or type(e).__name__)
    return EXIT_CANNOT_EXECUTE


def supervise(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the command as a child, forward signals, reap zombies, mirror its exit."""
    child_pid: int | None = None
    pending: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        if child_pid is None:
            pending.append(signum)
            return
        try:
            os.kill(child_pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    _flush()
    try:
        try:
            proc = subprocess.Popen(list(argv), env=dict(env), close_fds=True)
        except OSError as e:
            return _cannot_start(argv[0], e)
        child_pid = proc.pid
        for sig in pending:
            forward(sig, None)
        while True:
            # As PID 1 every orphan in the container is re-parented to us: reap them all,
            # and stop when the direct child is gone.
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 0
            if pid == child_pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                code = proc.returncode
                return 128 - code if code < 0 else code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
