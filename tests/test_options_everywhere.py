"""Issue 23, point 1: every common option works before and after the command, with the
same meaning; before a command it does not apply to, it is one line and exit 2.

Generated from the parser itself (the main parser's and every command's actions), so an
option added later is covered without touching this file.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from initfetch.cli import build_parser
from tests.helpers import clean_env, run_cli, write

IGNORED = {"-h", "--help", "--version"}


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Long flag -> action (the last flag of each action, as the help spells it)."""
    return {
        a.option_strings[-1]: a
        for a in parser._actions
        if a.option_strings and a.option_strings[-1] not in IGNORED
    }


PARSER = build_parser({})
COMMANDS = _commands(PARSER)
MAIN = _options(PARSER)
TAKEN = {name: _options(p) for name, p in COMMANDS.items()}


def _value(action: argparse.Action) -> list[str]:
    """A value for the option that is not its default (none for an on/off switch)."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [list(action.choices)[-1]]  # text/json: json; the levels: error
    return ["3"] if action.type is not None else ["/tmp/value-given"]


def _parse(args: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    return vars(build_parser(env or {}).parse_args(args))


def _tail(command: str) -> list[str]:
    return ["--", "app"] if command == "exec" else []


def test_an_option_several_commands_take_is_a_common_option() -> None:
    shared = {flag for flag in set().union(*TAKEN.values()) if sum(flag in t for t in TAKEN.values()) > 1}
    assert shared, "no command shares an option?"
    assert shared <= set(MAIN), f"taken by several commands but not accepted before one: {shared - set(MAIN)}"
    assert set(MAIN) <= shared, (
        f"accepted before the command but taken by one command at most: {set(MAIN) - shared}"
    )


@pytest.mark.parametrize("flag", sorted(MAIN))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_common_option_before_and_after_the_command(
    flag: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    action = MAIN[flag]
    value = _value(action)
    if flag not in TAKEN[command]:
        with pytest.raises(SystemExit) as e:
            _parse([flag, *value, command, *_tail(command)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert f"{flag} does not apply to {command}" in err, err
        return
    before = _parse([flag, *value, command, *_tail(command)])
    after = _parse([command, flag, *value, *_tail(command)])
    unset = _parse([command, *_tail(command)])
    assert before == after, (flag, command)
    dest = TAKEN[command][flag].dest
    assert before[dest] != unset[dest], f"{flag} before {command} is not honoured"


@pytest.mark.parametrize("flag", sorted(f for f in MAIN if MAIN[f].nargs != 0))
def test_after_the_command_wins_and_both_win_over_the_twin(flag: str) -> None:
    command = next(c for c in sorted(COMMANDS) if flag in TAKEN[c])
    action = TAKEN[command][flag]
    twin = re.search(r"\$(INITFETCH_[A-Z_]+)", action.help or "")
    env = (
        {twin.group(1): _parse([command, flag, *_value(action), *_tail(command)], {})[action.dest]}
        if twin
        else {}
    )
    env = {k: str(v) for k, v in env.items()}
    first = "2" if action.type is not None else "/tmp/first"
    if action.choices:
        first = list(action.choices)[0]
    second = _value(action)
    got = _parse([flag, first, command, flag, *second, *_tail(command)], env)
    assert got[action.dest] == _parse([command, flag, *second, *_tail(command)])[action.dest]
    if twin:  # the twin is only the default: a flag before the command still wins over it
        default = _parse([command, *_tail(command)], env)[action.dest]
        assert _parse([flag, first, command, *_tail(command)], env)[action.dest] != default


def test_an_option_of_one_command_before_it_says_where_it_goes(capsys: pytest.CaptureFixture[str]) -> None:
    for command, options in TAKEN.items():
        for flag, action in options.items():
            if flag in MAIN:
                continue
            with pytest.raises(SystemExit):
                _parse([flag, *_value(action), command, *_tail(command)])
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "goes after the command" in err, (flag, command, err)


def test_the_issues_examples_end_to_end(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  a: env://A\nfiles:\n  - {secret: a, dest: a}\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    env = clean_env(A="value-a")
    r = run_cli(
        ["--timeout", "2", "--concurrency", "4", "--allow-disk", "-o", str(out), "render"],
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (out / "a").read_text() == "value-a"
    r = run_cli(["--timeout", "2", "check"], env=env, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--timeout does not apply to check" in r.stderr
