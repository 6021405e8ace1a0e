"""The watcher's status file (healthcheck reads it: initfetch.outdir.health).

`OUT_DIR/.initfetch-watch.json` says when the render was last confirmed
current: a refresh that changes nothing rewrites no rendered file and no
marker, yet must still count as fresh. It holds times and names, never values:

    {"stale_since": null, "expired": [], "failing": []}

`stale_since` is when the oldest failing item last succeeded (null while
nothing fails). It is rewritten only when that state changes. Without a
status file (`render`, `render --hold`) the render is as old as the
completion marker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from initfetch.outdir import writer
from initfetch.outdir.names import STATUS_NAME

log = logging.getLogger("initfetch.watch")


class StatusFile:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._written: dict[str, Any] | None = None

    def update(self, stale_since: float | None, expired: Sequence[str], failing: Sequence[str]) -> None:
        """Rewrite the status if it changed; no clock of its own, so an unchanged state writes nothing.
        `stale_since`: wall-clock seconds, or None while nothing fails."""
        body = {"stale_since": stale_since, "expired": sorted(expired), "failing": sorted(failing)}
        if body == self._written:
            return
        data = json.dumps(body, sort_keys=True).encode() + b"\n"
        try:
            writer.replace_file(self.out_dir, STATUS_NAME, data)
            self._written = body
        except OSError as e:
            log.warning("cannot write the watch status file: %s", e.strerror or type(e).__name__)


def remove(out_dir: Path) -> None:
    """Drop an earlier watcher's status: a render that is not watched must not be judged by it."""
    writer.remove(out_dir, STATUS_NAME)
