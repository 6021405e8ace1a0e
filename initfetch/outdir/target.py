"""What must hold of OUT_DIR before anything is written, checked before any backend is asked.

It must be memory backed (tmpfs/ramfs) unless disk is allowed; every dest's
owner and group must exist; OUT_DIR and a dest together must fit in PATH_MAX
(written relative to directory descriptors, a longer path would work, and then
nothing else, healthcheck or the application, could open it).
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initfetch.errors import Problem, WriteFailed, shown
from initfetch.outdir.names import PATH_MAX

if TYPE_CHECKING:
    from initfetch.manifest import Output

MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def filesystem_type(path: Path) -> str:
    """The filesystem type of the mount holding `path` (from /proc/self/mountinfo)."""
    target = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mount_point = _unescape(left.split()[4])
                if (target == mount_point or target.startswith(mount_point.rstrip("/") + "/")) and len(
                    mount_point
                ) >= len(best):
                    best, fstype = mount_point, right.split()[0]
    except OSError:
        return "unknown"
    return fstype


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_target(out_dir: Path, allow_disk: bool, outputs: Sequence[Output] = ()) -> None:
    """Everything about the target that can be known before any backend is asked."""
    existing = _nearest_existing(out_dir)
    fstype = filesystem_type(existing)
    if fstype not in MEMORY_FILESYSTEMS and not allow_disk:
        # A missing directory would be created on its parent's filesystem: say both.
        where = (
            f"is on a '{fstype}' filesystem"
            if existing == out_dir.absolute()
            else f"does not exist, and would be created on {existing}, a '{fstype}' filesystem"
        )
        raise WriteFailed(
            Problem(
                str(out_dir),
                f"{where}, not tmpfs/ramfs; refusing to write secrets to disk (mount a tmpfs there, "
                "choose one with -o (e.g. /dev/shm/NAME), or pass --allow-disk / INITFETCH_ALLOW_DISK=1)",
            )
        )
    problems: list[Problem] = []
    base = len(os.fsencode(os.path.abspath(out_dir)))
    for out in outputs:
        try:
            owner_ids(out)
        except WriteFailed as e:
            problems.extend(e.problems)
        # Written relative to directory descriptors, a longer path would work, and then
        # nothing else (healthcheck, the application) could open it.
        length = base + 1 + len(out.dest.encode("utf-8", "surrogateescape"))
        if length >= PATH_MAX:
            problems.append(
                Problem(
                    out.loc,
                    f"the output directory and this dest make a {length}-byte path; "
                    f"the limit is {PATH_MAX - 1} (PATH_MAX)",
                )
            )
    if problems:
        raise WriteFailed(problems)


def owner_ids(out: Output) -> tuple[int, int]:
    def lookup(value: int | str | None, by_name: Any, kind: str) -> int:
        if value is None:
            return -1
        if isinstance(value, int) or value.isdigit():
            return int(value)
        try:
            return int(by_name(value)[2])
        except KeyError:
            raise WriteFailed(Problem(out.loc, f"unknown {kind} {shown(value)} for this dest")) from None

    return lookup(out.owner, pwd.getpwnam, "user"), lookup(out.group, grp.getgrnam, "group")
