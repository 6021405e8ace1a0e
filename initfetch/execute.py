"""Starting the application: replace initfetch (execve) or supervise it as PID 1.

Replace is the default: the application gets initfetch's PID and signals
arrive natively. `--supervise` keeps initfetch as PID 1 for images without an
init: the application runs in its own process group, and initfetch forwards
SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to that whole group (a
shell's workers too), reaps every zombie re-parented to it, and exits with the
child's code (128+N when the child died of signal N). When initfetch's stdin
is a terminal and initfetch is in the foreground, the application's group gets
the terminal while it runs (an interactive `docker run -it` app can read it).

`Supervisor` is that one piece, for `exec --supervise` and `exec --watch`; the
watcher can also signal the group or restart the application with a new
environment (SIGTERM to the group, a grace period, SIGKILL to the group, then
start again). `processes` starts processes on other threads (on_change hooks)
and gives them their exit status even when the supervisor's reaping loop
collected it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any

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
    """`exec --supervise`: run the command in its own group, forward signals, reap zombies, mirror
    its exit. No SIGKILL deadline of our own: the runtime's stop timeout is the grace."""
    return Supervisor(argv, env, stop_grace=None).run()


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal has no name of its own
        return f"signal {signum}"


def exit_text(status: int) -> str:
    """`exited with 3` or `was killed by SIGTERM`, from a wait status (never a negative code)."""
    if os.WIFSIGNALED(status):
        return f"was killed by {signal_name(os.WTERMSIG(status))}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"


def signal_group(pgid: int, signum: int) -> bool:
    """Send a signal to a whole process group; False if no process of it is left."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def _popen(argv: Sequence[str], env: Mapping[str, str], **options: Any) -> int:
    """Start a process; its pid is reaped with os.waitpid by its owner, never by Popen.

    The child starts with no signal blocked, from whichever thread: initfetch's worker threads
    block the signals the main thread handles, and a signal mask survives fork and exec.
    """
    previous = signal.pthread_sigmask(signal.SIG_SETMASK, ())
    try:
        proc = subprocess.Popen(list(argv), env=dict(env), close_fds=True, **options)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    proc.returncode = 0  # never waited for by Popen: no ResourceWarning, no status taken from us
    return proc.pid


class Processes:
    """Processes started on other threads than the supervisor's (on_change hooks), and their exit
    statuses when the supervisor's reaping loop (waitpid(-1), as PID 1 must) collected them first."""

    POLL = 0.05  # seconds between two looks at a process that is still running

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pids: set[int] = set()
        self._statuses: dict[int, int] = {}

    def start(self, argv: Sequence[str], env: Mapping[str, str], **options: Any) -> int:
        """Start a process (Popen's options) and return its pid. Raises OSError."""
        with self._cond:  # the pid is known before the reaping loop can collect it
            pid = _popen(argv, env, **options)
            self._pids.add(pid)
        return pid

    def collected(self, pid: int, status: int) -> None:
        """The reaping loop collected `pid`: keep its status if one of ours waits for it."""
        with self._cond:
            if pid in self._pids:
                self._statuses[pid] = status
                self._cond.notify_all()

    def wait(self, pid: int, timeout: float | None) -> int | None:
        """The wait status of `pid`, or None if it still runs after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                status = self._reaped(pid)
                if status is not None:
                    self._pids.discard(pid)
                    return status
                left = self.POLL if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(self.POLL, left))

    def _reaped(self, pid: int) -> int | None:
        if pid in self._statuses:
            return self._statuses.pop(pid)
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None  # the reaping loop has it: its status is recorded in a moment
        return status if got == pid else None


processes = Processes()


def _foreground_terminal() -> int | None:
    """fd 0 if it is a terminal whose foreground group is initfetch's, else None."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def _hand_terminal(tty: int, pgid: int) -> None:
    """Make `pgid` the terminal's foreground group. SIGTTOU is blocked meanwhile: initfetch takes
    the terminal back from the background, and that would otherwise stop it."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(tty, pgid)
    except OSError as e:
        log.debug("cannot hand the terminal to process group %d: %s", pgid, e.strerror or type(e).__name__)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Supervisor:
    """The application as a child in its own process group, signalled and restarted as a whole.

    `run()` belongs to the main thread (signal handlers live there): it starts
    the child, forwards signals to its group, reaps every zombie, restarts the
    child when asked, and returns the exit code of the last child. On
    SIGTERM/SIGINT the signal is forwarded and the group gets `stop_grace`
    seconds before SIGKILL (None: no deadline of ours). `send` and `restart`
    may be called from any thread (the watcher's).
    """

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], *, stop_grace: float | None = 10.0
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)  # the environment the current (or next) child gets
        self.stop_grace = stop_grace
        self.restarts = 0
        self.started = threading.Event()  # set once the first child runs
        self.status: int | None = None  # the last child's wait status, once run() returned it
        # Reentrant: a signal handler runs in the main thread, maybe while it holds the lock.
        self._lock = threading.RLock()
        self._pid: int | None = None  # the child's pid, also its process group's id
        self._restart = False
        self._stopping = False
        self._pending: list[int] = []
        self._tty: int | None = None  # the terminal the child gets while it runs

    @property
    def pid(self) -> int | None:
        return self._pid

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in FORWARDED}
        self._tty = _foreground_terminal()
        _flush()
        try:
            failed = self._start()
            return failed if failed is not None else self._reap()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _reap(self) -> int:
        """Reap every child (as PID 1, orphans too) until the application exits; restart it when asked."""
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return 0
            with self._lock:
                if pid != self._pid:
                    processes.collected(pid, status)  # a hook's, or an orphan re-parented to us
                    continue
                self._pid = None
                if self._tty is not None:
                    _hand_terminal(self._tty, os.getpgrp())
                if not self._restart or self._stopping:
                    if self._stopping:  # what is left of the group: it would die with PID 1 anyway
                        signal_group(pid, signal.SIGKILL)
                    self.status = status
                    return _exit_code(status)
                self._restart = False
                log.info("%s %s; starting it again with its new environment", self.argv[0], exit_text(status))
                failed = self._start()
                if failed is not None:
                    return failed

    def _start(self) -> int | None:
        with self._lock:
            _flush()
            try:
                pid = _popen(self.argv, self.env, process_group=0)
            except OSError as e:
                return _cannot_start(self.argv[0], e)
            self._pid = pid  # first: a signal from now on goes straight to the child's group
            if self._tty is not None:
                _hand_terminal(self._tty, pid)
                # A child that read the terminal before it was handed over stopped on SIGTTIN.
                signal_group(pid, signal.SIGCONT)
            pending, self._pending = self._pending, []
        # Signals that arrived while no child ran (before the first start, or during a restart).
        for sig in pending:
            self.send(sig)
        if self._stopping:  # told to stop while this child was being started
            self._kill_after(pid, self.stop_grace)
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
        """Send a signal to the child's process group; False if there is no child right now."""
        with self._lock:
            if self._pid is None:  # between two children: the next one gets it
                self._pending.append(signum)
                return False
            return signal_group(self._pid, signum)

    def restart(self, env: Mapping[str, str], grace: float) -> None:
        """Stop the child's group (SIGTERM, then SIGKILL after `grace`) and start it again with `env`."""
        with self._lock:
            self.env = dict(env)
            if self._stopping or self._pid is None:
                return  # stopping anyway, or not started yet: the first start gets `env`
            self._restart = True
            self.restarts += 1
            pid = self._pid
            if not signal_group(pid, signal.SIGTERM):
                return
        self._kill_after(pid, grace)

    def _kill_after(self, pgid: int, grace: float | None) -> None:
        """SIGKILL to the group after `grace`, to its leader or to workers that outlived it (a
        restart does not wait for them; they must not keep the old credentials)."""
        if grace is None:
            return

        def kill() -> None:
            # The group's id cannot be reused while a process of it is left; once it is empty,
            # reuse within the grace would take a wrap of the whole pid space.
            with self._lock:
                if signal_group(pgid, 0):
                    log.warning(
                        "%s did not exit within %gs of SIGTERM; sending SIGKILL to its process group",
                        self.argv[0],
                        grace,
                    )
                    signal_group(pgid, signal.SIGKILL)

        timer = threading.Timer(grace, kill)
        timer.daemon = True
        timer.start()
