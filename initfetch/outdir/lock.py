"""One writer per OUT_DIR.

A watcher holds an exclusive lock on `OUT_DIR/.initfetch-lock` for its whole
life; a one-shot render or exec holds it while it writes. A second writer is
refused at once (exit 5) with a line naming the process that holds it. The lock
is flock(2): the kernel drops it when its process dies, so a killed watcher
never leaves a stale lock behind (its file stays, unlocked; a clean exit removes it).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from initfetch.errors import Problem, WriteFailed
from initfetch.outdir.names import LOCK_NAME

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OutDirLock:
    def __init__(self, out_dir: Path, holder: str) -> None:
        self.out_dir = out_dir
        self.holder = holder  # "render --watch", ...: what another writer is told
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (once), or raise WriteFailed naming who has it."""
        if self._fd is not None:
            return
        while True:
            fd = self._open()
            try:
                self._lock(fd)
            except WriteFailed:
                os.close(fd)
                raise
            if self._still_there(fd):
                break
            os.close(fd)  # its holder removed it as we locked it: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {self.holder}\n".encode(), 0)
        self._fd = fd

    def check(self) -> None:
        """Refuse early (before any backend is asked) when someone holds the lock; creates nothing."""
        try:
            fd = os.open(self.out_dir / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return  # no lock file, or no directory yet: nobody writes there
        try:
            self._lock(fd)
        finally:
            os.close(fd)  # drops the lock taken to test it

    def _lock(self, fd: int) -> None:
        """flock `fd` at once, or raise WriteFailed naming the holder (the caller closes `fd`)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise WriteFailed(
                    Problem(str(self.out_dir), f"cannot lock the output directory: {e.strerror}")
                ) from None
            other = _read(fd)
            raise WriteFailed(
                Problem(
                    str(self.out_dir),
                    f"another initfetch ({other or 'a process'}) writes to this output directory; "
                    "stop it first, or write elsewhere with -o",
                )
            ) from None

    def _still_there(self, fd: int) -> bool:
        """Whether the file we locked is still the lock file (its holder removes it on release)."""
        try:
            return os.fstat(fd).st_ino == os.stat(self.out_dir / LOCK_NAME, follow_symlinks=False).st_ino
        except OSError:
            return False

    def _open(self) -> int:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            root = os.open(self.out_dir, _DIR_FLAGS)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise WriteFailed(
                Problem(str(self.out_dir), f"cannot open the output directory: {reason}")
            ) from None
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            return os.open(LOCK_NAME, flags, 0o644, dir_fd=root)
        except OSError as e:
            raise WriteFailed(
                Problem(str(self.out_dir / LOCK_NAME), f"cannot open the lock file: {e.strerror}")
            ) from None
        finally:
            os.close(root)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file (while still holding the lock: a writer that opened it meanwhile
        sees it gone and retries), then drop the lock."""
        if self._fd is not None:
            try:
                os.unlink(self.out_dir / LOCK_NAME)
            except OSError:
                pass
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _read(fd: int) -> str:
    """Who holds the lock, as it wrote it ("pid 12, render --watch"); short, one line."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace")
    except OSError:
        return ""
    line = text.splitlines()[0] if text else ""
    return line if line.isprintable() else ""
