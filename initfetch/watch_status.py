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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from initfetch.outdir import writer
from initfetch.outdir.names import STATUS_NAME
from initfetch.outdir.writer import replace_file


def write(out_dir: Path, body: Mapping[str, Any]) -> None:
    """Replace the status file atomically (the one atomic writer), never through a symlink."""
    replace_file(out_dir, STATUS_NAME, json.dumps(dict(body), sort_keys=True).encode() + b"\n")


def body(stale_since: float | None, expired: Sequence[str], failing: Sequence[str]) -> dict[str, Any]:
    """No clock of its own: a watcher whose state did not change rewrites nothing."""
    return {
        "stale_since": stale_since,
        "expired": sorted(expired),
        "failing": sorted(failing),
    }


def remove(out_dir: Path) -> None:
    writer.remove(out_dir, STATUS_NAME)
