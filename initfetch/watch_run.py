"""`render --watch` and `exec --watch`: after the first render, watch until told to stop.

The command line does the first render as for the one-shot commands, but keeps
its resolver open (its provider instances hold the Vault login); these
functions then run the watcher: in the main thread for `render` (a sidecar),
or in a thread beside the supervised application for `exec`. On SIGTERM the
application is stopped gracefully (exec), replaced leases still in their
grace are revoked, and, when asked, every lease initfetch created and the
rendered files too.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from initfetch import execute
from initfetch.errors import SecretError
from initfetch.manifest import Manifest
from initfetch.manifest.watch import WatchConfig
from initfetch.notify import CommandNotifier, ExecNotifier
from initfetch.providers.base import FetchContext, Provider
from initfetch.redact import Redactor
from initfetch.resolve.resolver import Resolution, Resolved
from initfetch.templating.render import Rendered
from initfetch.watch import Watcher

log = logging.getLogger("initfetch.watch")


@dataclass(frozen=True)
class Options:
    out_dir: Path | None  # None: exec without files
    allow_disk: bool
    timeout: float
    concurrency: int
    revoke_on_exit: bool = False
    wipe_on_exit: bool = False


def config_of(manifest: Manifest) -> WatchConfig:
    """The manifest's watch settings (`refresh:`, `on_change:`)."""
    return manifest.watch


def _watcher(
    manifest: Manifest,
    environ: Mapping[str, str],
    redactor: Redactor,
    instances: dict[str, Provider],
    resolution: Resolution,
    rendered: Rendered,
    opts: Options,
    notify: CommandNotifier | ExecNotifier,
) -> Watcher:
    return Watcher(
        manifest,
        environ,
        redactor,
        config_of(manifest),
        instances,
        resolution,
        rendered,
        notify,
        out_dir=opts.out_dir,
        allow_disk=opts.allow_disk,
        timeout=opts.timeout,
        concurrency=opts.concurrency,
    )


def render_watch(
    manifest: Manifest,
    environ: Mapping[str, str],
    redactor: Redactor,
    instances: dict[str, Provider],
    resolution: Resolution,
    rendered: Rendered,
    opts: Options,
    command_env: Mapping[str, str],
) -> int:
    """The sidecar: keep the files current until SIGTERM/SIGINT; exit 0."""
    on_change = config_of(manifest).on_change
    if on_change.signal is not None or on_change.restart:
        log.warning("on_change: signal and restart apply to exec --watch; render --watch only runs a command")
    watcher = _watcher(
        manifest,
        environ,
        redactor,
        instances,
        resolution,
        rendered,
        opts,
        CommandNotifier(on_change, command_env),
    )
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


def exec_watch(
    manifest: Manifest,
    environ: Mapping[str, str],
    redactor: Redactor,
    instances: dict[str, Provider],
    resolution: Resolution,
    rendered: Rendered,
    opts: Options,
    cmd: Sequence[str],
    remove: set[str],
) -> int:
    """Supervise the application and keep its files and environment current; mirror its exit code."""
    config = config_of(manifest)

    def child_env(r: Rendered) -> dict[str, str]:
        return execute.child_env(environ, r.env, remove)

    supervisor = execute.Supervisor(cmd, child_env(rendered), stop_grace=config.on_change.grace)
    notify = ExecNotifier(supervisor, config.on_change, child_env, execute.child_env(environ, {}, remove))
    watcher = _watcher(manifest, environ, redactor, instances, resolution, rendered, opts, notify)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), name="initfetch-watch", daemon=True)
    thread.start()
    try:
        code = supervisor.run()
    finally:
        stop.set()
        thread.join(opts.timeout + 5)  # a refresh in flight ends by its deadline
    log.info("%s exited with %d; stopping", cmd[0], code)
    watcher.finish(revoke=opts.revoke_on_exit, wipe=opts.wipe_on_exit)
    return code


def revoke_leases(instances: Mapping[str, Provider], info: Mapping[str, Resolved], timeout: float) -> int:
    """Revoke every lease a resolution created (`preview`); returns how many were revoked."""
    done: set[str] = set()
    for r in info.values():
        inst = instances.get(r.provider)
        if r.lease is None or r.lease.id in done or inst is None:
            continue
        try:
            inst.revoke(r.lease.id, FetchContext(time.monotonic() + timeout))
            done.add(r.lease.id)
        except SecretError as e:
            log.warning("could not revoke lease %s (%s); it ends at its TTL", r.lease.id, e.kind)
    if done:
        log.info("revoked %d lease(s) this preview created", len(done))
    return len(done)
