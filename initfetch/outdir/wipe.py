"""Wiping OUT_DIR on exit (`--wipe-on-exit`): the rendered files, the marker and the status."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from initfetch.outdir.names import MARKER_NAME, STATUS_NAME

log = logging.getLogger("initfetch.watch")


def wipe_files(out_dir: Path, files: Iterable[str]) -> None:
    """Remove the marker, the status file and the rendered files, never through a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    for dest in [MARKER_NAME, STATUS_NAME, *files]:
        *dirs, name = dest.split("/")
        fds: list[int] = []
        try:
            fds.append(os.open(out_dir, flags))
            for part in dirs:
                fds.append(os.open(part, flags, dir_fd=fds[-1]))
            os.unlink(name, dir_fd=fds[-1])
        except OSError:
            pass
        finally:
            for fd in fds:
                os.close(fd)
    log.info("removed the rendered files from %s", out_dir)
