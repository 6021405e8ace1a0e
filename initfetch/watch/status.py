"""The watcher's status file: what `healthcheck` needs to judge a watched render.

`OUT_DIR/.initfetch-watch.json` holds times and names, never values:

    {"v": 2, "due": [[DUE, OK], ...], "expires": T, "expired": [...], "failing": [...]}

- `due`: for what is scheduled, when it falls due and when it last succeeded
  (wall-clock seconds). healthcheck computes staleness itself: for everything
  due by now, the time since its last success. So a refresh that is still
  retrying, a watcher that hangs or died, and one that cannot write any more
  all show as stale once --max-stale has passed, without the watcher having to
  say so. Only the pairs that matter are kept (none due earlier and succeeded
  earlier than another), so the file stays small.
- `expires`: when the first lease ends; past it, unhealthy at once.
- `expired` / `failing`: names and references, for healthcheck's message.

The file is made once at a fixed size and then rewritten in place through a
descriptor held open: rewriting needs no new space (a full tmpfs) and no
permission on the directory, and a remount read-only is refused by the kernel
while it is open for writing. It is rewritten only when its content changes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from initfetch.outdir import writer
from initfetch.outdir.names import STATUS_NAME

log = logging.getLogger("initfetch.watch")

STATUS_SIZE = 4096  # bytes; the content is padded with spaces to this size
MAX_PAIRS = 48


def frontier(pairs: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (due, last ok) pairs that decide staleness: a pair due later and confirmed later than
    another never makes the render staler than it. Beyond MAX_PAIRS the last ones are merged
    into one that is at least as stale (earliest due, earliest success)."""
    out: list[tuple[float, float]] = []
    for due, ok in sorted(pairs):
        if not out or ok < out[-1][1]:
            out.append((due, ok))
    if len(out) > MAX_PAIRS:
        rest = out[MAX_PAIRS - 1 :]
        out = [*out[: MAX_PAIRS - 1], (min(d for d, _ in rest), min(o for _, o in rest))]
    return [(round(d, 3), round(o, 3)) for d, o in out]


class StatusFile:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._fd: int | None = None
        self._written = b""
        self._failed: str | None = None  # the last write error, logged once

    def update(
        self,
        due: Iterable[tuple[float, float]],
        expires: float | None,
        expired: Sequence[str],
        failing: Sequence[str],
    ) -> None:
        """Rewrite the status if it changed. Times are wall-clock seconds."""
        names, pairs = sorted(failing), frontier(due)
        while True:
            body = {
                "v": 2,
                "due": pairs,
                "expires": round(expires, 3) if expires is not None else None,
                "expired": sorted(expired),
                "failing": names,
            }
            data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            if len(data) < STATUS_SIZE or not names:
                break
            names = names[: len(names) // 2]  # they are for healthcheck's message only
        if data == self._written:
            return
        try:
            os.pwrite(self._open(), data.ljust(STATUS_SIZE - 1) + b"\n", 0)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            if reason != self._failed:
                log.warning("cannot write the watch status file in %s: %s", self.out_dir, reason)
                self._failed = reason
            return
        self._written, self._failed = data, None

    def _open(self) -> int:
        """The status file's descriptor; made (again) when missing or replaced."""
        if self._fd is not None:
            try:
                if (
                    os.fstat(self._fd).st_ino
                    == os.stat(self.out_dir / STATUS_NAME, follow_symlinks=False).st_ino
                ):
                    return self._fd
            except OSError:
                pass
            self.close()
        self._fd = writer.create_held(self.out_dir, STATUS_NAME, b" " * (STATUS_SIZE - 1) + b"\n", 0o444)
        self._written = b""
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def remove(out_dir: Path) -> None:
    """Drop an earlier watcher's status: a render that is not watched must not be judged by it."""
    writer.remove(out_dir, STATUS_NAME)
