"""Building a Watcher the way the CLI does: a first render through the pipeline, then watch."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from initfetch.manifest import load_manifest
from initfetch.manifest.watch import WatchConfig
from initfetch.pipeline import Pipeline, Settings
from initfetch.redact import Redactor
from initfetch.watch.loop import Change, Watcher
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
    out = out or tmp_path / "out"
    settings = Settings(timeout=timeout, out_dir=out, allow_disk=True)
    pipeline = Pipeline(loaded, environ, Redactor(), settings)
    first = pipeline.run()
    pipeline.write(first.resolution.info, first.rendered)
    changes: list[Change] = []
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    watcher = Watcher(pipeline, first, notify or changes.append, config=config or WatchConfig(), **kwargs)
    return watcher, changes


def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)
