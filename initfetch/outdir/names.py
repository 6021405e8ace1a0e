"""The names of initfetch's own files in OUT_DIR, and the limits on any name there.

Every dest the manifest names is checked against `reserved` (manifest loading),
so a dest can never be mistaken for one of these files, and the writer's sweep
of stale temp files never removes a rendered file.
"""

from __future__ import annotations

import re

MARKER_NAME = ".initfetch-ready.json"  # the completion marker, written last
STATUS_NAME = ".initfetch-watch.json"  # a watcher's status (healthcheck --max-stale)
LOCK_NAME = ".initfetch-lock"  # one writer per OUT_DIR (lock.py)
# The writer's temp files: `.initfetch-tmp-` and 24 hex digits, beside their target. Fixed
# length and not derived from the dest, so any name up to NAME_MAX can be written.
TEMP_PREFIX = ".initfetch-tmp-"
TEMP_RE = re.compile(r"^\.initfetch-tmp-[0-9a-f]{24}$")
# What versions before 0.x named them (`.NAME.initfetch-` and 12 hex digits); still swept.
LEGACY_TEMP_RE = re.compile(r"^\..+\.initfetch-[0-9a-f]{12}$")
NAME_MAX = 255  # bytes in one path component (Linux)
PATH_MAX = 4096  # bytes in a path, with its terminating NUL


def reserved(part: str) -> bool:
    """Whether one component of a dest is a name initfetch keeps for its own files."""
    return part.startswith(".initfetch") or bool(LEGACY_TEMP_RE.match(part))
