"""Helpers for running the real CLI in a subprocess and checking for leaks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CANARY = "CANARY-7f3a9c-do-not-print"
CANARY2 = "CANARY-b81e44-never-log"
CANARIES = (CANARY, CANARY2)

# Values the leak check (tests/conftest.py) looks for in every test's outputs, on top of
# CANARIES and every test module's CANARY* constants. Tests add theirs with register_canary.
REGISTERED: set[str] = set()


def register_canary(value: str) -> str:
    """Make the suite-wide leak check look for `value` (and its encoded forms); returns it."""
    REGISTERED.add(value)
    return value


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment: no cloud credentials or CA variables leak in from the machine."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),
    }
    env.update(extra)
    return env


def run_cli(
    args: Iterable[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 60,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "initfetch", *args],
        env=dict(env) if env is not None else clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


def assert_no_canary(*texts: str | bytes, canaries: Iterable[str] = CANARIES) -> None:
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        for canary in canaries:
            assert canary not in text, f"secret value leaked: {text!r}"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
