"""The real CLI in a subprocess: every command, every exit code, no leaks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.helpers import CANARY, CANARY2, assert_no_canary, clean_env, run_cli, write

MANIFEST = """\
version: 1
secrets:
  db_pass: file://secrets/db_password
  api: env://API_JSON#token
  nested: env://API_JSON#/deep/key
  user: env://DB_USER
templates:
  - src: templates/config.json.j2
    dest: config/app.json
files:
  - secret: db_pass
    dest: db_password
    mode: "0440"
env:
  DB_PASSWORD: "{{ secrets.db_pass }}"
  API_TOKEN: "{{ secrets.api }}"
"""

TEMPLATE = """\
{"user": {{ secrets.user | tojson }}, "password": {{ secrets.db_pass | tojson }},
 "token_b64": "{{ secrets.api | b64encode }}", "deep": {{ secrets.nested | tojson }}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "initfetch.yaml", MANIFEST)
    write(tmp_path / "templates/config.json.j2", TEMPLATE)
    write(tmp_path / "secrets/db_password", CANARY + "\n")
    return tmp_path


def env_for(project: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        API_JSON=json.dumps({"token": CANARY2, "deep": {"key": "nested-" + CANARY}}),
        DB_USER="app",
        **extra,
    )


def test_version_and_help() -> None:
    r = run_cli(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("initfetch ")
    r = run_cli(["--help"])
    assert r.returncode == 0
    for command in ("render", "exec", "preview", "check", "healthcheck"):
        assert command in r.stdout


def test_usage_error_is_exit_2_in_one_line() -> None:
    r = run_cli(["render", "--no-such-flag"])
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "error" in r.stderr
    assert run_cli([]).returncode == 2


def test_render_writes_files_modes_and_marker(project: Path) -> None:
    out = project / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env_for(project), cwd=project)
    assert r.returncode == 0, r.stderr
    app = json.loads((out / "config/app.json").read_text())
    assert app["password"] == CANARY and app["user"] == "app" and app["deep"] == "nested-" + CANARY
    assert (out / "db_password").read_text() == CANARY  # the trailing newline of the file is dropped
    assert stat.S_IMODE((out / "config/app.json").stat().st_mode) == 0o400
    assert stat.S_IMODE((out / "db_password").stat().st_mode) == 0o440
    marker = json.loads((out / ".initfetch-ready.json").read_text())
    assert marker["secrets"]["api"]["ref"] == "env://API_JSON#token"
    assert sorted(marker["files"]) == ["config/app.json", "db_password"]
    assert_no_canary(r.stdout, r.stderr, (out / ".initfetch-ready.json").read_text())
    assert not [p for p in out.rglob("*initfetch-*") if p.name != ".initfetch-ready.json"], "temp files left"
    assert run_cli(["healthcheck", "-o", str(out)]).returncode == 0


def test_env_twins_configure_everything(project: Path) -> None:
    out = project / "twin-out"
    env = env_for(
        project,
        INITFETCH_MANIFEST=str(project / "initfetch.yaml"),
        INITFETCH_OUT=str(out),
        INITFETCH_ALLOW_DISK="1",
        INITFETCH_LOG_FORMAT="json",
        INITFETCH_LOG_LEVEL="debug",  # audit records reach the console only at debug
    )
    r = run_cli(["render"], env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    assert (out / "db_password").exists()
    records = [json.loads(line) for line in r.stderr.splitlines()]
    assert {rec["secret"] for rec in records if rec.get("event") == "resolve"} == {
        "db_pass",
        "api",
        "nested",
        "user",
    }
    assert run_cli(["healthcheck"], env=env).returncode == 0


def test_disk_output_is_refused_without_allow_disk(project: Path) -> None:
    out = project / "out"
    r = run_cli(["render", "-o", str(out)], env=env_for(project), cwd=project)
    assert r.returncode == 5
    assert "not tmpfs/ramfs" in r.stderr and "--allow-disk" in r.stderr
    assert not out.exists()


def test_failing_reference_changes_nothing_and_reports_all(project: Path) -> None:
    out = project / "out"
    assert (
        run_cli(["render", "-o", str(out), "--allow-disk"], env=env_for(project), cwd=project).returncode == 0
    )
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (project / "secrets/db_password").unlink()
    env = env_for(project)
    env["API_JSON"] = json.dumps({"other": CANARY2})
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env, cwd=project)
    assert r.returncode == 3
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    # every failing reference at once, each with its manifest line and class
    assert any("initfetch.yaml:3:" in e and "db_pass: not-found" in e for e in errors), errors
    assert any(
        "initfetch.yaml:4:" in e and "api: missing-key" in e and "keys there: other" in e for e in errors
    )
    assert any("initfetch.yaml:5:" in e and "nested: missing-key" in e for e in errors)
    assert "Traceback" not in r.stderr
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before == after
    assert_no_canary(r.stdout, r.stderr)


def test_optional_and_default(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml",
        """\
version: 1
secrets:
  present: env://PRESENT
  fallback: {ref: env://MISSING_ONE, default: "fallback-value"}
  maybe: {ref: file://nope, optional: true}
templates:
  - {src: t.j2, dest: out.txt}
""",
    )
    write(
        tmp_path / "t.j2",
        "{{ secrets.fallback }} {{ secrets.maybe | default('none') }} {{ secrets.present }}",
    )
    r = run_cli(
        ["render", "-o", str(tmp_path / "o"), "--allow-disk", "--log-level", "debug"],
        env=clean_env(PRESENT="p"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o/out.txt").read_text() == "fallback-value none p"
    assert "outcome=default" in r.stderr and "outcome=absent" in r.stderr


def test_undefined_in_template_is_exit_2_and_nothing_written(project: Path) -> None:
    write(project / "templates/config.json.j2", '{"x": "{{ secrets.db_pass }}", "y": "{{ secrets.nope }}"}')
    out = project / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env_for(project), cwd=project)
    assert r.returncode == 2
    assert "uses secrets.nope, which the manifest does not declare" in r.stderr
    assert "config.json.j2:1" in r.stderr
    assert not out.exists()


def test_runtime_template_error_names_template_line(project: Path) -> None:
    write(project / "templates/config.json.j2", "line one\n{{ secrets.api.no_such_attr }}\n")
    out = project / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env_for(project), cwd=project)
    assert r.returncode == 2
    assert "config.json.j2:2: undefined" in r.stderr, r.stderr
    assert not out.exists()
    assert_no_canary(r.stderr)


def test_sandbox_blocks_python_internals(project: Path) -> None:
    write(project / "templates/config.json.j2", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    r = run_cli(["render", "-o", str(project / "o"), "--allow-disk"], env=env_for(project), cwd=project)
    assert r.returncode == 2
    assert "not allowed" in r.stderr or "unsafe" in r.stderr or "undefined" in r.stderr


def test_preview_masks_and_reveal_shows(project: Path) -> None:
    r = run_cli(["preview"], env=env_for(project), cwd=project)
    assert r.returncode == 0, r.stderr
    assert_no_canary(r.stdout, r.stderr)
    assert "<secret:db_pass>" in r.stdout and "DB_PASSWORD=<secret:db_pass>" in r.stdout
    assert "--- references" in r.stdout and "file://secrets/db_password" in r.stdout
    # the base64 of a secret is masked too
    import base64

    assert base64.b64encode(CANARY2.encode()).decode() not in r.stdout
    r = run_cli(["preview", "--reveal"], env=env_for(project), cwd=project)
    assert r.returncode == 0 and CANARY in r.stdout
    assert_no_canary(r.stderr)


def test_preview_offline_contacts_nothing(project: Path) -> None:
    # No API_JSON / DB_USER and no secret file: an online preview would fail.
    (project / "secrets/db_password").unlink()
    r = run_cli(["preview", "--offline"], env=clean_env(), cwd=project)
    assert r.returncode == 0, r.stderr
    assert "<secret:db_pass>" in r.stdout and "offline" in r.stdout
    assert run_cli(["preview"], env=clean_env(), cwd=project).returncode == 3


def test_check_is_offline_and_finds_problems(project: Path) -> None:
    r = run_cli(["check"], env=clean_env(), cwd=project)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: ")
    write(project / "templates/config.json.j2", "{% if %}")
    r = run_cli(["check"], env=clean_env(), cwd=project)
    assert r.returncode == 2 and "template syntax error" in r.stderr


def test_manifest_errors_all_reported_with_lines(tmp_path: Path) -> None:
    write(
        tmp_path / "m.yaml",
        """\
version: 1
bogus: 1
providers:
  vault2: {type: nosuch}
secrets:
  a: nosuchscheme://x
  b: "vault://"
  c: {ref: env://X, colour: red}
  bad-name: env://Y
templates:
  - {src: missing.j2, dest: a}
  - {src: t.j2, dest: /etc/passwd}
  - {src: t.j2, dest: ../up}
  - {src: t.j2, dest: same}
files:
  - {secret: c, dest: same}
  - {secret: undeclared, dest: z}
""",
    )
    write(tmp_path / "t.j2", "x")
    r = run_cli(["check", "-m", str(tmp_path / "m.yaml")], env=clean_env())
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if "m.yaml:" in line]
    expected = {
        2: "unknown key 'bogus'",
        4: "unknown type 'nosuch'",
        6: "unknown scheme 'nosuchscheme'",
        7: "empty path",
        8: "unknown key 'colour'",
        9: "bad secret name 'bad-name'",
        11: "template file 'missing.j2' not found",
        12: "must be relative",
        13: "escapes the output directory",
        16: "is written twice",
        17: "must name a declared secret",
    }
    for line_no, text in expected.items():
        assert any(f"m.yaml:{line_no}:" in line and text in line for line in lines), (line_no, text, lines)
    assert "Traceback" not in r.stderr


def test_unset_variable_in_reference_is_bad_input(tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  a: env://${STAGE}_PASSWORD\n")
    r = run_cli(["render", "-o", str(tmp_path / "o"), "--allow-disk"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2 and "STAGE is not set" in r.stderr
    r = run_cli(
        ["render", "-o", str(tmp_path / "o"), "--allow-disk", "--log-level", "debug"],
        env=clean_env(STAGE="PROD", PROD_PASSWORD="x1"),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "ref=env://PROD_PASSWORD" in r.stderr
    # check does not need the variable
    assert run_cli(["check"], env=clean_env(), cwd=tmp_path).returncode == 0


def test_missing_manifest_and_bad_yaml(tmp_path: Path) -> None:
    r = run_cli(["render", "-m", str(tmp_path / "nope.yaml"), "-o", str(tmp_path)], env=clean_env())
    assert r.returncode == 2 and "manifest not found" in r.stderr
    write(tmp_path / "bad.yaml", "version: 1\nsecrets: [\n")
    r = run_cli(["check", "-m", str(tmp_path / "bad.yaml")], env=clean_env())
    assert r.returncode == 2 and "bad.yaml:" in r.stderr and "invalid YAML" in r.stderr


def test_healthcheck_not_ready(tmp_path: Path) -> None:
    r = run_cli(["healthcheck", "-o", str(tmp_path)], env=clean_env())
    assert r.returncode == 1 and "no completed render" in r.stderr


def test_audit_file_has_one_record_per_reference_and_no_values(project: Path) -> None:
    audit = project / "audit.jsonl"
    r = run_cli(
        ["render", "-o", str(project / "o"), "--allow-disk", "--audit-file", str(audit)],
        env=env_for(project),
        cwd=project,
    )
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert sorted(rec["secret"] for rec in records) == ["api", "db_pass", "nested", "user"]
    for rec in records:
        assert {"ref", "provider", "version", "duration_ms", "outcome"} <= rec.keys()
    # api and nested come from one document, served by one read
    assert all(rec["shared_read"] for rec in records if rec["secret"] in ("api", "nested"))
    assert_no_canary(audit.read_text())


def test_exec_replaces_process_with_env_and_exit_code(project: Path) -> None:
    script = 'test "$DB_PASSWORD" = "$EXPECT" && test -z "${INITFETCH_OUT:-}" && exit 7'
    env = env_for(project, EXPECT=CANARY, INITFETCH_OUT=str(project / "o"), INITFETCH_ALLOW_DISK="1")
    r = run_cli(["exec", "--", "sh", "-c", script], env=env, cwd=project)
    assert r.returncode == 7, r.stderr
    assert_no_canary(r.stderr)


def test_exec_missing_secret_never_starts_app(project: Path, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    env = env_for(project, INITFETCH_OUT=str(project / "o"), INITFETCH_ALLOW_DISK="1")
    del env["DB_USER"]
    r = run_cli(["exec", "--", "touch", str(marker)], env=env, cwd=project)
    assert r.returncode == 3
    assert not marker.exists()


def test_exec_command_not_found_is_127(project: Path) -> None:
    env = env_for(project, INITFETCH_OUT=str(project / "o"), INITFETCH_ALLOW_DISK="1")
    assert run_cli(["exec", "--", "/no/such/binary"], env=env, cwd=project).returncode == 127
    assert run_cli(["exec"], env=env, cwd=project).returncode == 2


def test_zero_config_exec_resolves_prefixed_env_only(tmp_path: Path) -> None:
    write(tmp_path / "pw", CANARY + "\n")
    env = clean_env(
        DB_PASSWORD=f"initfetch+file://{tmp_path}/pw",
        API_TOKEN="initfetch+env://RAW_TOKEN#k",
        RAW_TOKEN=json.dumps({"k": CANARY2}),
        DATABASE_URL="postgres://user@db/app",  # an ordinary URL stays as it is
    )
    out = tmp_path / "env.txt"
    r = run_cli(
        [
            "exec",
            "--",
            "sh",
            "-c",
            f'printf "%s\\n%s\\n%s" "$DB_PASSWORD" "$API_TOKEN" "$DATABASE_URL" > {out}',
        ],
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert out.read_text().splitlines() == [CANARY, CANARY2, "postgres://user@db/app"]
    assert_no_canary(r.stderr)
    env["DB_PASSWORD"] = "initfetch+file:///no/such/file"
    r = run_cli(["exec", "--", "true"], env=env, cwd=tmp_path)
    assert r.returncode == 3 and "environment: DB_PASSWORD: not-found" in r.stderr
    assert "DB_PASSWORD: DB_PASSWORD" not in r.stderr


def test_env_from_spreads_a_map(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  app: env://APP_JSON\nenv_from:\n  - {secret: app, prefix: APP_}\n",
    )
    env = clean_env(APP_JSON=json.dumps({"db/password": CANARY, "api-key": "k"}))
    out = tmp_path / "e"
    r = run_cli(
        ["exec", "--", "sh", "-c", f'echo "$APP_DB_PASSWORD $APP_API_KEY" > {out}'], env=env, cwd=tmp_path
    )
    # APP_JSON is a string, not a map: env_from needs a map document
    assert r.returncode == 2 and "not a map" in r.stderr
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  app: env://APP_JSON#/cfg\nenv_from:\n  - {secret: app, prefix: APP_}\n",
    )
    env["APP_JSON"] = json.dumps({"cfg": {"db/password": CANARY, "api-key": "k"}})
    r = run_cli(
        ["exec", "--", "sh", "-c", f'echo "$APP_DB_PASSWORD $APP_API_KEY" > {out}'], env=env, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert out.read_text().strip() == f"{CANARY} k"


@pytest.mark.parametrize("value", [CANARY, "x"])
def test_no_value_in_output_even_when_short(tmp_path: Path, value: str) -> None:
    write(
        tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  s: env://S\nenv:\n  OUT: 'v={{ secrets.s }}'\n"
    )
    r = run_cli(["preview"], env=clean_env(S=value), cwd=tmp_path)
    assert r.returncode == 0
    assert "OUT=v=<secret:s>" in r.stdout


def test_symlinked_output_is_not_followed(project: Path, tmp_path: Path) -> None:
    out = project / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, out / "db_password")
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env_for(project), cwd=project)
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "keep"
    assert not (out / "db_password").is_symlink()
    # a symlinked directory on the way to a dest is refused (exit 5), not followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "config/app.json").unlink()
    (out / "config").rmdir()
    os.symlink(elsewhere, out / "config")
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env_for(project), cwd=project)
    assert r.returncode == 5 and "symlink" in r.stderr
    assert list(elsewhere.iterdir()) == []


def test_owner_and_group_are_applied(tmp_path: Path) -> None:
    from tests.conftest import require

    require(os.geteuid() == 0, "needs root to chown")
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  s: env://S\nfiles:\n"
        "  - {secret: s, dest: s, owner: 65532, group: '65533', mode: '0440'}\n",
    )
    r = run_cli(["render", "-o", str(tmp_path / "o"), "--allow-disk"], env=clean_env(S="v"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    st = (tmp_path / "o/s").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65532, 65533, 0o440)


def test_json_logs_on_failure_carry_no_values(project: Path) -> None:
    env = env_for(project, INITFETCH_LOG_FORMAT="json")
    env["API_JSON"] = json.dumps({"wrong": CANARY2})
    r = run_cli(["render", "-o", str(project / "o"), "--allow-disk"], env=env, cwd=project)
    assert r.returncode == 3
    records = [json.loads(line) for line in r.stderr.splitlines()]
    assert any(rec.get("level") == "error" and "missing-key" in rec.get("msg", "") for rec in records)
    assert_no_canary(r.stderr)


@pytest.mark.parametrize("mode", [[], ["--supervise"]])
def test_exec_not_executable_is_126(project: Path, mode: list[str]) -> None:
    script = write(project / "not-executable.sh", "#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    env = env_for(project, INITFETCH_OUT=str(project / "o"), INITFETCH_ALLOW_DISK="1")
    r = run_cli(["exec", *mode, "--", str(script)], env=env, cwd=project)
    assert r.returncode == 126 and "cannot execute" in r.stderr
    assert run_cli(["exec", *mode, "--", "/no/such/binary"], env=env, cwd=project).returncode == 127


def render_value(tmp_path: Path, value: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        ["render", "-o", str(tmp_path / "o"), "--allow-disk"], env=clean_env(S=value), cwd=tmp_path
    )


def rendered_once(tmp_path: Path, *dests: str) -> Path:
    """A manifest writing secret S to each dest, rendered once with S=old; returns OUT_DIR."""
    files = "".join(f"  - {{secret: s, dest: {d}}}\n" for d in dests)
    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  s: env://S\nfiles:\n" + files)
    assert render_value(tmp_path, "old").returncode == 0
    return tmp_path / "o"


def test_staging_failure_replaces_nothing(tmp_path: Path) -> None:
    out = rendered_once(tmp_path, "a", "sub/b")
    (out / "sub/b").unlink()
    (out / "sub").rmdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "sub")
    r = render_value(tmp_path, "new")
    assert r.returncode == 5 and "symlink" in r.stderr
    assert (out / "a").read_text() == "old"  # staged first, but never renamed into place
    assert (out / ".initfetch-ready.json").exists()  # the previous complete render still stands
    assert sorted(p.name for p in out.iterdir()) == [".initfetch-ready.json", "a", "sub"]


def test_unknown_owner_fails_before_any_backend(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  s: vault://secret/app#k\nfiles:\n"
        "  - {secret: s, dest: a, owner: no-such-user-x}\n",
    )
    # VAULT_ADDR points at a closed port: had initfetch asked Vault, it would wait for the deadline.
    env = clean_env(VAULT_ADDR="http://127.0.0.1:9", VAULT_TOKEN="t", INITFETCH_TIMEOUT="30")
    r = run_cli(["render", "-o", str(tmp_path / "o"), "--allow-disk"], env=env, cwd=tmp_path, timeout=20)
    assert r.returncode == 5 and "unknown user 'no-such-user-x'" in r.stderr
    assert "audit" not in r.stderr


def test_sigterm_while_resolving_exits_143(tmp_path: Path) -> None:
    import signal

    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  s: vault://secret/app#k\n")
    env = clean_env(VAULT_ADDR="http://127.0.0.1:9", VAULT_TOKEN="t")
    returncode, stderr = render_then_sigterm(tmp_path, env, "--timeout", "60")
    assert returncode == 128 + signal.SIGTERM, stderr
    assert "terminated by SIGTERM" in stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("INITFETCH_TIMEOUT", "abc", "invalid float value"),
        ("INITFETCH_CONCURRENCY", "x", "not a whole number"),
        ("INITFETCH_LOG_FORMAT", "xml", "INITFETCH_LOG_FORMAT must be one of"),
        ("INITFETCH_LOG_LEVEL", "verbose", "INITFETCH_LOG_LEVEL must be one of"),
    ],
)
def test_bad_env_twins_are_usage_errors(tmp_path: Path, name: str, value: str, message: str) -> None:
    r = run_cli(["render", "-o", str(tmp_path)], env=clean_env(**{name: value}), cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_retries_continue_until_the_deadline(tmp_path: Path) -> None:
    import time

    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  s: vault://secret/app#k\n")
    env = clean_env(VAULT_ADDR="http://127.0.0.1:9", VAULT_TOKEN="t")
    start = time.monotonic()
    r = run_cli(
        ["render", "-o", str(tmp_path / "o"), "--allow-disk", "--timeout", "4"], env=env, cwd=tmp_path
    )
    elapsed = time.monotonic() - start
    assert r.returncode == 4
    assert elapsed > 3.5, f"gave up {4 - elapsed:.1f}s before the deadline"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &a [*a]\n", "1:4: recursive YAML alias"),
        ("version: 1\nsecrets: &s {y: *s}\n", "recursive YAML alias"),
        ("version: 1\nproviders: {vault: {type: [1]}}\n", "unknown type a list"),
        ("version: true\n", "'version: 1' is required"),
        ('version: 1\nsecrets: {a: "env://${X"}\n', "'${' without a closing '}'"),
        (
            "version: 1\nsecrets: {a: env://A}\nfiles: [{secret: a, dest: x}, {secret: a, dest: x/y}]\n",
            "need the same path as a file and as a directory",
        ),
    ],
)
def test_odd_manifests_are_bad_input_with_a_location(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "m.yaml", text)
    r = run_cli(["check", "-m", str(tmp_path / "m.yaml")], env=clean_env())
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "m.yaml:" in r.stderr and "internal error" not in r.stderr


def test_directory_in_the_way_replaces_nothing_and_stale_temps_are_swept(tmp_path: Path) -> None:
    out = rendered_once(tmp_path, "a1", "z9")
    (out / "z9").unlink()
    (out / "z9").mkdir()
    stale = out / ".initfetch-tmp-0123456789abcdef01234567"  # what a SIGKILLed run leaves behind
    stale.write_text("old secret value")
    r = render_value(tmp_path, "new")
    assert r.returncode == 5 and "z9: cannot write: a directory is in the way" in r.stderr
    assert (out / "a1").read_text() == "old"
    assert (out / ".initfetch-ready.json").exists()
    assert stale.exists()  # a failing render deletes nothing; the next complete one sweeps
    (out / "z9").rmdir()
    assert render_value(tmp_path, "new").returncode == 0
    assert not stale.exists()
    assert not [
        p.name for p in out.iterdir() if ".initfetch-" in p.name and p.name != ".initfetch-ready.json"
    ]


def test_sigterm_during_a_slow_render_is_not_swallowed(tmp_path: Path) -> None:
    import signal

    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  s: env://S\ntemplates:\n  - {src: t.j2, dest: t}\n",
    )
    write(
        tmp_path / "t.j2", "{% for i in range(100000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}x"
    )
    returncode, stderr = render_then_sigterm(tmp_path, clean_env(S="v"))
    assert returncode == 128 + signal.SIGTERM, stderr
    assert not (tmp_path / "o").exists()


def render_then_sigterm(tmp_path: Path, env: dict[str, str], *extra: str) -> tuple[int, str]:
    """Start `render`, send SIGTERM 1.5 s later (while it is still busy), return its exit and stderr."""
    import signal
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "initfetch", "render", "-o", str(tmp_path / "o"), "--allow-disk", *extra],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    return proc.returncode, stderr
