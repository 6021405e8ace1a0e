"""Is a complete, current render in place? What `healthcheck` answers.

- Complete: the completion marker is there and every file it lists is a
  regular file. Any marker, however damaged, and any path, however long, is
  "not ready" with a reason, never an OSError.
- Current (`--max-stale`): a watcher's status file says when the render was
  last confirmed current; without one (`render`, `render --hold`) the render is
  as old as the marker. A lease that expired unreplaced is unhealthy at once.
"""

from __future__ import annotations

import calendar
import json
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from initfetch.errors import NotReady, Problem, shown
from initfetch.outdir.names import MARKER_NAME, STATUS_NAME


def healthcheck(out_dir: Path) -> dict[str, Any]:
    """Raise NotReady unless a complete render is in place; return the marker.

    Any marker, however damaged, and any path, however long, is "not ready" with a
    reason, never an OSError.
    """
    path = out_dir / MARKER_NAME
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotReady(Problem(str(out_dir), "no completed render yet")) from None
    except (OSError, ValueError) as e:
        raise NotReady(Problem(str(path), f"unreadable completion marker: {type(e).__name__}")) from None
    files = marker.get("files", []) if isinstance(marker, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise NotReady(Problem(str(path), "unreadable completion marker: not what initfetch writes"))
    missing = [f for f in files if not _is_file(out_dir, f)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise NotReady(Problem(str(out_dir), f"rendered files are missing: {shown(missing[0])}{more}"))
    return dict(marker)


def _is_file(out_dir: Path, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(out_dir / name).st_mode)
    except (OSError, ValueError):  # not there, a name too long, a NUL
        return False


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
