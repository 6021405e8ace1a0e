"""Hostile or odd manifests: one located line each, the documented exit code, nothing quoted.

Through the real CLI: limits on reading (size, aliases, depth, values), what error
text may quote, YAML typing (dates, decimal modes), `${VAR}` inside one part of a
reference only.
"""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from initfetch.limits import MIB
from initfetch.manifest import load_manifest
from initfetch.reference import RefSyntaxError, expand_reference
from tests.helpers import CANARY, assert_no_canary, clean_env, run_cli, write

HASH = "$6$CANARYsalt$Zx9vQ1kFh0CANARYhash.0WqJ3m/Q"  # not identifier-like, as a real hash is


def check(tmp_path: Path, text: str | bytes, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "m.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        write(path, text)
    return run_cli(["check", "-m", str(path)], env=clean_env(**env))


def problem_lines(stderr: str) -> list[str]:
    """The report's problem lines (without the closing `bad input (exit 2)` line)."""
    return [line for line in stderr.splitlines() if not line.endswith("(exit 2)")]


def assert_bad_input(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


# --- what error text quotes --------------------------------------------------------


def test_a_shadow_like_file_is_reported_without_its_content(tmp_path: Path) -> None:
    shadow = write(
        tmp_path / "shadow",
        f"root:{HASH}:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\napp:{HASH}x:19700:0:99999:7:::\n",
    )
    os.symlink(shadow, tmp_path / "initfetch.yaml")  # and through a symlink, as in the issue
    for target in (shadow, tmp_path / "initfetch.yaml"):
        r = run_cli(["check", "-m", str(target)], env=clean_env())
        assert_bad_input(r, "unknown key (not shown:")
        assert "$6$" not in r.stderr and "CANARY" not in r.stderr and "root:" not in r.stderr
        for line in problem_lines(r.stderr):
            assert f"{target}:" in line  # located, file:line:col


def test_short_identifier_keys_are_quoted_and_others_are_not(tmp_path: Path) -> None:
    long_key = "k" * 97
    r = check(tmp_path, f"version: 1\nsecretz: {{}}\n{long_key}: 1\n'{CANARY} x': 2\n")
    assert_bad_input(
        r, "m.yaml:2:1: unknown key 'secretz'", "m.yaml:3:1: unknown key (not shown: 97 characters)"
    )
    assert long_key not in r.stderr
    assert_no_canary(r.stderr)


@pytest.mark.parametrize(
    "body",
    [
        'secrets: {a: "vault://x?{C} y"}',  # a query part that is not name=value
        'secrets: {a: "{C} y://x"}',  # a bad scheme
        'secrets: {a: "vault://x/${{{C} y}}"}',  # a bad variable name
        'secrets: {a: "vault://x?a=1&a=2", "{C} y": env://A}',  # a bad secret name
        "secrets: {a: env://A}\nfiles: [{secret: '{C} y', dest: a}]",  # an undeclared secret
        "secrets: {a: env://A}\nfiles: [{secret: a, dest: '/{C}'}, {secret: a, dest: '{C}/'}]",
        "providers: {p: {type: '{C} y'}}",  # an unknown provider type
        "providers: {p: {type: vault, '{C} y': 1}}",  # an option name
        "env: {'{C} y': x}",
        "secrets: {a: env://A}\nfiles: [{secret: a, dest: x, owner: '{C} y'}]\n",
        "x: !!python/object:{C} 1",  # an unknown YAML tag
        "x: *{C}",  # an undefined alias
    ],
)
def test_messages_never_quote_manifest_text(tmp_path: Path, body: str) -> None:
    r = check(tmp_path, "version: 1\n" + body.replace("{C}", "$6$" + CANARY) + "\n", A="a")
    assert r.returncode in (2, 0), r.stderr  # owner names are checked at render time
    assert "internal error" not in r.stderr
    assert_no_canary(r.stdout, r.stderr)
    assert "$6$" not in r.stderr


# --- limits on reading the manifest -------------------------------------------------


def run_limited(args: list[str], env: dict[str, str], memory: int) -> subprocess.CompletedProcess[str]:
    """The CLI with its address space capped: a bomb that expands would hit MemoryError."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [sys.executable, "-m", "initfetch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,  # noqa: PLW1509 - only sets a limit, no threads involved
    )


def test_an_alias_bomb_stops_at_the_values_limit(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    write(tmp_path / "m.yaml", "version: 1\n" + "\n".join(lines) + "\n")
    r = run_limited(["check", "-m", str(tmp_path / "m.yaml")], clean_env(), 1 << 30)
    assert_bad_input(r, "aliases expanded exceeds the limit of 100000", "INITFETCH_LIMIT_YAML_NODES")
    assert len(problem_lines(r.stderr)) == 1 and "m.yaml:" in r.stderr


def test_too_many_aliases_is_one_line_and_the_limit_can_be_raised(tmp_path: Path) -> None:
    text = "version: 1\nv: &v x\nl: [" + ", ".join(["*v"] * 101) + "]\n"
    r = check(tmp_path, text)
    assert_bad_input(r, "number of YAML aliases", "limit of 100", "INITFETCH_LIMIT_YAML_ALIASES")
    assert len(problem_lines(r.stderr)) == 1
    r = check(tmp_path, text, INITFETCH_LIMIT_YAML_ALIASES="200")
    assert "number of YAML aliases" not in r.stderr and "unknown key 'v'" in r.stderr  # read to the end


def test_deep_nesting_is_a_limit_not_a_recursion_error(tmp_path: Path) -> None:
    r = check(tmp_path, "version: 1\nx: " + "[" * 999 + "]" * 999 + "\n")
    assert_bad_input(r, "nesting depth", "limit of 64", "INITFETCH_LIMIT_YAML_DEPTH")
    assert "RecursionError" not in r.stderr and len(problem_lines(r.stderr)) == 1
    r = check(
        tmp_path, "version: 1\nx: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", INITFETCH_LIMIT_YAML_DEPTH="10"
    )
    assert_bad_input(r, "limit of 10")


def test_manifest_size_limit(tmp_path: Path) -> None:
    r = check(tmp_path, "version: 1\n" + "# padding\n" * 20, INITFETCH_LIMIT_MANIFEST_SIZE="100")
    assert_bad_input(
        r, "size of the manifest file exceeds the limit of 100 bytes", "INITFETCH_LIMIT_MANIFEST_SIZE"
    )
    big = "version: 1\nsecrets: {}\n" + "#" * (1 * MIB) + "\n"
    r = check(tmp_path, big)
    assert_bad_input(r, "limit of 1 MiB")
    assert check(tmp_path, big, INITFETCH_LIMIT_MANIFEST_SIZE="2MiB").returncode == 0


def test_a_bad_limit_variable_names_itself(tmp_path: Path) -> None:
    r = check(tmp_path, "version: 1\n", INITFETCH_LIMIT_YAML_DEPTH="deep")
    assert_bad_input(r, "INITFETCH_LIMIT_YAML_DEPTH must be a positive integer")


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_a_manifest_that_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "m.yaml"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would wait for a writer forever
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")  # would never end
    r = run_cli(["check", "-m", str(path)], env=clean_env(), timeout=30)
    assert_bad_input(r, "not a regular file")


def test_a_binary_manifest(tmp_path: Path) -> None:
    r = check(tmp_path, b"version: 1\nx: \xff\xfe\n")
    assert_bad_input(r, "m.yaml:2:4: the manifest is not UTF-8 text")
    r = check(tmp_path, b"version: 1\nx: a\x01b\n")
    assert_bad_input(r, "m.yaml:2:5: invalid YAML")


# --- the limits: section ------------------------------------------------------------


def test_the_limits_section_sets_run_limits_and_the_environment_wins(tmp_path: Path) -> None:
    path = write(tmp_path / "m.yaml", "version: 1\nlimits: {secret_size: 2MiB, output_size: 1000}\n")
    m = load_manifest(path, {})
    assert m.limits.secret_size == 2 * MIB and m.limits.output_size == 1000
    m = load_manifest(path, {"INITFETCH_LIMIT_SECRET_SIZE": "3MiB"})
    assert m.limits.secret_size == 3 * MIB


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("limits: {secret_size: lots}", "m.yaml:2:10: limits: secret_size must be a positive size"),
        ("limits: {yaml_depth: 5}", "only INITFETCH_LIMIT_YAML_DEPTH sets it"),
        ("limits: {speed: 5}", "unknown limit 'speed'"),
        ("limits: 5", "'limits' must be a mapping"),
    ],
)
def test_bad_limits_sections(tmp_path: Path, body: str, message: str) -> None:
    assert_bad_input(check(tmp_path, f"version: 1\n{body}\n"), message)


# --- YAML typing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x: 2024-02-30", "m.yaml:2:4: invalid date value (quote it if it is a string)"),
        ("secrets: {a: env://A}\nfiles: [{secret: a, dest: 2001-13-45}]", "m.yaml:3:27: invalid date value"),
        (
            "secrets: {a: env://A}\nfiles: [{secret: a, dest: 2001-01-01}]",
            "'dest' must be a string, not a date; quote it",
        ),
        (
            "secrets: {a: env://A}\nfiles: [{secret: a, dest: 1.5}]",
            "'dest' must be a string, not a number; quote it",
        ),
        ("secrets: {a: {ref: env://A, default: yes}}", "default must be a string, not true/false; quote it"),
        ("secrets: {a: 2024-01-01}", "'ref' must be a reference string"),
        ("env: {X: 2024-01-01}", "must be a string, not a date; quote it"),
        ("templates: [{src: 2024-01-01, dest: a}]", "'src' must be a string, not a date"),
        ("providers: {v: {type: vault, address: 2024-01-01}}", "option address is a date; quote it"),
        ("x: !!int abc", "invalid int value"),
        ("x: 1" + "0" * 5000, "invalid int value"),
        (
            "secrets: {a: env://A}\nfiles: [{secret: a, dest: b, owner: 1.5}]",
            "owner must be a numeric id or a name",
        ),
    ],
)
def test_yaml_values_of_the_wrong_type_are_located(tmp_path: Path, body: str, message: str) -> None:
    assert_bad_input(check(tmp_path, f"version: 1\n{body}\n", A="a"), message)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("0440", 0o440), ('"0440"', 0o440), ('"440"', 0o440), ("0o440", 0o440), ("0600", 0o600), ("0", 0)],
)
def test_modes_that_are_accepted(tmp_path: Path, mode: str, expected: int) -> None:
    write(
        tmp_path / "initfetch.yaml",
        f"version: 1\nsecrets: {{s: env://S}}\nfiles: [{{secret: s, dest: f, mode: {mode}}}]\n",
    )
    r = run_cli(["render", "-o", str(tmp_path / "o"), "--allow-disk"], env=clean_env(S="v"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE((tmp_path / "o/f").stat().st_mode) == expected


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("440", 'mode 440 is a decimal number; write it as "0440" (quoted) or 0440'),
        ("400", 'mode 400 is a decimal number; write it as "0400" (quoted) or 0400'),
        ("0x1a0", "mode must be octal permissions"),
        ("4755", "mode 4755 is a decimal number"),
        ("04755", "no setuid bits"),
        ('"0o4755"', "no setuid bits"),
        ('"rw"', "mode must be octal permissions"),
        ('" 04_4"', "mode must be octal permissions"),
        ("true", "mode must be octal permissions"),
        ("1:20", "mode must be octal permissions"),
    ],
)
def test_modes_that_could_surprise_are_refused(tmp_path: Path, mode: str, message: str) -> None:
    r = check(
        tmp_path, f"version: 1\nsecrets: {{s: env://S}}\nfiles: [{{secret: s, dest: f, mode: {mode}}}]\n"
    )
    assert_bad_input(r, "m.yaml:3:", message)


# --- ${VAR} inside one part of a reference ------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "scheme", "path", "query", "key"),
    [
        ("file://s/${APP}", {"APP": "app/db.json#admin"}, "file", "s/app/db.json#admin", (), None),
        ("file://s/${F}", {"F": "x?raw=true"}, "file", "s/x?raw=true", (), None),
        ("vault://s?version=${V}", {"V": "3&raw=true"}, "vault", "s", (("version", "3&raw=true"),), None),
        ("vault://s#${K}", {"K": "/a/b"}, "vault", "s", (), ("/a/b",)),
        ("vault://s#/a/${K}", {"K": "b/c~1"}, "vault", "s", (), ("a", "b/c~1")),
        ("vault://${E}/db", {"E": "x://y"}, "vault", "x://y/db", (), None),
        ("vault://a/${X:-d#e}?v=${X:-1?2}", {}, "vault", "a/d#e", (("v", "1?2"),), None),
        ("vault://a/$${X}/%41", {}, "vault", "a/${X}/%41", (), None),
        ("vault://a?q=%41${X}", {"X": "%42"}, "vault", "a", (("q", "A%42"),), None),
    ],
)
def test_a_variable_stays_inside_its_part(
    text: str,
    env: dict[str, str],
    scheme: str,
    path: str,
    query: tuple[tuple[str, str], ...],
    key: tuple[str, ...] | None,
) -> None:
    ref = expand_reference(text, env)
    assert ref is not None
    assert (ref.scheme, ref.path, ref.doc.query, ref.key) == (scheme, path, query, key)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${S}://a", "the scheme cannot use"),
        ("${REF}", "a ${VAR} cannot supply the scheme"),
        ("vault://a?${N}=1", "query parameter name cannot use"),
        ("vault://a/${X}", "X is not set"),
        ("vault://a/${C}", "control characters"),
    ],
)
def test_what_a_variable_cannot_do(text: str, message: str) -> None:
    env = {"S": "vault", "REF": "vault://a", "N": "version", "C": "a\nb"}
    with pytest.raises(RefSyntaxError, match=message.replace("$", r"\$").replace("{", r"\{")):
        expand_reference(text, env)


def test_an_injected_key_or_query_does_not_select_anything(tmp_path: Path) -> None:
    write(tmp_path / "s/app/db.json", '{"admin": "%s"}' % CANARY)  # noqa: UP031
    write(tmp_path / "s/x", CANARY + "\n")
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  a: file://s/${APP}\n  b: file://s/${F}\n"
        "files: [{secret: a, dest: a}, {secret: b, dest: b}]\n",
    )
    env = clean_env(APP="app/db.json#admin", F="x?raw=true")
    r = run_cli(["render", "-o", str(tmp_path / "o"), "--allow-disk"], env=env, cwd=tmp_path)
    assert r.returncode == 3, r.stderr  # both paths do not exist: nothing was selected
    assert len([line for line in r.stderr.splitlines() if "error:" in line and "not-found" in line]) == 2
    assert not (tmp_path / "o").exists()
    assert_no_canary(r.stderr)


def test_offline_check_keeps_working_with_unset_variables(tmp_path: Path) -> None:
    r = check(tmp_path, "version: 1\nsecrets:\n  a: vault://secret/${STAGE}/db#${KEY:-password}\n")
    assert r.returncode == 0, r.stderr
    assert "not checked beyond syntax" in r.stderr
    # but what does not depend on the variable is still checked
    r = check(tmp_path, "version: 1\nsecrets:\n  a: nope://secret/${STAGE}/db\n")
    assert_bad_input(r, "unknown scheme 'nope'")


def test_defaults_and_dollar_dollar_still_work(tmp_path: Path) -> None:
    write(tmp_path / "v$1", "dollar")
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets: {a: 'env://${N:-V}', b: 'file://v$$1'}\n"
        "files: [{secret: a, dest: a}, {secret: b, dest: b}]\n",
    )
    r = run_cli(["render", "-o", str(tmp_path / "o"), "--allow-disk"], env=clean_env(V="v"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o/a").read_text() == "v" and (tmp_path / "o/b").read_text() == "dollar"


@pytest.mark.parametrize("order", [("x", "x/y/z"), ("x/y/z", "x"), ("x/y/z", "x/y")])
def test_a_dest_needed_as_a_file_and_a_directory_either_way_round(
    tmp_path: Path, order: tuple[str, str]
) -> None:
    files = ", ".join(f"{{secret: a, dest: {d}}}" for d in order)
    r = check(tmp_path, f"version: 1\nsecrets: {{a: env://A}}\nfiles: [{files}]\n")
    assert_bad_input(r, "m.yaml:3:", "need the same path as a file and as a directory")


@given(st.text(alphabet="ab#?&=:/%~$${}\\ ", max_size=20))
def test_no_value_of_a_variable_changes_the_structure(value: str) -> None:
    for text, where in (
        ("vault://p/${X}", "path"),
        ("vault://p?q=${X}", "query"),
        ("vault://p#${X}", "key"),
        ("vault://p#/k/${X}", "segment"),
    ):
        try:
            ref = expand_reference(text, {"X": value})
        except RefSyntaxError:
            assert value.strip() != value or value == "", (text, value)  # spaces around a path, an empty key
            continue
        assert ref is not None and ref.scheme == "vault"
        expected = {
            "path": ("p/" + value, (), None),
            "query": ("p", (("q", value),), None),
            "key": ("p", (), (value,)),
            "segment": ("p", (), ("k", value)),
        }[where]
        assert (ref.path, ref.doc.query, ref.key) == expected


def test_zero_config_names_and_limits(tmp_path: Path) -> None:
    env = clean_env(**{"BAD\nNAME": "initfetch+env://X", "X": "x"})
    r = run_cli(["exec", "--", "true"], env=env, cwd=tmp_path)
    assert_bad_input(r, "environment variable (not shown: 8 characters): not a valid variable name")
    assert "BAD" not in r.stderr
    r = run_cli(["exec", "--", "true"], env=clean_env(INITFETCH_LIMIT_SECRET_SIZE="huge"), cwd=tmp_path)
    assert_bad_input(r, "INITFETCH_LIMIT_SECRET_SIZE must be a positive size")


def test_watch_settings_are_read_and_their_errors_quote_nothing(tmp_path: Path) -> None:
    path = write(
        tmp_path / "m.yaml",
        "version: 1\nproviders:\n  file: {type: file, refresh: 200ms}\n"
        "secrets:\n  v: {ref: 'file://v', refresh: 1m}\non_change: {signal: USR1, grace: 5s}\n",
    )
    m = load_manifest(path, {})
    assert m.watch.providers == {"file": 0.2} and m.watch.secrets == {"v": 60.0}
    assert m.watch.on_change.grace == 5.0
    r = check(tmp_path, f"version: 1\non_change: {{signal: '$6${CANARY} x', '$6${CANARY}': 1}}\n")
    assert_bad_input(r, "m.yaml:2:", "unknown signal (not shown:", "unknown key (not shown:")
    assert_no_canary(r.stderr)
