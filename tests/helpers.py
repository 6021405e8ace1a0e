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


# Outputs of initfetch processes started during the current test: (label, text). The leak
# check scans them after each test phase. Every subprocess started through the subprocess
# module is seen (tests/conftest.py wraps Popen.communicate), so a test's own `run` helper
# is covered as well as run_cli.
RECORDED: list[tuple[str, str]] = []


def _words(args: object) -> list[str]:
    if isinstance(args, str | bytes | os.PathLike):
        text = os.fsdecode(args)
        return text.split() if " " in text else [text]  # a shell command line, or one program
    try:
        return [os.fsdecode(a) if isinstance(a, str | bytes | os.PathLike) else str(a) for a in args]  # type: ignore[attr-defined]
    except TypeError:
        return [str(args)]


def is_initfetch(args: object) -> bool:
    """Whether a Popen argv starts initfetch (`python -m initfetch ...` or an `initfetch` entry point)."""
    words = _words(args)
    for i, w in enumerate(words[:3]):
        if w == "initfetch" or w.endswith("/initfetch"):
            return True
        if w == "-m" and i + 1 < len(words) and words[i + 1] == "initfetch":
            return True
    return False


def record_process_output(args: object, stdout: object, stderr: object) -> None:
    """Keep an initfetch process's outputs for the leak check.

    Not kept: stdout of `preview --reveal` (it prints values on purpose) and stdout of
    `exec` (that is the application's own output) unless it runs with `--mask-output`.
    """
    if not is_initfetch(args):
        return
    words = _words(args)
    commands = ("render", "exec", "preview", "check", "healthcheck", "scan", "diff", "doctor", "schema")
    command = next((w for w in words if w in commands), "")
    label = " ".join(words[words.index(command) :][:6]) if command else " ".join(words[:4])
    reveal = command == "preview" and "--reveal" in words
    application = command == "exec" and "--mask-output" not in words
    for stream, text in (("stdout", stdout), ("stderr", stderr)):
        if text is None or (stream == "stdout" and (reveal or application)):
            continue
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        RECORDED.append((f"{stream} of initfetch {label}", str(text)))


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
