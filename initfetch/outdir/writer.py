"""The writer: puts rendered bytes into OUT_DIR safely, or not at all.

- Refuses a directory that is not memory backed (tmpfs/ramfs) unless allowed
  (target.py).
- Every file is first staged complete (written, owned, moded, fsynced) as a
  temp file beside its target; only then are they all renamed into place, so
  a failure while staging replaces nothing, and a reader sees the old or the
  new file, never half of one.
- The completion marker is removed before the first rename and written last,
  so `healthcheck` never reports a mix of old and new files as complete.
- Every path step is opened relative to a directory descriptor with
  O_NOFOLLOW, so a planted symlink cannot redirect a write.
- Temp files have a fixed-length name not derived from the dest
  (`.initfetch-tmp-` + 24 hex digits), so any name up to NAME_MAX can be written.
  Temp files a killed run left behind hold full values: they are swept, but only
  after the new render is in place, and only regular files matching that exact
  pattern and owned by our effective uid (the manifest cannot name such a dest).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initfetch.errors import Problem, WriteFailed
from initfetch.outdir.heal import Fingerprint
from initfetch.outdir.names import LEGACY_TEMP_RE, MARKER_NAME, TEMP_PREFIX, TEMP_RE
from initfetch.outdir.target import check_target, owner_ids

if TYPE_CHECKING:
    from initfetch.manifest import Output

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Staged:
    """A complete temp file next to its target, waiting for its rename."""

    dir_fd: int
    tmp: str
    name: str
    dest: str = ""
    fingerprint: Fingerprint | None = None  # the rename keeps it: same inode, mtime, mode


def write_all(
    out_dir: Path,
    files: Mapping[str, bytes],
    outputs: list[Output],
    marker: Mapping[str, Any],
    *,
    allow_disk: bool,
) -> dict[str, Fingerprint]:
    """Write every rendered file, then the marker; return their fingerprints. Raises WriteFailed.

    Two phases: every file is first staged complete (written, owned, moded,
    fsynced) as a temp file beside its target; only when all are staged are they
    renamed into place. A failure while staging (disk full, a symlinked
    directory, a permission) removes the temp files and replaces nothing.
    """
    check_target(out_dir, allow_disk, outputs)
    root = _open_root(out_dir)
    staged: list[_Staged] = []
    try:
        by_dest = {o.dest: o for o in outputs}
        for dest, data in files.items():
            out = by_dest[dest]
            try:
                staged.append(_stage(root, dest, data, out.mode, owner_ids(out)))
            except OSError as e:
                raise WriteFailed(Problem(str(out_dir / dest), f"cannot write: {_reason(e)}")) from None
        _unlink(root, MARKER_NAME)  # from here on, healthcheck says "not ready" until the marker is back
        try:
            _commit(root, staged, json.dumps(marker, indent=2, sort_keys=True).encode() + b"\n")
        except OSError as e:
            raise WriteFailed(
                Problem(str(out_dir), f"cannot put the rendered files in place: {_reason(e)}")
            ) from None
        # Only now, with the new render committed: a failing render must not delete anything.
        for dir_fd, names in _by_directory(staged).items():
            _sweep(dir_fd, names)
        return {item.dest: item.fingerprint for item in staged if item.fingerprint is not None}
    finally:
        _close(root, staged)


def _open_root(out_dir: Path) -> int:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return os.open(out_dir, _DIR_FLAGS)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            reason = "it is a symlink or not a directory (a symlinked output directory is never followed)"
        raise WriteFailed(Problem(str(out_dir), f"cannot open the output directory: {reason}")) from None


def _commit(root: int, staged: list[_Staged], marker: bytes) -> None:
    """Rename every staged file into place, then write the marker last."""
    for item in staged:
        os.rename(item.tmp, item.name, src_dir_fd=item.dir_fd, dst_dir_fd=item.dir_fd)
        os.fsync(item.dir_fd)
        item.tmp = ""
    marker_file = _stage(root, MARKER_NAME, marker, 0o444, (-1, -1))
    staged.append(marker_file)
    os.rename(marker_file.tmp, MARKER_NAME, src_dir_fd=root, dst_dir_fd=root)
    marker_file.tmp = ""
    os.fsync(root)


def _by_directory(staged: list[_Staged]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for item in staged:
        out.setdefault(item.dir_fd, set()).add(item.name)
    return out


def _close(root: int, staged: list[_Staged]) -> None:
    """Remove what was staged and not renamed (a failure), close every directory."""
    for item in staged:
        if item.tmp:
            try:
                os.unlink(item.tmp, dir_fd=item.dir_fd)
            except OSError:
                pass
        if item.dir_fd != root:
            os.close(item.dir_fd)
    os.close(root)


def _reason(e: OSError) -> str:
    if e.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW|O_DIRECTORY on a link gives either
        return "a path component is a symlink (never followed) or not a directory"
    return e.strerror or type(e).__name__


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise WriteFailed(Problem(name, f"cannot remove the old completion marker: {e.strerror}")) from None


def _stage(root: int, dest: str, data: bytes, mode: int, owner: tuple[int, int]) -> _Staged:
    """Create `dest`'s directories (never through a link) and a complete temp file beside it."""
    *dirs, name = dest.split("/")
    fd = root
    try:
        for part in dirs:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            if fd != root:
                os.close(fd)
            fd = nxt
        _check_replaceable(fd, name)
        tmp = TEMP_PREFIX + os.urandom(12).hex()  # (not `secrets`: it costs 6 ms to import)
        tfd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(tfd, view) :]
            if owner != (-1, -1):
                os.fchown(tfd, *owner)
            os.fchmod(tfd, mode)  # after chown: chown may clear mode bits
            os.fsync(tfd)
            fingerprint = Fingerprint.of(os.fstat(tfd))
        except BaseException:
            os.unlink(tmp, dir_fd=fd)
            raise
        finally:
            os.close(tfd)
    except BaseException:
        if fd != root:
            os.close(fd)
        raise
    return _Staged(fd, tmp, name, dest, fingerprint)


def _check_replaceable(dir_fd: int, name: str) -> None:
    """A rename cannot replace a directory: find out while nothing has been replaced yet."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "a directory is in the way")


def _sweep(dir_fd: int, names: set[str]) -> None:
    """Remove temp files a killed run left behind (they hold full values), if provably ours.

    Ours: a regular file, owned by our effective uid, named like our temp files
    (or like those of earlier versions for a name written here). Best effort:
    the render is already complete.
    """
    legacy = {f".{n}.initfetch-" for n in names}
    euid = os.geteuid()
    try:
        entries = os.listdir(dir_fd)
    except OSError:
        return
    for entry in entries:
        if not (TEMP_RE.match(entry) or (LEGACY_TEMP_RE.match(entry) and entry[:-12] in legacy)):
            continue
        try:
            st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == euid:
                os.unlink(entry, dir_fd=dir_fd)
        except OSError:
            pass


def create_held(out_dir: Path, name: str, data: bytes, mode: int) -> int:
    """Put one of initfetch's own files in place atomically (complete temp file, fsync, rename,
    never through a symlink) and return a descriptor open for rewriting it in place (the
    watch status: rewriting an existing file needs no new space and no directory permission)."""
    root = os.open(out_dir, _DIR_FLAGS)
    tmp = TEMP_PREFIX + os.urandom(12).hex()
    try:
        fd = os.open(
            tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=root
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # the descriptor stays writable
            os.fsync(fd)
            os.rename(tmp, name, src_dir_fd=root, dst_dir_fd=root)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp, dir_fd=root)
            except OSError:
                pass
            raise
        return fd
    finally:
        os.close(root)


def remove(out_dir: Path, name: str) -> None:
    """Remove one of initfetch's own files, if it is there."""
    try:
        os.unlink(out_dir / name)
    except OSError:
        pass
