"""Issue 23, points 4 and 5: a missing manifest says where it looked and what to do; exec with
nothing to resolve warns at the default level (an error with --require-secrets); check says in
its last line when this installation cannot render the manifest (an error with --strict); an
unknown scheme suggests the close one; exec with nothing to write needs no tmpfs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, clean_env, run_cli, write
from tests.test_imports import core_only_path

ADVICE = "run 'initfetch init' to write a starter one, or name yours with -m PATH or INITFETCH_MANIFEST=PATH"


@pytest.mark.parametrize("command", [["render"], ["check"], ["preview"], ["render", "-m", "conf/app.yaml"]])
def test_a_missing_manifest_names_the_directory_and_what_to_do(tmp_path: Path, command: list[str]) -> None:
    r = run_cli(command, env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr
    folder = tmp_path / "conf" if "-m" in command else tmp_path
    assert "manifest not found" in lines[0] and str(folder) in lines[0]
    assert lines[1] == f"initfetch: error: no manifest: {ADVICE} (exit 2)"


def test_exec_without_anything_to_resolve_warns_and_can_refuse(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    app = ["--", "sh", "-c", f"touch {ran}"]
    r = run_cli(["exec", *app], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0 and ran.exists()
    warning = next(line for line in r.stderr.splitlines() if line.startswith("initfetch: warning:"))
    assert f"looked for initfetch.yaml in {tmp_path}" in warning and "starting sh without secrets" in warning
    assert "initfetch init" in warning and "INITFETCH_REQUIRE_SECRETS=1" in warning
    # the same warning at the default level even when only warnings are shown
    r = run_cli(["--log-level", "warning", "exec", *app], env=clean_env(), cwd=tmp_path)
    assert "starting sh without secrets" in r.stderr
    ran.unlink()
    for args, env in (
        (["exec", "--require-secrets", *app], clean_env()),
        (["exec", *app], clean_env(INITFETCH_REQUIRE_SECRETS="1")),
    ):
        r = run_cli(args, env=env, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert not ran.exists(), "the application started without secrets"
        assert r.stderr.splitlines()[-1] == f"initfetch: error: no manifest: {ADVICE} (exit 2)"
    # with a reference to resolve, --require-secrets is satisfied
    env = clean_env(INITFETCH_REQUIRE_SECRETS="1", TOKEN="initfetch+env://SOURCE", SOURCE="value-1")
    r = run_cli(["exec", "--", "sh", "-c", 'test "$TOKEN" = value-1'], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "without secrets" not in r.stderr and "from initfetch+ references" in r.stderr


def test_check_says_when_this_installation_cannot_render(tmp_path: Path) -> None:
    lib = core_only_path(tmp_path)
    write(
        tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  a: vault://secret/app#x\n  b: awssm://app/db\n"
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{REPO}:{lib}"}

    def check(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-S", "-m", "initfetch", "check", *args],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = check()
    assert r.returncode == 0, r.stderr
    assert not r.stdout.startswith("ok")
    assert r.stdout.splitlines()[-1].startswith("valid, but this installation cannot render it: ")
    install = "pip install '.[aws,vault]' in the initfetch checkout (the image: --build-arg EXTRAS=aws,vault)"
    assert r.stdout.rstrip().endswith(f"first {install}")
    for strict in (check("--strict"), check(INITFETCH_STRICT="1")):
        assert strict.returncode == 2, strict.stderr
        last = strict.stderr.splitlines()[-1]
        assert f"cannot render it (--strict): first {install} (exit 2)" in last
    # everything installed: ok, and --strict changes nothing
    r = run_cli(["check", "--strict"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("ok: "), r.stderr


@pytest.mark.parametrize(
    ("written", "meant"), [("evn", "env"), ("valut", "vault"), ("awsm", "awssm"), ("SSM", "ssm")]
)
def test_an_unknown_scheme_suggests_the_closest(tmp_path: Path, written: str, meant: str) -> None:
    write(tmp_path / "initfetch.yaml", f"version: 1\nsecrets:\n  a: {written}://X/y\n")
    r = run_cli(["check"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2
    assert f"unknown scheme '{written}' (did you mean '{meant}'? providers:" in r.stderr


def test_exec_with_nothing_to_write_needs_no_tmpfs(tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  a: env://A\nenv:\n  B: '{{ secrets.a }}'\n")
    disk = tmp_path / "out"  # not a tmpfs, and no --allow-disk
    disk.mkdir()
    r = run_cli(
        ["exec", "-o", str(disk), "--", "sh", "-c", 'test "$B" = v'], env=clean_env(A="v"), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert os.listdir(disk) == []
