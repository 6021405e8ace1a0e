"""`render --watch` and `exec --watch`: after the first render, watch until told to stop.

The command does the first render as the one-shot commands do, keeping its
pipeline open (its provider instances hold the logins, and it holds OUT_DIR's
lock). The watcher then runs on its own thread; the main thread only handles
signals (render) or supervises the application (exec), so a stop is never
held up by a refresh that retries, a request that hangs or a hook that runs:

- render --watch: SIGTERM, SIGINT and SIGQUIT stop; SIGHUP re-reads every
  secret now; SIGUSR1 and SIGUSR2 are logged and ignored.
- exec --watch: every signal goes to the application's process group
  (execute.Supervisor); when the application exits, the watcher stops.

On stop the watcher gets STOP_JOIN seconds to finish what it writes, hooks
still running are killed, then replaced leases still in their grace are
revoked (and, when asked, every lease and login initfetch made, and the
rendered files), all within the 2 s a stop may take.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from initfetch import execute
from initfetch.errors import Terminated
from initfetch.pipeline import Pipeline, Result
from initfetch.resolve.pool import main_thread_signals_only
from initfetch.templating.render import Rendered
from initfetch.watch.loop import Watcher
from initfetch.watch.notify import CommandNotifier, ExecNotifier

log = logging.getLogger("initfetch.watch")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
STOP_JOIN = 0.5  # seconds the watcher thread gets to finish a write once told to stop


@dataclass(frozen=True)
class Options:
    revoke_on_exit: bool = False
    wipe_on_exit: bool = False


def guard_first_render() -> None:
    """Signals while a watch command's first render runs: stop signals end it at once (nothing
    half written), SIGHUP, SIGUSR1 and SIGUSR2 are noted and ignored (no default action kills
    initfetch without its cleanup)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    def ignore(signum: int, frame: FrameType | None) -> None:
        log.info("received %s during the first render; ignored", signal.Signals(signum).name)

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    for sig in (signal.SIGHUP, *IGNORED_SIGNALS):
        signal.signal(sig, ignore)


def render_watch(pipeline: Pipeline, first: Result, opts: Options) -> int:
    """The sidecar: keep the files current until SIGTERM/SIGINT/SIGQUIT; exit 0."""
    on_change = pipeline.manifest.watch.on_change
    if on_change.signal is not None or on_change.restart:
        log.warning("on_change: signal and restart apply to exec --watch; render --watch only runs a command")
    command_env = execute.child_env(pipeline.environ, {}, pipeline.credentials(first.resolution))
    notifier = CommandNotifier(on_change, command_env, pipeline.observer)
    watcher = Watcher(pipeline, first, notifier)  # no backend is asked here: run() does that

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum in STOP_SIGNALS:
            watcher.request_stop()
        elif signum == signal.SIGHUP:
            log.info("received SIGHUP: reading every secret again now")
            watcher.request_refresh()
        else:
            log.info("received %s: ignored (SIGHUP refreshes now, SIGTERM stops)", name)

    previous = {
        sig: signal.signal(sig, on_signal) for sig in (*STOP_SIGNALS, signal.SIGHUP, *IGNORED_SIGNALS)
    }
    thread = _start(watcher)
    log.info("render complete; watching for changes until SIGTERM")
    try:
        _wait_for(watcher.stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopping")
    _stop(watcher, thread, notifier, opts)
    return 0


def exec_watch(pipeline: Pipeline, first: Result, cmd: Sequence[str], opts: Options) -> int:
    """Supervise the application and keep its files and environment current; mirror its exit code."""
    on_change = pipeline.manifest.watch.on_change
    remove = pipeline.credentials(first.resolution)

    def child_env(r: Rendered) -> dict[str, str]:
        return execute.child_env(pipeline.environ, r.env, remove)

    supervisor = execute.Supervisor(cmd, child_env(first.rendered), stop_grace=on_change.grace)
    notifier = ExecNotifier(
        supervisor, on_change, child_env, execute.child_env(pipeline.environ, {}, remove), pipeline.observer
    )
    watcher = Watcher(pipeline, first, notifier)
    thread = _start(watcher)
    code = supervisor.run()  # forwards every signal to the application until it exits
    ended = execute.exit_text(supervisor.status) if supervisor.status is not None else f"exited with {code}"
    log.info("%s %s; stopping", cmd[0], ended)
    _stop(watcher, thread, notifier, opts)
    return code


def _start(watcher: Watcher) -> threading.Thread:
    def run() -> None:
        main_thread_signals_only()  # the watcher starts no process (hooks run on their own thread)
        watcher.run()

    thread = threading.Thread(target=run, name="initfetch-watch", daemon=True)
    thread.start()
    return thread


def _wait_for(stop: threading.Event) -> None:
    """Sleep in the main thread until `stop` is set by a signal handler.

    The handlers run in the main thread only when it wakes up, and a signal may be delivered to
    any thread: the main thread sleeps on a pipe the signal machinery writes to (set_wakeup_fd),
    so every signal wakes it, with no polling."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    try:
        while not stop.is_set():
            os.read(r, 512)  # returns when a signal arrived; its handler runs right after
    finally:
        signal.set_wakeup_fd(previous)
        os.close(r)
        os.close(w)


def _stop(
    watcher: Watcher, thread: threading.Thread, notifier: CommandNotifier | ExecNotifier, opts: Options
) -> None:
    """Stop the loop (a request or retry in flight is abandoned, not waited for), kill hooks,
    then revoke and wipe as asked, within the stop deadline."""
    watcher.request_stop()
    thread.join(STOP_JOIN)
    notifier.close()  # a hook still running is killed with its process group
    watcher.finish(revoke=opts.revoke_on_exit, wipe=opts.wipe_on_exit)
