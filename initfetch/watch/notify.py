"""What a change does (`on_change:`): signal or restart the application, or run a command.

- exec mode: SIGHUP by default, any signal by name, or a restart (SIGTERM, the
  grace period, SIGKILL, start again). A changed `env` value always restarts:
  a running process cannot see a new environment.
- render mode: optionally run a command (tell another container to reload).
  It gets initfetch's environment without login credentials, plus
  INITFETCH_CHANGED_FILES / INITFETCH_CHANGED_SECRETS (names, never values).
"""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

from initfetch.execute import Supervisor
from initfetch.manifest.watch import OnChange
from initfetch.templating.render import Rendered
from initfetch.watch.loop import Change

log = logging.getLogger("initfetch.notify")

COMMAND_TIMEOUT = 60.0


class ExecNotifier:
    def __init__(
        self,
        supervisor: Supervisor,
        on_change: OnChange,
        child_env: Callable[[Rendered], Mapping[str, str]],
        command_env: Mapping[str, str],
    ) -> None:
        self.supervisor = supervisor
        self.on_change = on_change
        self.child_env = child_env
        self.command_env = command_env

    def __call__(self, change: Change) -> None:
        name = self.supervisor.argv[0]
        if change.env:
            log.info(
                "environment variable(s) %s changed: restarting %s, since a running process cannot see "
                "a new environment",
                ", ".join(change.env),
                name,
            )
            self.supervisor.restart(self.child_env(change.rendered), self.on_change.grace)
        elif self.on_change.restart:
            log.info("restarting %s (on_change: restart)", name)
            self.supervisor.restart(self.child_env(change.rendered), self.on_change.grace)
        else:
            signum = self.on_change.signal or signal.SIGHUP
            log.info("sending %s to %s", signal.Signals(signum).name, name)
            self.supervisor.send(signum)
        if self.on_change.command:
            run_command(self.on_change.command, self.command_env, change)


class CommandNotifier:
    """render mode: the files are rewritten; run the manifest's command, if any."""

    def __init__(self, on_change: OnChange, command_env: Mapping[str, str]) -> None:
        self.on_change = on_change
        self.command_env = command_env

    def __call__(self, change: Change) -> None:
        if self.on_change.command:
            run_command(self.on_change.command, self.command_env, change)


def run_command(command: Sequence[str], env: Mapping[str, str], change: Change) -> int | None:
    """Run the on_change command; its exit code is logged, a failure never stops the watcher."""
    full = {
        **env,
        "INITFETCH_CHANGED_FILES": " ".join(change.files),
        "INITFETCH_CHANGED_SECRETS": " ".join(change.secrets),
    }
    try:
        done = subprocess.run(list(command), env=full, stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        log.error("on_change command not found: %s", command[0])
        return None
    except subprocess.TimeoutExpired:
        log.error("on_change command %s did not finish within %gs; killed", command[0], COMMAND_TIMEOUT)
        return None
    except OSError as e:
        log.error("cannot run the on_change command %s: %s", command[0], e.strerror or type(e).__name__)
        return None
    if done.returncode:
        log.warning("on_change command %s exited with %d", command[0], done.returncode)
    else:
        log.info("ran the on_change command %s", command[0])
    return done.returncode
