"""Starting the application: replace initfetch (execve) or supervise it as PID 1.

Replace is the default: the application gets initfetch's PID and signals
arrive natively. `--supervise` keeps initfetch as PID 1 for images without an
init: it forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
child, reaps every zombie re-parented to it, and exits with the child's code
(128+N when the child died of signal N). `Supervisor` does the same for
`exec --watch`, and lets the watcher signal the child or restart it with a new
environment (SIGTERM, a grace period, SIGKILL, then start again).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
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


def cannot_run(command: str, env: Mapping[str, str]) -> int | None:
    """126/127 (logged) if `command` cannot be started with this PATH, else None.

    Asked before any backend is contacted, so a typo costs no lease and no read.
    """
    import shutil

    if "/" in command:
        if not os.path.exists(command):
            return _cannot_start(command, FileNotFoundError())
        if os.path.isdir(command) or not os.access(command, os.X_OK):
            return _cannot_start(command, PermissionError(13, "Permission denied"))
        return None
    if shutil.which(command, path=env.get("PATH", os.defpath)) is None:
        return _cannot_start(command, FileNotFoundError())
    return None


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


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Supervisor:
    """`supervise()` for watch mode: the child can be signalled or restarted from another thread.

    `run()` belongs to the main thread (signal handlers live there): it starts
    the child, forwards signals, reaps every zombie, restarts the child when
    asked, and returns the exit code of the last child. On SIGTERM/SIGINT the
    signal is forwarded and the child gets `stop_grace` seconds before SIGKILL.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], *, stop_grace: float = 10.0) -> None:
        self.argv = list(argv)
        self.env = dict(env)  # the environment the current (or next) child gets
        self.stop_grace = stop_grace
        self.restarts = 0
        self.started = threading.Event()  # set once the first child runs
        # Reentrant: a signal handler runs in the main thread, maybe while it holds the lock.
        self._lock = threading.RLock()
        self._pid: int | None = None
        self._restart = False
        self._stopping = False
        self._pending: list[int] = []

    @property
    def pid(self) -> int | None:
        return self._pid

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in FORWARDED}
        _flush()
        try:
            failed = self._start()
            if failed is not None:
                return failed
            while True:
                try:
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:
                    return 0
                with self._lock:
                    if pid != self._pid:
                        continue  # an orphan re-parented to us (PID 1)
                    self._pid = None
                    if not self._restart or self._stopping:
                        return _exit_code(status)
                    self._restart = False
                    log.info("starting %s again with its new environment", self.argv[0])
                    failed = self._start()
                    if failed is not None:
                        return failed
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self) -> int | None:
        with self._lock:
            _flush()
            try:
                proc = subprocess.Popen(self.argv, env=self.env, close_fds=True)
            except OSError as e:
                return _cannot_start(self.argv[0], e)
            proc.returncode = 0  # reaped by run(), never by Popen (no ResourceWarning, no double wait)
            self._pid = proc.pid  # first: a signal from now on goes straight to the child
            pending, self._pending = self._pending, []
        # Signals that arrived while no child ran (before the first start, or during a restart).
        for sig in pending:
            self.send(sig)
        if self._stopping:  # told to stop while this child was being started
            self._kill_after(proc.pid, self.stop_grace)
        self.started.set()
        return None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            with self._lock:
                self._stopping = True
                pid = self._pid
            if pid is not None:
                self._kill_after(pid, self.stop_grace)
        self.send(signum)

    def send(self, signum: int) -> bool:
        """Send a signal to the current child; False if there is none right now."""
        with self._lock:
            if self._pid is None:  # between two children: the next one gets it
                self._pending.append(signum)
                return False
            try:
                os.kill(self._pid, signum)
            except ProcessLookupError:
                return False
            return True

    def restart(self, env: Mapping[str, str], grace: float) -> None:
        """Stop the child (SIGTERM, then SIGKILL after `grace`) and start it again with `env`."""
        with self._lock:
            self.env = dict(env)
            if self._stopping or self._pid is None:
                return  # stopping anyway, or not started yet: the first start gets `env`
            self._restart = True
            self.restarts += 1
            pid = self._pid
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
        self._kill_after(pid, grace)

    def _kill_after(self, pid: int, grace: float) -> None:
        def kill() -> None:
            with self._lock:
                if self._pid == pid:  # not reaped yet, so the pid is still our child's
                    log.warning("%s did not exit within %gs of SIGTERM; sending SIGKILL", self.argv[0], grace)
                    os.kill(pid, signal.SIGKILL)

        timer = threading.Timer(grace, kill)
        timer.daemon = True
        timer.start()
