"""What a change does (`on_change:`): signal or restart the application, or run a command.

- exec mode (ExecNotifier): a changed `env` value always restarts (a running
  process cannot see a new environment); `restart: true` restarts (SIGTERM to
  the application's group, the grace period, SIGKILL, start again); an explicit
  `signal:` is sent to the group; with none of these, SIGHUP is sent only when
  no `command:` is configured: a command-only `on_change` never signals the
  application.
- both modes: `command:` runs with initfetch's environment without login
  credentials, plus INITFETCH_CHANGED_FILES / INITFETCH_CHANGED_SECRETS (names,
  never values). See HookRunner: it never holds up the watcher.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from initfetch import execute
from initfetch.execute import Supervisor
from initfetch.manifest.watch import OnChange
from initfetch.observe import (
    COMMAND,
    FAILED,
    NOT_STARTED,
    NULL,
    OK,
    RESTART,
    SIGNAL,
    SKIPPED,
    TIMEOUT,
    Observer,
)
from initfetch.templating.render import Rendered
from initfetch.watch.loop import Change

log = logging.getLogger("initfetch.notify")


@dataclass(frozen=True)
class Hook:
    command: tuple[str, ...]
    env: Mapping[str, str]  # without the changed names, which each run adds
    timeout: float


class HookRunner:
    """Runs the on_change command on a thread of its own: `submit` returns at once.

    The command runs in its own session and process group, stdin /dev/null. At
    most one runs and one waits: a change that arrives while the command runs
    becomes (or replaces) the waiting one, with the latest change's names, and
    runs when the running one has ended. A command still running after
    `timeout` is killed with its whole group. Nothing a command does stops the
    watcher.
    """

    def __init__(self, hook: Hook, observer: Observer = NULL) -> None:
        self.hook = hook
        self.observer = observer
        self._lock = threading.Lock()
        self._running = False  # a hook thread is at work
        self._pending: Change | None = None
        self._pgid: int | None = None  # the running command's process group
        self._closed = False

    @property
    def running(self) -> bool:
        """A command runs, or is about to (one that waits included)."""
        with self._lock:
            return self._running

    def submit(self, change: Change) -> None:
        with self._lock:
            if self._closed:
                return
            if self._running:
                self._pending = change
                return
            self._running = True
        threading.Thread(target=self._work, args=(change,), name="initfetch-hook", daemon=True).start()

    def close(self) -> None:
        """Kill the running command's process group and drop the waiting change; returns at once."""
        with self._lock:
            self._closed = True
            self._pending = None
            pgid = self._pgid
        if pgid is not None:
            log.info("stopping: killing the on_change command %s, still running", self.hook.command[0])
            execute.signal_group(pgid, signal.SIGKILL)

    def _work(self, change: Change) -> None:
        next_change: Change | None = change
        while next_change is not None:
            try:
                self._run(next_change)
            except Exception as e:  # whatever happens, the next change must still get its run
                log.error("the on_change command %s failed: %s", self.hook.command[0], type(e).__name__)
            with self._lock:
                self._pgid = None
                next_change, self._pending = self._pending, None
                if next_change is None:
                    self._running = False

    def _run(self, change: Change) -> None:
        name, timeout = self.hook.command[0], self.hook.timeout
        env = {
            **self.hook.env,
            "INITFETCH_CHANGED_FILES": " ".join(change.files),
            "INITFETCH_CHANGED_SECRETS": " ".join(change.secrets),
        }
        with self._lock:  # close() sees the group as soon as it exists
            if self._closed:
                return
            try:
                pid = execute.processes.start(
                    self.hook.command, env, stdin=subprocess.DEVNULL, start_new_session=True
                )
            except OSError as e:
                _cannot_start(name, e)
                self.observer.notified(COMMAND, NOT_STARTED)
                return
            self._pgid = pid
        status = execute.processes.wait(pid, timeout)
        if status is None:
            execute.signal_group(pid, signal.SIGKILL)
            log.error(
                "on_change command %s did not finish within %gs: killed it and its process group",
                name,
                timeout,
            )
            execute.processes.wait(pid, None)
        with self._lock:
            self._pgid = None
            if status is None or self._closed:
                if status is None:
                    self.observer.notified(COMMAND, TIMEOUT)
                return  # killed by us, and said so
        self.observer.notified(COMMAND, FAILED if status else OK)
        if status:
            log.warning("on_change command %s %s", name, execute.exit_text(status))
        else:
            log.info("ran the on_change command %s", name)


def _cannot_start(name: str, e: OSError) -> None:
    if isinstance(e, FileNotFoundError):
        log.error("on_change command not found: %s", name)
    else:
        log.error("cannot run the on_change command %s: %s", name, e.strerror or type(e).__name__)


class CommandNotifier:
    """render mode: the files are rewritten; run the manifest's command, if any."""

    def __init__(
        self, on_change: OnChange, command_env: Mapping[str, str], observer: Observer = NULL
    ) -> None:
        self.on_change = on_change
        self.observer = observer
        hook = Hook(on_change.command, dict(command_env), on_change.timeout)
        self.hooks = HookRunner(hook, observer) if on_change.command else None

    def __call__(self, change: Change) -> None:
        if self.hooks is not None:
            self.hooks.submit(change)

    def close(self) -> None:
        """On stop: kill a command still running (its whole group), forget a waiting one."""
        if self.hooks is not None:
            self.hooks.close()


class ExecNotifier(CommandNotifier):
    """exec mode: restart or signal the application by the rule in the module's docstring, then
    run the command, if any."""

    def __init__(
        self,
        supervisor: Supervisor,
        on_change: OnChange,
        child_env: Callable[[Rendered], Mapping[str, str]],
        command_env: Mapping[str, str],
        observer: Observer = NULL,
    ) -> None:
        super().__init__(on_change, command_env, observer)
        self.supervisor = supervisor
        self.child_env = child_env

    def __call__(self, change: Change) -> None:
        name = self.supervisor.argv[0]
        if change.env:
            log.info(
                "environment variable(s) %s changed: restarting %s, since a running process cannot see "
                "a new environment",
                ", ".join(change.env),
                name,
            )
            self._restart(change)
        elif self.on_change.restart:
            log.info("restarting %s (on_change: restart)", name)
            self._restart(change)
        elif self.on_change.signal is not None or not self.on_change.command:
            signum = self.on_change.signal or signal.SIGHUP
            log.info("sending %s to %s", execute.signal_name(signum), name)
            self.observer.notified(SIGNAL, OK if self.supervisor.send(signum) else FAILED)
        super().__call__(change)

    def _restart(self, change: Change) -> None:
        before = self.supervisor.restarts
        self.supervisor.restart(self.child_env(change.rendered), self.on_change.grace)
        # not restarted: stopping anyway, not started yet, or the group was already gone
        self.observer.notified(RESTART, OK if self.supervisor.restarts > before else SKIPPED)
