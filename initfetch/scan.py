"""`initfetch scan`: which files under PATH contain a secret value, or one of its encoded forms.

What is searched for: the values the manifest resolves to (`scan`), or the
values of a render already in OUT_DIR (`scan --from OUT_DIR`), each in every
form of initfetch.needles (raw bytes, JSON escape, base64 with and without
padding, URL encoding, each line of a multi-line value). Forms shorter than
`min_length` bytes are left out: a 4-character value would be found everywhere.

How: every regular file under each PATH, one Aho-Corasick pass over its bytes,
read in chunks that overlap by the longest form minus one byte, so a value
split between two chunks is still found. Version-control directories are
skipped, symbolic links are not followed (a PATH given on the command line is),
and files larger than `max_file_size` are skipped and counted. Binary files are
scanned as bytes like any other (a value in a database or a core dump is a
leak too) and marked as binary in the report.

A report line is `path:line: NAME` (or `NAME (base64)`, ...): never a value.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from initfetch.errors import BadInput, Problem
from initfetch.needles import Needles, value_forms

CHUNK = 4 << 20
SNIFF = 8192  # a NUL byte in the first SNIFF bytes: a binary file
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn"})
DEFAULT_MIN_LENGTH = 8
DEFAULT_MAX_FILE_SIZE = 100 << 20


@dataclass(frozen=True)
class Options:
    min_length: int = DEFAULT_MIN_LENGTH
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    exclude: tuple[str, ...] = ()  # glob patterns on a name or a path relative to its PATH
    skip: frozenset[str] = frozenset()  # absolute directories never entered (OUT_DIR)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    label: str
    binary: bool = False


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


# --- what to look for ------------------------------------------------------------------------


def from_values(values: Mapping[str, Any], min_length: int) -> tuple[Needles, list[str]]:
    """Needles for resolved values; and the names of secrets with a value (or a leaf of a
    document) shorter than `min_length`, which are not searched for."""
    forms: dict[bytes, str] = {}
    short: set[str] = set()
    for name, value in values.items():
        for leaf in _leaves_of(value):
            if len(leaf) < min_length:
                short.add(name)
                continue
            for form, kind in value_forms(leaf):
                if len(form) >= min_length:
                    forms.setdefault(form, name if kind == "value" else f"{name} ({kind})")
    return Needles(forms), sorted(short)


def _leaves_of(value: Any) -> Iterator[str | bytes]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves_of(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves_of(v)
    elif isinstance(value, str | bytes):
        yield value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


def out_dir_values(out_dir: Path, max_size: int) -> dict[str, Any]:
    """The values a render left in OUT_DIR: each file the marker lists (its whole content),
    and for JSON files their string leaves, for KEY=VALUE files their values.

    Labels name the file (and the JSON pointer or key) the value was in. Raises BadInput
    when OUT_DIR holds no complete render.
    """
    from initfetch.outdir.names import MARKER_NAME

    marker_path = out_dir / MARKER_NAME
    try:
        marker = json.loads(_read(marker_path, 1 << 20))
        files = [f for f in marker.get("files", []) if isinstance(f, str)]
    except (OSError, ValueError, AttributeError):
        raise BadInput(
            Problem(str(out_dir), "no complete render here (its completion marker is missing or unreadable)")
        ) from None
    values: dict[str, Any] = {}
    for dest in files:
        try:
            data = _read(out_dir / dest, max_size)
        except OSError:
            continue  # removed since, or not a regular file: nothing to take from it
        values[dest] = data.removesuffix(b"\n")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        values.update(_leaves(dest, text))
    return values


def _leaves(dest: str, text: str) -> dict[str, str]:
    """String leaves of a JSON document, or the values of KEY=VALUE lines."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    out: dict[str, str] = {}
    if isinstance(doc, dict | list):
        stack: list[tuple[str, Any]] = [("", doc)]
        while stack:
            pointer, node = stack.pop()
            if isinstance(node, dict):
                stack += [(f"{pointer}/{_escape(str(k))}", v) for k, v in node.items()]
            elif isinstance(node, list):
                stack += [(f"{pointer}/{i}", v) for i, v in enumerate(node)]
            elif isinstance(node, str):
                out[f"{dest}#{pointer}"] = node
        return out
    for line in text.splitlines():
        key, eq, value = line.strip().partition("=")
        key = key.removeprefix("export ").strip()
        if eq and key.isidentifier() and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[f"{dest}#{key}"] = value
    return out


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def from_out_dir(out_dir: Path, opts: Options) -> tuple[Needles, dict[str, Any]]:
    """Needles for the values of a render in OUT_DIR (whole files without their per-line forms:
    a template's lines are mostly not secret), and those values (for the redactor)."""
    values = out_dir_values(out_dir, opts.max_file_size)
    forms: dict[bytes, str] = {}
    for label, value in values.items():
        for form, kind in value_forms(value, lines=False):
            if len(form) >= opts.min_length:
                forms.setdefault(form, label if kind == "value" else f"{label} ({kind})")
    return Needles(forms), values


# --- where to look ---------------------------------------------------------------------------


def scan(paths: Sequence[Path], needles: Needles, opts: Options) -> Report:
    """Every file under `paths`, in a stable order. Raises BadInput for a PATH that does not exist."""
    missing = [str(p) for p in paths if not os.path.exists(p)]
    if missing:
        raise BadInput([Problem(p, "no such file or directory to scan") for p in missing])
    report = Report()
    started = time.monotonic()
    for root in paths:
        for path in _files(root, opts, report):
            _scan_file(path, needles, opts, report)
    report.seconds = time.monotonic() - started
    report.findings.sort(key=lambda f: (f.path, f.line, f.label))
    return report


def _files(root: Path, opts: Options, report: Report) -> Iterator[str]:
    """Regular files under root (root itself if it is one), depth first, names sorted."""
    import fnmatch

    if not os.path.isdir(root):
        yield str(root)
        return
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError:
            report.skip("unreadable directory")
            continue
        for entry in entries:
            rel = os.path.relpath(entry.path, root)
            if any(fnmatch.fnmatch(entry.name, pat) or fnmatch.fnmatch(rel, pat) for pat in opts.exclude):
                report.skip("excluded")
            elif entry.is_symlink():
                report.skip("symbolic link")
            elif entry.is_dir(follow_symlinks=False):
                if entry.name in SKIPPED_DIRS:
                    report.skip("version-control directory")
                elif os.path.abspath(entry.path) in opts.skip:
                    report.skip("the output directory scanned from")
                else:
                    stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                yield entry.path
            else:
                report.skip("not a regular file")


def _scan_file(path: str, needles: Needles, opts: Options, report: Report) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        report.skip("unreadable file")
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            report.skip("not a regular file")
            return
        if st.st_size > opts.max_file_size:
            report.skip("larger than the size limit")
            return
        report.files += 1
        report.bytes += _search(fd, path, needles, report)
    except OSError:
        report.skip("unreadable file")
    finally:
        os.close(fd)


def _search(fd: int, path: str, needles: Needles, report: Report) -> int:
    """One pass over the file in overlapping chunks; returns the bytes read."""
    keep = max(needles.max_len - 1, 0)
    carry, lines_before, total, binary = "", 0, 0, None
    seen: set[tuple[int, str]] = set()
    while True:
        data = os.read(fd, CHUNK)
        total += len(data)
        if binary is None:
            binary = b"\0" in data[:SNIFF]
        text = carry + data.decode("latin-1")
        # Hits starting in the last `keep` characters may be cut off: the next chunk finds them.
        cut = len(text) if not data else max(len(text) - keep, 0)
        hits = sorted(needles.hits(text, before=cut), key=lambda h: h.start) if needles else []
        pos, line = 0, lines_before + 1
        for hit in hits:
            line += text.count("\n", pos, hit.start)
            pos = hit.start
            if (line, hit.label) not in seen:
                seen.add((line, hit.label))
                report.findings.append(Finding(path, line, hit.label, binary))
        lines_before += text.count("\n", 0, cut)
        carry = text[cut:]
        if not data:
            return total


def _read(path: Path, max_size: int) -> bytes:
    """A regular file's bytes (no symbolic link followed), at most `max_size`. Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_size:
            raise OSError(f"{path}: not a regular file within the size limit")
        chunks, size = [], 0
        while size <= max_size and (chunk := os.read(fd, 1 << 20)):  # it may grow meanwhile
            chunks.append(chunk)
            size += len(chunk)
        if size > max_size:
            raise OSError(f"{path}: grew past the size limit while read")
        return b"".join(chunks)
    finally:
        os.close(fd)
