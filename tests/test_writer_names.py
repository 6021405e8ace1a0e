"""Dest names and the writer's temp files, through the real CLI.

A dest cannot forge report lines, every legal name can be written (the temp name
does not grow with it), a path too long for anyone to open is refused before
writing, and the stale-temp sweep removes only files that are provably
initfetch's own, and only once the new render is in place.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import clean_env, run_cli, write

TEMP = ".initfetch-tmp-0123456789abcdef01234567"  # the writer's own pattern


def manifest(tmp_path: Path, *dests: str) -> Path:
    files = "".join(f"  - {{secret: s, dest: {json.dumps(d)}}}\n" for d in dests)
    return write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  s: env://S\nfiles:\n" + files)


def render(tmp_path: Path, out: Path | None = None, value: str = "v") -> subprocess.CompletedProcess[str]:
    out = out or tmp_path / "o"
    return run_cli(["render", "-o", str(out), "--allow-disk"], env=clean_env(S=value), cwd=tmp_path)


def assert_one_line_per_problem(r: subprocess.CompletedProcess[str], problems: int) -> None:
    lines = r.stderr.splitlines()
    assert len(lines) == problems + 1, r.stderr  # the problems, then "bad input (exit 2)"
    assert all(line.startswith("initfetch: error: ") for line in lines), r.stderr
    assert "internal error" not in r.stderr


@pytest.mark.parametrize(
    "dest", ["a\nb", "x\ninitfetch: error: all good", "a\x1b[2Jb", "a\x7fb", "a\u2028b", "a\u202eb"]
)
def test_control_characters_in_a_dest_are_refused(tmp_path: Path, dest: str) -> None:
    manifest(tmp_path, dest)
    r = render(tmp_path)
    assert r.returncode == 2
    assert_one_line_per_problem(r, 1)
    assert "initfetch.yaml:5:" in r.stderr and "control characters" in r.stderr
    assert "\x1b" not in r.stderr and "all good" not in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("length", [240, 255])
def test_a_name_up_to_name_max_is_written(tmp_path: Path, length: int) -> None:
    manifest(tmp_path, "n" * length, "d/" + "é" * 127)  # 254 bytes in UTF-8
    r = render(tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / ("n" * length)).read_text() == "v"
    assert run_cli(["healthcheck", "-o", str(tmp_path / "o")]).returncode == 0


@pytest.mark.parametrize("dest", ["n" * 256, "d/" + "é" * 128, "a/" + "b" * 300 + "/c"])
def test_a_name_over_name_max_is_refused(tmp_path: Path, dest: str) -> None:
    manifest(tmp_path, dest)
    r = run_cli(["check"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2 and "the limit is 255 (NAME_MAX)" in r.stderr
    assert_one_line_per_problem(r, 1)
    assert "nnnn" not in r.stderr and "bbbb" not in r.stderr


def test_a_dest_over_path_max_is_refused_in_the_manifest(tmp_path: Path) -> None:
    manifest(tmp_path, "/".join(["d" * 250] * 17))
    r = run_cli(["check"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2 and "(PATH_MAX)" in r.stderr
    assert_one_line_per_problem(r, 1)


def test_out_dir_and_dest_over_path_max_fail_before_writing(tmp_path: Path) -> None:
    dest = "/".join(["d" * 254] * 16)  # 4079 bytes: legal alone, too long under OUT_DIR
    manifest(tmp_path, dest)
    assert run_cli(["check"], env=clean_env(), cwd=tmp_path).returncode == 0
    r = render(tmp_path)
    assert r.returncode == 5 and "(PATH_MAX)" in r.stderr and "initfetch.yaml:5:" in r.stderr
    assert "internal error" not in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "marker",
    [
        {"files": ["/".join(["d" * 250] * 20)]},  # longer than PATH_MAX
        {"files": ["a\0b"]},
        {"files": "not a list"},
        {"files": [1, 2]},
        ["not", "a", "mapping"],
    ],
)
def test_healthcheck_never_fails_with_an_internal_error(tmp_path: Path, marker: object) -> None:
    write(tmp_path / "o/.initfetch-ready.json", json.dumps(marker))
    r = run_cli(["healthcheck", "-o", str(tmp_path / "o")])
    assert r.returncode == 1, r.stderr
    assert "internal error" not in r.stderr and "not ready" in r.stderr


@pytest.mark.parametrize(
    "dest", [TEMP, "sub/" + TEMP, ".initfetch-ready.json", "sub/.initfetch-x", ".a.initfetch-0123456789ab"]
)
def test_a_dest_cannot_look_like_initfetchs_own_files(tmp_path: Path, dest: str) -> None:
    manifest(tmp_path, dest)
    r = run_cli(["check"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2 and "reserved for initfetch's own files" in r.stderr


def test_the_sweep_runs_only_after_a_complete_render(tmp_path: Path) -> None:
    manifest(tmp_path, "a", "sub/b")
    out = tmp_path / "o"
    assert render(tmp_path, value="old").returncode == 0
    stale = [out / TEMP, out / "sub" / TEMP.replace("0123", "4567"), out / ".a.initfetch-0123456789ab"]
    for path in stale:
        path.write_text("a value a killed run left behind")
    (out / "sub/b").unlink()
    (out / "sub/b").mkdir()  # makes the next render fail while staging
    r = render(tmp_path, value="new")
    assert r.returncode == 5
    assert all(path.exists() for path in stale), "a failing render deleted files"
    (out / "sub/b").rmdir()
    assert render(tmp_path, value="new").returncode == 0
    assert not any(path.exists() for path in stale)
    assert (out / "a").read_text() == "new"


def test_the_sweep_removes_only_what_is_provably_ours(tmp_path: Path) -> None:
    manifest(tmp_path, "a")
    out = tmp_path / "o"
    assert render(tmp_path).returncode == 0
    kept = {
        ".initfetch-tmp-notours": "a user's file",  # not the exact pattern
        TEMP + "0": "a user's file",
        ".b.initfetch-0123456789ab": "not the legacy temp of a dest written here",
        ".a.initfetch-notours": "the legacy prefix, not the exact pattern",
    }
    for name, text in kept.items():
        (out / name).write_text(text)
    (out / TEMP).mkdir()  # a directory is never ours
    os.symlink("/etc/hostname", out / TEMP.replace("0123", "9999"))  # nor a symlink
    others = [out / TEMP.replace("0123", "7777"), out / ".a.initfetch-777777777777"]
    for other in others:
        other.write_text("someone else's")
        if os.geteuid() == 0:  # only root can make a file owned by another user
            os.chown(other, 65534, 65534)
    assert render(tmp_path, value="again").returncode == 0
    for name in kept:
        assert (out / name).exists(), name
    assert (out / TEMP).is_dir() and (out / TEMP.replace("0123", "9999")).is_symlink()
    for other in others:
        assert other.exists() == (os.geteuid() == 0)
