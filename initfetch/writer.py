"""The writer: puts rendered bytes into OUT_DIR safely, or not at all.

- Refuses a directory that is not memory backed (tmpfs/ramfs) unless allowed.
- The completion marker is removed first and written last, so `healthcheck`
  never sees a mix of old and new files as complete.
- Each file is written to a temp file in its own directory, fsynced, given its
  mode/owner, then renamed over the target: readers see the old or the new
  file, never half of one. Every path step is opened relative to a directory
  descriptor with O_NOFOLLOW, so a planted symlink cannot redirect a write.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import secrets as _random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from initfetch.errors import NotReady, Problem, WriteFailed
from initfetch.manifest import MARKER_NAME, Output

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


def check_target(out_dir: Path, allow_disk: bool) -> None:
    fstype = filesystem_type(_nearest_existing(out_dir))
    if fstype not in MEMORY_FILESYSTEMS and not allow_disk:
        raise WriteFailed(
            Problem(
                str(out_dir),
                f"is on a '{fstype}' filesystem, not tmpfs/ramfs; refusing to write secrets to disk "
                "(mount a tmpfs there, or pass --allow-disk / INITFETCH_ALLOW_DISK=1 to write anyway)",
            )
        )


def _owner_ids(out: Output) -> tuple[int, int]:
    def lookup(value: int | str | None, by_name: Any, kind: str) -> int:
        if value is None:
            return -1
        if isinstance(value, int) or value.isdigit():
            return int(value)
        try:
            return int(by_name(value)[2])
        except KeyError:
            raise WriteFailed(Problem(out.loc, f"unknown {kind} '{value}' for {out.dest}")) from None

    return lookup(out.owner, pwd.getpwnam, "user"), lookup(out.group, grp.getgrnam, "group")


def write_all(
    out_dir: Path,
    files: Mapping[str, bytes],
    outputs: list[Output],
    marker: Mapping[str, Any],
    *,
    allow_disk: bool,
) -> None:
    """Write every rendered file atomically, then the marker. Raises WriteFailed."""
    check_target(out_dir, allow_disk)
    by_dest = {o.dest: o for o in outputs}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        root = os.open(out_dir, _DIR_FLAGS)
    except OSError as e:
        raise WriteFailed(Problem(str(out_dir), f"cannot open the output directory: {e.strerror}")) from None
    try:
        _unlink(root, MARKER_NAME)
        for dest, data in files.items():
            out = by_dest[dest]
            uid, gid = _owner_ids(out)
            try:
                _write_one(root, dest, data, out.mode, uid, gid)
            except OSError as e:
                reason = e.strerror or type(e).__name__
                if e.errno == errno.ELOOP:
                    reason = "a path component is a symlink, which is never followed"
                raise WriteFailed(Problem(str(out_dir / dest), f"cannot write: {reason}")) from None
        body = json.dumps(marker, indent=2, sort_keys=True).encode() + b"\n"
        try:
            _write_one(root, MARKER_NAME, body, 0o444, -1, -1)
            os.fsync(root)
        except OSError as e:
            raise WriteFailed(Problem(str(out_dir / MARKER_NAME), f"cannot write: {e.strerror}")) from None
    finally:
        os.close(root)


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise WriteFailed(Problem(name, f"cannot remove the old completion marker: {e.strerror}")) from None


def _write_one(root: int, dest: str, data: bytes, mode: int, uid: int, gid: int) -> None:
    *dirs, name = dest.split("/")
    fd = os.dup(root)
    try:
        for part in dirs:  # walk (and create) subdirectories without following links
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
        tmp = f".{name}.initfetch-{_random.token_hex(6)}"
        tfd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(tfd, view) :]
            if uid != -1 or gid != -1:
                os.fchown(tfd, uid, gid)
            os.fchmod(tfd, mode)  # after chown: chown may clear mode bits
            os.fsync(tfd)
        except BaseException:
            os.close(tfd)
            os.unlink(tmp, dir_fd=fd)
            raise
        os.close(tfd)
        try:
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)  # replaces a link, never follows it
        except BaseException:
            os.unlink(tmp, dir_fd=fd)
            raise
        os.fsync(fd)
    finally:
        os.close(fd)


def marker_body(resolved: Mapping[str, Any], files: list[str], env: list[str]) -> dict[str, Any]:
    """The completion marker: which reference resolved to which version; no values."""
    return {
        "initfetch": 1,
        "completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": sorted(files),
        "env": sorted(env),
        "secrets": dict(resolved),
    }


def healthcheck(out_dir: Path) -> dict[str, Any]:
    """Raise NotReady unless a complete render is in place; return the marker."""
    path = out_dir / MARKER_NAME
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotReady(Problem(str(out_dir), "no completed render yet")) from None
    except (OSError, ValueError) as e:
        raise NotReady(Problem(str(path), f"unreadable completion marker: {type(e).__name__}")) from None
    missing = [f for f in marker.get("files", []) if not (out_dir / f).is_file()]
    if missing:
        raise NotReady(Problem(str(out_dir), f"rendered files are missing: {', '.join(missing)}"))
    return dict(marker)
