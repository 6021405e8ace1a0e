"""file://: only regular files, at most limits.secret_size of one, never a hang or an
unbounded read (`/dev/zero`, a FIFO without a writer, a huge file)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from initfetch.errors import NotFound, TooLarge
from initfetch.limits import MIB
from initfetch.providers.base import FetchContext
from initfetch.providers.file import FileProvider
from initfetch.reference import DocKey
from tests.helpers import clean_env, run_cli, write

CANARY_FILE = "CANARY-f11e5-big-file-content"
SECRET_SIZE_LINE = (
    "too-large: file://big: the size of one secret document exceeds the limit of 1 MiB "
    "(secret_size; raise it with limits: {secret_size: ...} in the manifest or INITFETCH_LIMIT_SECRET_SIZE)"
)


def fetch(base: Path, path: str, max_size: int) -> object:
    provider = FileProvider("file", {"base_dir": str(base)}, {})
    return provider.fetch(DocKey(path), FetchContext(time.monotonic() + 30, max_size=max_size)).value


def test_a_file_of_exactly_the_limit_is_read_one_byte_more_is_too_large(tmp_path: Path) -> None:
    (tmp_path / "at").write_bytes(b"x" * 100)
    (tmp_path / "over").write_bytes(b"x" * 101)
    assert fetch(tmp_path, "at", 100) == "x" * 100
    with pytest.raises(TooLarge) as e:
        fetch(tmp_path, "over", 100)
    assert e.value.kind == "too-large" and "100 bytes" in str(e.value) and "secret_size" in str(e.value)


def test_the_default_limit_is_one_mebibyte(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"y" * (MIB + 1))
    provider = FileProvider("file", {"base_dir": str(tmp_path)}, {})
    with pytest.raises(TooLarge):
        provider.fetch(DocKey("f"), FetchContext(time.monotonic() + 30))


def test_symlinks_are_followed_but_only_to_regular_files(tmp_path: Path) -> None:
    # Kubernetes secret volumes: ..data/ symlinks to a timestamped directory
    write(tmp_path / "..2026_12_02/db", "pw\n")
    (tmp_path / "..data").symlink_to("..2026_12_02")
    (tmp_path / "db").symlink_to("..data/db")
    assert fetch(tmp_path, "db", 100) == "pw"
    (tmp_path / "dir").symlink_to("..2026_12_02")
    with pytest.raises(NotFound, match="not a regular file"):
        fetch(tmp_path, "dir", 100)


def test_devices_fifos_and_directories_are_not_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # no writer: a blocking open would hang forever
    (tmp_path / "d").mkdir()
    for path in ("/dev/zero", "/dev/null", str(tmp_path / "fifo"), str(tmp_path / "d")):
        with pytest.raises(NotFound, match="not a regular file"):
            fetch(tmp_path, path, 100)


def test_cli_reports_each_unbounded_file_in_one_line_exit_3(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes((CANARY_FILE + "\n").encode() * (MIB // 20))  # ~1.5 MiB
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  zero: file:///dev/zero\n  fifo: file://fifo\n  big: file://big\n"
        "  urandom: file:///dev/urandom\n",
    )
    out = tmp_path / "out"
    # a generous bound: without the fix /dev/zero is read until memory runs out and the FIFO never opens
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=clean_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 3, r.stderr
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert any("zero: not-found: file:///dev/zero: not a regular file: /dev/zero" in e for e in errors)
    assert any("urandom: not-found: file:///dev/urandom: not a regular file" in e for e in errors)
    assert any("fifo: not-found: file://fifo: not a regular file" in e for e in errors)
    assert any(e.endswith(SECRET_SIZE_LINE) for e in errors), r.stderr
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr
    assert CANARY_FILE not in r.stderr + r.stdout
    assert not out.exists()


def test_the_limit_is_raised_in_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"z" * (MIB + 10))
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nlimits: {secret_size: 2MiB}\nsecrets:\n  big: file://big\nfiles:\n"
        "  - {secret: big, dest: big}\n",
    )
    out = tmp_path / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (out / "big").stat().st_size == MIB + 10
