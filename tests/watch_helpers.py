"""Building a Watcher the way the CLI does: first render through the core, then watch."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from initfetch.manifest import load_manifest
from initfetch.manifest.watch import WatchConfig
from initfetch.outdir import marker as outdir_marker
from initfetch.outdir import writer
from initfetch.redact import Redactor
from initfetch.resolve.resolver import Resolver
from initfetch.templating.render import render
from initfetch.watch import Change, Watcher
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
    redactor = Redactor()
    resolver = Resolver(loaded, environ, redactor, timeout=timeout)
    resolution = resolver.resolve()
    meta = {name: r.meta() for name, r in resolution.info.items()}
    rendered = render(loaded, resolution.values, meta, redactor)
    out = out or tmp_path / "out"
    marker = outdir_marker.marker_body({}, list(rendered.files), list(rendered.env))
    writer.write_all(out, rendered.files, loaded.outputs, marker, allow_disk=True)
    changes: list[Change] = []
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    watcher = Watcher(
        loaded,
        environ,
        redactor,
        config or WatchConfig(),
        resolver.instances,
        resolution,
        rendered,
        notify or changes.append,
        out_dir=out,
        allow_disk=True,
        timeout=timeout,
        **kwargs,
    )
    return watcher, changes


def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)
