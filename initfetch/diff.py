"""`diff`: what a render would change in OUT_DIR, values masked.

The new side is this run's render, shown as a masked preview shows it (the shadow
render: `<secret:NAME>` placeholders where values go, initfetch.preview). The old
side is whatever OUT_DIR holds now, and it may hold OLD values that this run never
resolved, so no scrubbing could mask them: no byte of an old file is ever printed.

- Which files differ is decided on the real bytes, old against new, in memory.
- A changed text file is diffed line by line on the real text; what is printed comes
  from the masked render only: context and added lines are the masked new lines, and
  an old line is shown as the masked new line it corresponds to when it matches that
  line's literal text around the placeholders (the same template line, another value),
  else as a fixed note that says it differs and is not shown.
- Versions, old -> new, come from the completion marker (what the last render
  resolved) and this run's resolution; neither holds a value.

Nothing is written and nothing is locked; the leases the reads create are revoked
when the pipeline closes (Mode.PREVIEW).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from initfetch.outdir.names import MARKER_NAME
from initfetch.resolve.results import Resolved
from initfetch.templating.render import Rendered

CONTEXT = 3  # lines of context around each change, as `diff -u`
MAX_OLD_FILE = 64 * 1024 * 1024  # an OUT_DIR file larger than this differs, and is never read
MAX_MATCHED_LINE = 4096  # a longer old line is not matched against a masked one: only noted
MAX_DIFF_LINES = 20_000  # a longer file is reported as differing, not diffed (difflib is quadratic)
MAX_PLACEHOLDERS = 8  # a masked line with more is not matched either (the regex would backtrack)
MAX_CANDIDATES = 64  # new lines an old one is matched against, beyond the one it pairs with


@dataclass(frozen=True)
class Inputs:
    """What `compare` needs: this run's render, real and masked, where it came from, and
    the placeholder pattern of the masked render (initfetch.preview.placeholders)."""

    real: Rendered
    masked: Rendered
    info: Mapping[str, Resolved]
    placeholders: re.Pattern[str]


@dataclass
class Report:
    files: dict[str, str] = field(default_factory=dict)  # dest -> added | changed | removed
    versions: list[str] = field(default_factory=list)  # one line per secret whose version changed
    env: list[str] = field(default_factory=list)  # one line per variable added or removed
    hunks: dict[str, list[str]] = field(default_factory=dict)  # dest -> masked unified diff lines
    marker: bool = True  # OUT_DIR holds a completion marker

    @property
    def differs(self) -> bool:
        return bool(self.files or self.versions or self.env)


def read_marker(out_dir: Path) -> dict[str, Any] | None:
    """The completion marker in OUT_DIR, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads((out_dir / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Unreadable(Exception):
    """A file OUT_DIR holds that this user may not read (the render ran as another user)."""


def read_current(out_dir: Path, name: str) -> bytes | None:
    """What OUT_DIR holds under `name` now: a regular file's bytes, else None. Never follows a
    symlink (the writer never makes one; a file that is one is not a render's). Raises
    Unreadable for a file that is there but may not be read."""
    try:
        fd = os.open(out_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except PermissionError:
        raise Unreadable(name) from None
    except (OSError, ValueError):
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        if info.st_size > MAX_OLD_FILE:
            return b"\0"  # larger than any render may be: it differs, and binary, never shown
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def compare(out_dir: Path, new: Inputs) -> Report:
    """What writing `new.real` to OUT_DIR would change (files, versions, env names), with the
    masked unified diff of each changed text file."""
    marker = read_marker(out_dir)
    report = Report(marker=marker is not None)
    old_files = _names(marker, "files")
    for dest, data in new.real.files.items():
        try:
            current = read_current(out_dir, dest)
        except Unreadable:
            report.files[dest] = "unreadable"  # counted as a difference: it cannot be compared
            continue
        if current is None:
            report.files[dest] = "added"
            report.hunks[dest] = _added(new.masked.files.get(dest, b""))
        elif current != data:
            report.files[dest] = "changed"
            report.hunks[dest] = _changed(current, data, new.masked.files.get(dest, b""), new)
    for dest in sorted(old_files - set(new.real.files)):
        if os.path.lexists(out_dir / dest):
            report.files[dest] = "removed"
    report.versions = list(_versions(marker, new.info))
    old_env = _names(marker, "env")
    if marker is not None:
        report.env = [f"added    {n}" for n in sorted(set(new.real.env) - old_env)]
        report.env += [f"removed  {n}" for n in sorted(old_env - set(new.real.env))]
    return report


def _names(marker: Mapping[str, Any] | None, key: str) -> set[str]:
    items = marker.get(key) if marker is not None else None
    return {x for x in items if isinstance(x, str)} if isinstance(items, list) else set()


def _versions(marker: Mapping[str, Any] | None, info: Mapping[str, Resolved]) -> Iterator[str]:
    """One line per secret whose version (or reference) differs from what the marker recorded."""
    old = marker.get("secrets") if marker is not None else None
    for name, r in info.items():
        if r.lease is not None:  # the marker keeps no lease id: a read is a new credential anyway
            yield f"{name}: dynamic (lease {r.lease.id}): each read is a new credential, so it always differs"
            continue
        if not isinstance(old, dict):
            continue
        before = old.get(name)
        if not isinstance(before, dict):
            yield f"{name}: new secret (version {_v(r.version)})"
            continue
        if before.get("ref") != r.ref:
            yield f"{name}: reference changed ({_v(before.get('version'))} -> {_v(r.version)})"
        elif before.get("version") != r.version:
            yield f"{name}: version {_v(before.get('version'))} -> {_v(r.version)}"
    for name in sorted(set(old) - set(info)) if isinstance(old, dict) else ():
        yield f"{name}: no longer in the manifest"


def _v(version: object) -> str:
    return "-" if version is None else str(version)


def _text(data: bytes) -> list[str] | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\0" in text:
        return None
    return text.splitlines()


def _added(masked: bytes) -> list[str]:
    lines = _text(masked)
    if lines is None:
        return ["(binary file: content not shown)"]
    return [f"@@ -0,0 +1,{len(lines)} @@", *("+" + line for line in lines)]


def _changed(old: bytes, real: bytes, masked: bytes, new: Inputs) -> list[str]:
    """The masked unified diff of one changed file (see the module's doc)."""
    old_lines, real_lines, shown = _text(old), _text(real), _text(masked)
    if old_lines is None or real_lines is None or shown is None:
        return ["(binary file differs: content not shown)"]
    if len(shown) != len(real_lines):
        # A value spans lines (or the template needs the real values to render): masked lines
        # do not correspond to real ones, so no line can be shown as it stands.
        return [f"(the file differs: {len(old_lines)} -> {len(real_lines)} lines; not shown line by line)"]
    if max(len(old_lines), len(real_lines)) > MAX_DIFF_LINES:
        return [
            f"(the file differs: {len(old_lines)} -> {len(real_lines)} lines; too long to diff line by line)"
        ]
    public = frozenset(shown)
    out: list[str] = []
    matcher = difflib.SequenceMatcher(None, old_lines, real_lines, autojunk=False)
    for group in matcher.get_grouped_opcodes(CONTEXT):
        (_, i1, _, j1, _), (_, _, i2, _, j2) = group[0], group[-1]
        out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@")
        for tag, a1, a2, b1, b2 in group:
            if tag == "equal":
                out += [" " + line for line in shown[b1:b2]]
                continue
            out += _old_side(old_lines, (a1, a2), shown[b1:b2], public, new.placeholders)
            out += ["+" + line for line in shown[b1:b2]]
    return out


def _range(start: int, end: int) -> str:
    count = end - start
    return f"{start + 1 if count else start},{count}"


def _old_side(
    old: Sequence[str],
    span: tuple[int, int],
    shown: Sequence[str],
    public: frozenset[str],
    keep: re.Pattern[str],
) -> list[str]:
    """The old lines in `span` as they may be printed: as they are when the masked render prints
    the same line anyway (`public`: the masked file's lines), as the masked new line whose literal
    text they match, else as a note (consecutive ones grouped) that never quotes them."""
    a1, a2 = span
    patterns = [_pattern(line, keep) for line in shown]
    out: list[str] = []
    hidden: list[int] = []
    for i in range(a1, a2):
        line = _as_shown(old[i], i - a1, shown, patterns, public)
        if line is None:
            hidden.append(i)
            continue
        out += _note(hidden)
        hidden = []
        out.append("-" + line)
    return out + _note(hidden)


def _as_shown(
    old: str,
    paired: int,
    shown: Sequence[str],
    patterns: Sequence[re.Pattern[str] | None],
    public: frozenset[str],
) -> str | None:
    """What may stand for one old line: itself when the masked render prints it anyway, else the
    masked new line whose pattern it matches (the one it pairs with first); None: nothing."""
    if old in public:
        return old
    if len(old) > MAX_MATCHED_LINE:  # bounded matching
        return None
    order = [paired] if paired < len(shown) else []
    if len(shown) <= MAX_CANDIDATES:  # else the line it pairs with only: bounded work per line
        order += [k for k in range(len(shown)) if k != paired]
    for k in order:
        pattern = patterns[k]
        if pattern is not None and pattern.fullmatch(old):
            return shown[k]
    return None


def _pattern(masked_line: str, keep: re.Pattern[str]) -> re.Pattern[str] | None:
    """The masked line's literal text with any text where its placeholders are; None when it has
    no placeholder (then only an equal line matches it, and those are not old-side lines)."""
    parts, pos = [], 0
    for m in keep.finditer(masked_line):
        parts += [re.escape(masked_line[pos : m.start()]), ".*?"]
        pos = m.end()
    if not parts or len(parts) > 2 * MAX_PLACEHOLDERS:
        return None
    parts.append(re.escape(masked_line[pos:]))
    return re.compile("".join(parts), re.DOTALL)


def _note(lines: Sequence[int]) -> list[str]:
    if not lines:
        return []
    first, last = lines[0] + 1, lines[-1] + 1
    where = f"line {first}" if first == last else f"lines {first}-{last}"
    verb = "differs" if first == last else "differ"
    held = "it" if first == last else "they"
    return [f"-({where} {verb}; not shown: {held} may hold an earlier value)"]


def show(out: TextIO, report: Report, out_dir: Path) -> None:
    """Print the report: secrets whose version changed, files and env names, then each file's diff."""
    if not report.marker:
        out.write(f"--- {out_dir} holds no completed render: versions unknown\n")
    if report.versions:
        out.write("--- secrets\n")
        out.writelines(line + "\n" for line in report.versions)
    if report.files:
        out.write("--- files\n")
        out.writelines(f"{what:<8} {dest}\n" for dest, what in report.files.items())
        if "unreadable" in report.files.values():
            out.write("(unreadable: this user may not read it; run diff as the user the render writes as)\n")
    if report.env:
        out.write("--- env\n")
        out.writelines(line + "\n" for line in report.env)
    for dest, lines in report.hunks.items():
        out.write(f"--- a/{dest} ({out_dir})\n+++ b/{dest} (this render, masked)\n")
        out.writelines(line + "\n" for line in lines)
