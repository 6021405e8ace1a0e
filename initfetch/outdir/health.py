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


def ready(out_dir: Path, max_stale: float | None) -> None:
    """Raise NotReady unless a complete render is in place and current: what `healthcheck`
    answers, and `--listen`'s `/readyz` (one rule, one implementation)."""
    check(out_dir, healthcheck(out_dir), max_stale)


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
    """Raise NotReady when a lease expired unreplaced, or the render is staler than `max_stale`.

    A watcher's status says when each item falls due and when it last succeeded; the
    staleness is computed here, from the clock: the time since the last success of
    everything that is due, whether or not the watcher is still retrying, hangs or died.
    """
    now = time.time() if now is None else now
    status = _read(out_dir)
    _check_leases(out_dir, status, now)
    if max_stale is None:
        return
    if status is None:
        since = _marker_time(marker)
        what = "rendered and never refreshed"
    else:
        since = _oldest_due_success(status, now)
        what = "last confirmed current"
    if since is not None and now - since > max_stale:
        failing = ", ".join(str(f) for f in status.get("failing", [])) if status else ""
        detail = f" ({failing})" if failing else ""
        raise NotReady(
            Problem(
                str(out_dir),
                f"the render is stale: {what} {now - since:.0f}s ago, "
                f"over --max-stale {max_stale:g}s{detail}",
            )
        )


def _check_leases(out_dir: Path, status: Mapping[str, Any] | None, now: float) -> None:
    if status is None:
        return
    if status.get("expired"):
        names = ", ".join(str(n) for n in status["expired"])
        raise NotReady(
            Problem(str(out_dir), f"a lease expired before it could be renewed or replaced: {names}")
        )
    expires = status.get("expires")
    if isinstance(expires, int | float) and now >= expires:
        raise NotReady(
            Problem(
                str(out_dir), f"a lease expired {now - expires:.0f}s ago and the watcher has not replaced it"
            )
        )


def _oldest_due_success(status: Mapping[str, Any], now: float) -> float | None:
    """The earliest last success among what is due by `now`; None when nothing is due."""
    if "due" not in status:  # a status of an earlier version: only what was failing counted
        since = status.get("stale_since")
        return float(since) if isinstance(since, int | float) else None
    oks = [
        float(pair[1])
        for pair in status["due"]
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int | float) for x in pair)
        if pair[0] <= now
    ]
    return min(oks, default=None)


def _read(out_dir: Path) -> dict[str, Any] | None:
    """The status file, or None. It is rewritten in place: a read that met a write half done
    is tried again."""
    for _ in range(3):
        try:
            data = json.loads((out_dir / STATUS_NAME).read_bytes())
        except ValueError:
            continue
        except OSError:
            return None
        return data if isinstance(data, dict) else None
    return None


def _marker_time(marker: Mapping[str, Any]) -> float | None:
    text = marker.get("completed_at")
    if not isinstance(text, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None
