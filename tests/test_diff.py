"""`initfetch diff`: what a render would change in OUT_DIR, against a real OpenBao.

The hard case: OUT_DIR holds an OLD value (an earlier render's, rotated since at the
backend) that this run never resolves, so no scrubbing could mask it. The diff must
never print a byte of an old file: old lines appear in their masked form or as a note.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tests.backends.openbao as openbao_backend
from initfetch import diff
from tests.backends.openbao import OpenBao
from tests.helpers import clean_env, run_cli, write

openbao = openbao_backend.openbao

CANARY_DIFF_OLD = "CANARY-diff-old-3c9e71-rotated-away"
CANARY_DIFF_NEW = "CANARY-diff-new-b02f5d-current"
CANARY_DIFF_EDIT = "CANARY-diff-edit-77aa10-typed-by-hand"

TEMPLATE = """\
[db]
host = db.internal
user = {{ secrets.user }}
password = {{ secrets.db }}
url = postgres://{{ secrets.user }}:{{ secrets.db }}@db/app
pool = 5
"""

MANIFEST = """\
version: 1
secrets:
  db: vault://secret/diff/app#password
  user: vault://secret/diff/app#user
templates:
  - {src: config.ini.j2, dest: config.ini}
files:
  - {secret: db, dest: db_password}
env:
  DB_PASSWORD: "{{ secrets.db }}"
"""


@pytest.fixture
def vault(openbao: OpenBao) -> OpenBao:
    kv2 = openbao.client().secrets.kv.v2
    kv2.delete_metadata_and_all_versions("diff/app")
    kv2.create_or_update_secret("diff/app", {"password": CANARY_DIFF_OLD, "user": "app"})
    return openbao


def env_for(server: OpenBao, tmp_path: Path) -> dict[str, str]:
    return clean_env(VAULT_ADDR=server.url, VAULT_TOKEN=server.root_token, HOME=str(tmp_path))


def setup(tmp_path: Path, server: OpenBao) -> tuple[Path, dict[str, str]]:
    write(tmp_path / "initfetch.yaml", MANIFEST)
    write(tmp_path / "config.ini.j2", TEMPLATE)
    env = env_for(server, tmp_path)
    out = tmp_path / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert CANARY_DIFF_OLD in (out / "config.ini").read_text()
    return out, env


def test_diff_after_a_rotation_shows_versions_and_masked_lines_never_the_old_value(
    tmp_path: Path, vault: OpenBao
) -> None:
    out, env = setup(tmp_path, vault)
    vault.client().secrets.kv.v2.create_or_update_secret(
        "diff/app", {"password": CANARY_DIFF_NEW, "user": "app"}
    )
    # A line typed into the rendered file by hand, with a value in it: no template line matches it.
    text = (out / "config.ini").read_text().replace("pool = 5\n", f"pool = 5\n# {CANARY_DIFF_EDIT}\n")
    (out / "config.ini").chmod(0o600)
    (out / "config.ini").write_text(text)

    r = run_cli(["diff", "-o", str(out), "--exit-code"], env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    for canary in (CANARY_DIFF_OLD, CANARY_DIFF_NEW, CANARY_DIFF_EDIT):
        assert canary not in r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "db: version 1 -> 2" in lines and "user: version 1 -> 2" in lines
    assert "changed  config.ini" in lines and "changed  db_password" in lines
    # The old password line is shown in its masked form, the same placeholder on both sides.
    assert "-password = <secret:db>" in lines and "+password = <secret:db>" in lines
    assert "-url = postgres://<secret:user>:<secret:db>@db/app" in lines
    assert "-(line 7 differs; not shown: it may hold an earlier value)" in lines
    assert " host = db.internal" in lines  # context comes from the masked render
    assert "(binary" not in r.stdout

    # Nothing was written: OUT_DIR still holds the old render.
    assert CANARY_DIFF_OLD in (out / "db_password").read_text()


def test_no_difference_after_a_render_and_exit_code_off(tmp_path: Path, vault: OpenBao) -> None:
    out, env = setup(tmp_path, vault)
    r = run_cli(["diff", "-o", str(out), "--exit-code"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "no difference" in r.stderr
    vault.client().secrets.kv.v2.create_or_update_secret(
        "diff/app", {"password": CANARY_DIFF_NEW, "user": "app"}
    )
    r = run_cli(["diff", "-o", str(out)], env=env, cwd=tmp_path)  # without --exit-code: 0
    assert r.returncode == 0, r.stderr
    assert "db: version 1 -> 2" in r.stdout


def test_added_removed_files_and_env_names_and_template_edits(tmp_path: Path, vault: OpenBao) -> None:
    out, env = setup(tmp_path, vault)
    manifest = MANIFEST.replace(
        "  - {secret: db, dest: db_password}\n", "  - {secret: user, dest: db_user}\n"
    )
    manifest = manifest.replace("DB_PASSWORD:", "DATABASE_PASSWORD:")
    write(tmp_path / "initfetch.yaml", manifest)
    # A template line removed, one added; the values are the same.
    write(tmp_path / "config.ini.j2", TEMPLATE.replace("host = db.internal\n", "") + "timeout = 30\n")
    r = run_cli(["diff", "-o", str(out), "--exit-code"], env=env, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert "added    db_user" in lines and "removed  db_password" in lines
    assert "added    DATABASE_PASSWORD" in lines and "removed  DB_PASSWORD" in lines
    assert "-(line 2 differs; not shown: it may hold an earlier value)" in lines
    assert "+timeout = 30" in lines
    assert " password = <secret:db>" in lines
    assert not any(line.startswith("--- secrets") for line in lines)  # no version changed


def test_an_empty_out_dir_reports_everything_added(tmp_path: Path, vault: OpenBao) -> None:
    write(tmp_path / "initfetch.yaml", MANIFEST)
    write(tmp_path / "config.ini.j2", TEMPLATE)
    r = run_cli(
        ["diff", "-o", str(tmp_path / "none"), "--exit-code"], env=env_for(vault, tmp_path), cwd=tmp_path
    )
    assert r.returncode == 1, r.stderr
    assert "holds no completed render" in r.stdout
    assert "+password = <secret:db>" in r.stdout.splitlines()


# --- the old side, directly ------------------------------------------------------------------


def keep() -> re.Pattern[str]:
    return re.compile(r"<secret:(?:db|user)(?:[/|][^<>\n]*)?>")


def test_old_lines_are_masked_when_they_match_a_template_line_else_noted() -> None:
    old = ["a = 1", f"password = {CANARY_DIFF_OLD}", f"{CANARY_DIFF_OLD}", "x = <secret:db> y"]
    shown = ["password = <secret:db>", "a = 2"]
    lines = diff._old_side(old, (0, 4), shown, frozenset(shown), keep())
    assert lines == [
        "-(line 1 differs; not shown: it may hold an earlier value)",
        "-password = <secret:db>",
        "-(lines 3-4 differ; not shown: they may hold an earlier value)",
    ]
    assert diff._old_side(["pool = 5"], (0, 1), [], frozenset({"pool = 5"}), keep()) == ["-pool = 5"]
    assert diff._old_side(["a" * 10000], (0, 1), ["<secret:db>x"], frozenset(), keep()) == [
        "-(line 1 differs; not shown: it may hold an earlier value)"
    ]


def test_a_value_that_spans_lines_is_not_diffed_line_by_line() -> None:
    inputs = diff.Inputs(diff.Rendered({}, {}), diff.Rendered({}, {}), {}, keep())
    lines = diff._changed(b"k = a\nb\n", b"k = c\nd\ne\n", b"k = <secret:db>\n", inputs)
    assert lines == ["(the file differs: 2 -> 3 lines; not shown line by line)"]
    assert diff._changed(b"\xff\x00", b"x", b"x", inputs) == ["(binary file differs: content not shown)"]
    long = b"".join(b"line %d\n" % i for i in range(diff.MAX_DIFF_LINES + 1))
    assert diff._changed(long, long + b"x\n", long + b"x\n", inputs) == [
        "(the file differs: 20001 -> 20002 lines; too long to diff line by line)"
    ]


def test_diff_revokes_the_lease_a_dynamic_read_created(tmp_path: Path, vault: OpenBao) -> None:
    from tests.test_scan import start_rabbitmq_mount

    api = start_rabbitmq_mount(vault, "rmq-diff")
    try:
        write(
            tmp_path / "initfetch.yaml",
            "version: 1\nsecrets:\n  user: vault://rmq-diff/creds/app#username\n"
            "files:\n  - {secret: user, dest: user}\n",
        )
        out = tmp_path / "out"
        r = run_cli(["diff", "-o", str(out), "--exit-code"], env=env_for(vault, tmp_path), cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        assert "added    user" in r.stdout.splitlines()
        assert "user: dynamic (lease rmq-diff/creds/app/" in r.stdout
        created = [p for m, p, _ in api.requests if m == "PUT" and p.startswith("/api/users/")]
        deleted = [p for m, p, _ in api.requests if m == "DELETE" and p.startswith("/api/users/")]
        assert len(created) == 1 and deleted == created
        assert not out.exists()  # nothing written
    finally:
        api.stop()


def test_a_file_this_user_cannot_read_is_said_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The suite runs as root here, which reads every file: the refusal is the kernel's EACCES.
    write(tmp_path / "config.ini", "x\n")
    real_open = diff.os.open

    def refuse(path: object, flags: int, *args: object) -> int:
        if str(path).endswith("config.ini"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(diff.os, "open", refuse)
    new = diff.Inputs(
        diff.Rendered({"config.ini": b"y\n"}, {}), diff.Rendered({"config.ini": b"y\n"}, {}), {}, keep()
    )
    report = diff.compare(tmp_path, new)
    assert report.files == {"config.ini": "unreadable"} and report.differs
