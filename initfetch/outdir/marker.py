"""The completion marker: written last by every render, so its presence means a complete
render is in place. It says which reference resolved to which version; never a value."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


def marker_body(resolved: Mapping[str, Any], files: list[str], env: list[str]) -> dict[str, Any]:
    """The completion marker: which reference resolved to which version; no values."""
    return {
        "initfetch": 1,
        "completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": sorted(files),
        "env": sorted(env),
        "secrets": dict(resolved),
    }
