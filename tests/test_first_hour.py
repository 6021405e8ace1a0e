"""Issue 12: every flag, message and default does what it says, from a new user's first hour.

Each test fails without its fix: options before the command, the audit file
whatever the console level, help pages, `--concurrency` bounds, run messages,
exec's command lookup before any backend, and `initfetch init`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from initfetch.logs import setup
from initfetch.manifest import load_manifest
from initfetch.providers.base import Document, FetchContext, Lease, Provider
from initfetch.redact import Redactor
from initfetch.reference import DocKey
from initfetch.resolve.resolver import Resolver
from tests.backends.vault_double import TOKEN, VaultDouble
from tests.backends.vault_double import vault_double as vault_double  # fixture
from tests.helpers import CANARY, clean_env, run_cli, write

MANIFEST = "version: 1\nsecrets:\n  a: env://A\n  b: env://B\nfiles:\n  - {secret: a, dest: a}\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "initfetch.yaml", MANIFEST)
    return tmp_path


def env() -> dict[str, str]:
    return clean_env(A=CANARY, B="plain-b")


def test_options_before_the_command_are_honoured(project: Path) -> None:
    out = str(project / "o")
    r = run_cli(["--log-format", "json", "render", "-o", out, "--allow-disk"], env=env(), cwd=project)
    assert r.returncode == 0, r.stderr
    assert all(json.loads(line)["level"] for line in r.stderr.splitlines())
    r = run_cli(["--log-level", "error", "render", "-o", out, "--allow-disk"], env=env(), cwd=project)
    assert r.returncode == 0 and r.stderr == ""
    audit = project / "a.jsonl"
    r = run_cli(["--audit-file", str(audit), "render", "-o", out, "--allow-disk"], env=env(), cwd=project)
    assert r.returncode == 0, r.stderr
    assert len(audit.read_text().splitlines()) == 2
    # and after the command, the command's own value wins as before
    r = run_cli(
        ["--log-level", "error", "render", "--log-level", "info", "-o", out, "--allow-disk"],
        env=env(),
        cwd=project,
    )
    assert "wrote 1 file(s)" in r.stderr


def test_audit_file_does_not_depend_on_the_console_level(project: Path) -> None:
    audit = project / "audit.jsonl"
    args = [
        "render",
        "-o",
        str(project / "o"),
        "--allow-disk",
        "--log-level",
        "warning",
        "--audit-file",
        str(audit),
    ]
    r = run_cli(args, env=env(), cwd=project)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert sorted(rec["secret"] for rec in records) == ["a", "b"]
    assert CANARY not in audit.read_text()


def test_default_console_has_no_line_per_secret_and_says_what_it_wrote(project: Path) -> None:
    r = run_cli(["render", "-o", str(project / "o"), "--allow-disk"], env=env(), cwd=project)
    assert r.returncode == 0, r.stderr
    assert "audit" not in r.stderr
    assert "wrote 1 file(s) and the completion marker" in r.stderr
    r = run_cli(
        ["render", "-o", str(project / "o"), "--allow-disk", "--log-level", "debug"], env=env(), cwd=project
    )
    assert r.stderr.count("initfetch: audit:") == 2


def test_audit_records_of_a_lease_carry_duration_and_renewable(tmp_path: Path) -> None:
    class Leasing(Provider):
        type_name = "env"

        def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
            return Document(
                {"user": "u1", "password": "p-" + CANARY}, lease=Lease("database/creds/app/x1", 3600, True)
            )

    write(tmp_path / "m.yaml", "version: 1\nsecrets:\n  u: env://X#user\n  p: env://X#password\n")
    manifest = load_manifest(tmp_path / "m.yaml", {})
    audit = tmp_path / "audit.jsonl"
    setup(Redactor(), level="warning", audit_file=str(audit))
    try:
        resolver = Resolver(manifest, {}, Redactor(), timeout=5)
        resolver.instances["env"] = Leasing("env", {}, {})
        resolver.resolve()
    finally:
        import logging

        logging.getLogger("initfetch.audit").handlers.clear()
        logging.getLogger().handlers.clear()
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {(r["lease_id"], r["lease_duration"], r["renewable"]) for r in records} == {
        ("database/creds/app/x1", 3600, True)
    }


@pytest.mark.parametrize("value", ["0", "-3"])
def test_concurrency_must_be_positive(project: Path, value: str) -> None:
    r = run_cli(["render", "--concurrency", value, "-o", str(project / "o")], env=env(), cwd=project)
    assert r.returncode == 2 and "at least 1" in r.stderr
    r = run_cli(
        ["render", "-o", str(project / "o")], env={**env(), "INITFETCH_CONCURRENCY": value}, cwd=project
    )
    assert r.returncode == 2 and "at least 1" in r.stderr


def test_help_pages_list_only_what_a_command_uses_with_defaults_and_examples() -> None:
    for command in ("check", "healthcheck"):
        page = run_cli([command, "--help"]).stdout
        assert "--audit-file" not in page
    assert "--allow-disk" not in run_cli(["healthcheck", "--help"]).stdout
    for command in ("render", "exec", "preview", "check", "healthcheck", "init"):
        page = run_cli([command, "--help"]).stdout
        assert "examples:" in page, command
        assert "$INITFETCH_LOG_LEVEL, info" in " ".join(page.split()), command


def test_exec_looks_the_command_up_before_any_backend(tmp_path: Path, vault_double: VaultDouble) -> None:
    vault_double.kv2["secret/app"] = {"password": CANARY}
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  p: vault://secret/app#password\nenv:\n  P: '{{ secrets.p }}'\n",
    )
    environ = clean_env(VAULT_ADDR=vault_double.url, VAULT_TOKEN=TOKEN, HOME=str(tmp_path))
    r = run_cli(["exec", "--", "no-such-command-xyz"], env=environ, cwd=tmp_path)
    assert r.returncode == 127 and "command not found: no-such-command-xyz" in r.stderr
    script = write(tmp_path / "not-executable.sh", "echo hi\n")
    r = run_cli(["exec", "--", str(script)], env=environ, cwd=tmp_path)
    assert r.returncode == 126
    assert vault_double.seen == []  # no lease, no read: nothing was asked


def test_init_writes_a_working_starter_and_never_overwrites(tmp_path: Path) -> None:
    r = run_cli(["init", "--dir", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    manifest = tmp_path / "initfetch.yaml"
    for args in (
        ["check"],
        ["preview", "--offline"],
        ["render", "-o", str(tmp_path / "out"), "--allow-disk"],
    ):
        r = run_cli([*args, "-m", str(manifest)], cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
    assert json.loads((tmp_path / "out/config.json").read_text()) == {"api_token": "dev-token"}
    manifest.write_text("version: 1\nsecrets: {}\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    r = run_cli(["init", "--dir", str(tmp_path)])
    assert r.returncode == 2 and "never overwrites" in r.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert os.listdir(tmp_path / "templates") == ["config.json.j2"]


def test_preview_into_a_closed_pipe_stops_quietly(project: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "initfetch", "preview"],
        env=env(),
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and "internal error" not in err


def test_a_missing_output_directory_is_named_as_missing(project: Path) -> None:
    r = run_cli(["render", "-o", str(project / "no/such/dir")], env=env(), cwd=project)
    assert r.returncode == 5
    assert "does not exist, and would be created on" in r.stderr and "-o" in r.stderr


def test_check_catches_what_an_offline_render_would(tmp_path: Path) -> None:
    for template in (
        "{{ secret.a }}",
        "{{ undefined_thing }}",
        "{{ secrets.a.__class__ }}",
        "{% include 'nope.j2' %}",
    ):
        write(
            tmp_path / "initfetch.yaml",
            MANIFEST.replace("files:", "templates:\n  - {src: t.j2, dest: t}\nfiles:"),
        )
        write(tmp_path / "t.j2", template)
        r = run_cli(["check"], env=clean_env(), cwd=tmp_path)
        assert r.returncode == 2, (template, r.stderr)
        assert "t.j2:1" in r.stderr, r.stderr
    # a template that only needs real values (b64decode of a secret) is not a check failure
    write(tmp_path / "t.j2", "{{ secrets.a | b64decode }}")
    assert run_cli(["check"], env=clean_env(), cwd=tmp_path).returncode == 0


def test_the_repository_example_previews_offline_anywhere() -> None:
    from tests.helpers import REPO

    r = run_cli(["preview", "--offline"], env=clean_env(), cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "APP_*=<secret:app_params/*>" in r.stdout
    assert "size known only online" in r.stdout
    assert run_cli(["check"], env=clean_env(), cwd=REPO).returncode == 0


def test_masked_preview_shows_real_sizes_and_marks_derived_placeholders(project: Path) -> None:
    write(
        project / "initfetch.yaml",
        MANIFEST + "templates:\n  - {src: t.j2, dest: t}\nenv:\n  A_B64: '{{ secrets.a | b64encode }}'\n",
    )
    write(project / "t.j2", "token={{ secrets.a }}\n")
    r = run_cli(["preview"], env=env(), cwd=project)
    assert r.returncode == 0, r.stderr
    assert f"--- file t (mode 0400, {len('token=' + CANARY) + 1} bytes)" in r.stdout
    assert "A_B64=<secret:a|b64>" in r.stdout
    assert CANARY not in r.stdout
