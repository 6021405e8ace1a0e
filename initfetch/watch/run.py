"""`render --watch` and `exec --watch`: after the first render, watch until told to stop.

The command does the first render as the one-shot commands do, keeping its
pipeline open (its provider instances hold the logins); these functions then
run the watcher: in the main thread for `render` (a sidecar), or in a thread
beside the supervised application for `exec`. On SIGTERM the application is
stopped gracefully (exec), replaced leases still in their grace are revoked,
and, when asked, every lease initfetch created and the rendered files too.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from initfetch import execute
from initfetch.pipeline import Pipeline, Result
from initfetch.templating.render import Rendered
from initfetch.watch.loop import Watcher
from initfetch.watch.notify import CommandNotifier, ExecNotifier

log = logging.getLogger("initfetch.watch")


@dataclass(frozen=True)
class Options:
    revoke_on_exit: bool = False
    wipe_on_exit: bool = False


def render_watch(pipeline: Pipeline, first: Result, opts: Options) -> int:
    """The sidecar: keep the files current until SIGTERM/SIGINT; exit 0."""
    on_change = pipeline.manifest.watch.on_change
    if on_change.signal is not None or on_change.restart:
        log.warning("on_change: signal and restart apply to exec --watch; render --watch only runs a command")
    remove = pipeline.credentials(first.resolution)
    command_env = execute.child_env(pipeline.environ, {}, remove)
    watcher = Watcher(pipeline, first, CommandNotifier(on_change, command_env))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    log.info("render complete; watching for changes until SIGTERM")
    try:
        watcher.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopping")
    watcher.finish(revoke=opts.revoke_on_exit, wipe=opts.wipe_on_exit)
    return 0


def exec_watch(pipeline: Pipeline, first: Result, cmd: Sequence[str], opts: Options) -> int:
    """Supervise the application and keep its files and environment current; mirror its exit code."""
    on_change = pipeline.manifest.watch.on_change
    remove = pipeline.credentials(first.resolution)

    def child_env(r: Rendered) -> dict[str, str]:
        return execute.child_env(pipeline.environ, r.env, remove)

    supervisor = execute.Supervisor(cmd, child_env(first.rendered), stop_grace=on_change.grace)
    notify = ExecNotifier(supervisor, on_change, child_env, execute.child_env(pipeline.environ, {}, remove))
    watcher = Watcher(pipeline, first, notify)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), name="initfetch-watch", daemon=True)
    thread.start()
    try:
        code = supervisor.run()
    finally:
        stop.set()
        thread.join(pipeline.settings.timeout + 5)  # a refresh in flight ends by its deadline
    log.info("%s exited with %d; stopping", cmd[0], code)
    watcher.finish(revoke=opts.revoke_on_exit, wipe=opts.wipe_on_exit)
    return code
