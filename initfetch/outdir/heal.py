"""Noticing rendered files that changed under a watcher: modified, replaced or deleted.

The writer fingerprints every file it puts in place (inode, size, mtime, mode);
a watcher compares OUT_DIR with those fingerprints after every refresh and at
least every refresh interval, and writes back what differs (through the same
atomic writer). A stat per file: cheap enough to run every second.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fingerprint:
    ino: int
    size: int
    mtime_ns: int
    mode: int

    @classmethod
    def of(cls, st: os.stat_result) -> Fingerprint:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


def changed(out_dir: Path, expected: Mapping[str, Fingerprint]) -> list[str]:
    """The names whose file is not the one the writer put there (missing, replaced, modified)."""
    out = []
    for name, fingerprint in expected.items():
        try:
            now = Fingerprint.of(os.stat(out_dir / name, follow_symlinks=False))
        except OSError:
            now = None
        if now != fingerprint:
            out.append(name)
    return sorted(out)
