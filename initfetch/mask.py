"""`exec --mask-output`: the application's stdout and stderr pass through initfetch, every
secret value (and its encoded forms) replaced by `<secret:NAME>`.

How: while the application runs, initfetch's own descriptors 1 and 2 are pipes, and a
thread per pipe copies what arrives to the real stdout or stderr, masked. The
application (and everything it starts, and a restarted one in watch mode) inherits
them, so nothing in the supervisor changes; its stdin, signals and exit code are
untouched. initfetch's own log lines take the same way (they are already scrubbed).

What is masked follows the redactor (initfetch.redact): every value the resolver
registered and every derived value a template made, under the same labels as in log
lines. In watch mode a rotation adds the new values before the application is told,
and the redactor keeps the values they replaced (retire): both stay masked.

Correct across reads: only the end of a read that could be the start of a value is
held back, until the next read or an idle of IDLE seconds (SUSPECT_IDLE when it is
SUSPECT bytes or more of a value: an application may write one in two writes);
everything else goes out at once, so a line appears when the application writes it. Binary output passes
through byte for byte except where it contains a value.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator

from initfetch.needles import Needles, text_forms
from initfetch.redact import Redactor

log = logging.getLogger("initfetch.exec")

IDLE = 0.05  # seconds after which held-back bytes go out anyway
# Held bytes this long are a real start of a value, not a chance match of a letter or two:
# they wait longer for the rest (an application may write a value in two writes).
SUSPECT = 4
SUSPECT_IDLE = 1.0
READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20  # a larger pipe: fewer, larger reads (the kernel may refuse; harmless)
DRAIN = 1.0  # seconds to copy what is left once the application has exited
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), named in fcntl only from Python 3.10 on some builds


class RedactorNeedles:
    """The redactor's current forms as Needles, rebuilt only when the redactor changed."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._lock = threading.Lock()
        self._seen = -1
        self._needles = Needles({})

    def __call__(self) -> Needles:
        # add() and retire() (a rotation under --watch) move the redactor's `changes`
        with self._lock:
            if self.redactor.changes != self._seen:
                self._seen, snapshot = self.redactor.forms()
                self._needles = Needles(text_forms(snapshot))
            return self._needles


class StreamMasker:
    """One stream's state: the bytes held back since the last read."""

    def __init__(self, needles: Callable[[], Needles]) -> None:
        self.needles = needles
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        """What may be written now of the held bytes and `data`, values masked."""
        return self._run(self.held + data, final=False)

    def flush(self) -> bytes:
        """Everything held, values masked (idle, or the end of the stream)."""
        return self._run(self.held, final=True) if self.held else b""

    def _run(self, data: bytes, final: bool) -> bytes:
        text = data.decode("latin-1")
        out, covered = self.needles().mask(text, final)
        self.held = data[covered:]
        return out.encode("latin-1")


class Pump(threading.Thread):
    """Copies one pipe to one descriptor through a StreamMasker until the pipe's end."""

    def __init__(self, source: int, target: int, masker: StreamMasker, name: str) -> None:
        super().__init__(name=f"initfetch-mask-{name}", daemon=True)
        self.source, self.target, self.masker = source, target, masker
        self.deadline: float | None = None  # set once the application is gone

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.source, select.POLLIN)
        try:
            while True:
                held = len(self.masker.held)
                wait = (IDLE if held < SUSPECT else SUSPECT_IDLE) if held else None
                if wait is None and self.deadline is not None:
                    wait = 0.2
                ready = poller.poll(None if wait is None else wait * 1000)
                if not ready:
                    if not self._write(self.masker.flush()):
                        return
                    if self.deadline is not None and time.monotonic() > self.deadline:
                        return
                    continue
                try:
                    data = os.read(self.source, READ_SIZE)
                except InterruptedError:
                    continue
                if not data:
                    self._write(self.masker.flush())
                    return
                if not self._write(self.masker.feed(data)):
                    return
        finally:
            os.close(self.source)  # the application's next write gets EPIPE, as it would have

    def _write(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.target, view)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno != errno.EPIPE:
                    log.debug("masked output: cannot write: %s", e.strerror)
                return False  # the reader went away (`| head`): stop copying
            view = view[n:]
        return True


@contextlib.contextmanager
def masked_output(redactor: Redactor) -> Iterator[None]:
    """Run the body with descriptors 1 and 2 going through maskers to the real stdout/stderr."""
    needles = RedactorNeedles(redactor)
    _flush()
    pumps: list[Pump] = []
    saved: list[int] = []
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            real = os.dup(fd)
        except OSError:  # started with it closed: what comes through goes nowhere, as it would
            real = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        read_end, write_end = os.pipe()
        _grow(write_end)
        os.set_inheritable(read_end, False)
        os.dup2(write_end, fd)  # inheritable: the application gets it as its own fd 1 or 2
        os.close(write_end)
        saved.append(real)
        pumps.append(Pump(read_end, real, StreamMasker(needles), name))
    for pump in pumps:
        pump.start()
    try:
        yield
    finally:
        _flush()
        for fd, real in zip((1, 2), saved, strict=True):
            os.dup2(real, fd)  # our end is closed: the pipe ends when the application's copies do
        deadline = time.monotonic() + DRAIN
        for pump in pumps:
            pump.deadline = deadline
        for pump, real in zip(pumps, saved, strict=True):
            pump.join(max(0.0, deadline - time.monotonic()) + 0.5)
            if not pump.is_alive():
                os.close(real)
            # else: something the application left behind still holds the pipe; the thread
            # (a daemon) keeps copying until initfetch exits


def _grow(fd: int) -> None:
    import fcntl

    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # AttributeError: None, fd closed at start
            pass
