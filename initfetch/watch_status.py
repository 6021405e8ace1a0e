"""The watcher's status file, and the staleness check `healthcheck --max-stale` makes with it.

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

import calendar
import json
import os
import secrets as _random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from initfetch.errors import NotReady, Problem

STATUS_NAME = ".initfetch-watch.json"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write(out_dir: Path, body: Mapping[str, Any]) -> None:
    """Replace the status file atomically (temp file, fsync, rename), never through a symlink."""
    data = json.dumps(dict(body), sort_keys=True).encode() + b"\n"
    root = os.open(out_dir, _DIR_FLAGS)
    tmp = f".{STATUS_NAME}.initfetch-{_random.token_hex(6)}"
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o444, dir_fd=root
        )
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, STATUS_NAME, src_dir_fd=root, dst_dir_fd=root)
        tmp = ""
    finally:
        if tmp:
            try:
                os.unlink(tmp, dir_fd=root)
            except OSError:
                pass
        os.close(root)


def body(stale_since: float | None, expired: Sequence[str], failing: Sequence[str]) -> dict[str, Any]:
    """No clock of its own: a watcher whose state did not change rewrites nothing."""
    return {
        "stale_since": stale_since,
        "expired": sorted(expired),
        "failing": sorted(failing),
    }


def remove(out_dir: Path) -> None:
    try:
        os.unlink(out_dir / STATUS_NAME)
    except OSError:
        pass


def check(
    out_dir: Path, marker: Mapping[str, Any], max_stale: float | None, now: float | None = None
) -> None:
    """Raise NotReady when a lease expired unreplaced, or the render is older than `max_stale`."""
    now = time.time() if now is None else now
    status = _read(out_dir)
    if status is not None and status.get("expired"):
        names = ", ".join(str(n) for n in status["expired"])
        raise NotReady(
            Problem(str(out_dir), f"a lease expired before it could be renewed or replaced: {names}")
        )
    if max_stale is None:
        return
    if status is not None:
        since = status.get("stale_since")
        if not isinstance(since, int | float):
            return  # the watcher confirmed everything at its last check
        what = "failing since the render was last confirmed"
    else:
        since = _marker_time(marker)
        what = "rendered and never refreshed"
    if since is not None and now - since > max_stale:
        failing = ", ".join(status.get("failing", [])) if status else ""
        detail = f" ({failing})" if failing else ""
        raise NotReady(
            Problem(
                str(out_dir),
                f"the render is stale: {what} {now - since:.0f}s ago, "
                f"over --max-stale {max_stale:g}s{detail}",
            )
        )


def _read(out_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((out_dir / STATUS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _marker_time(marker: Mapping[str, Any]) -> float | None:
    text = marker.get("completed_at")
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None
