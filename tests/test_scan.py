"""`initfetch scan`: files under PATH that hold a secret value or an encoded form of one.

Against a real OpenBao: the manifest's values (KV v2 and a dynamic rabbitmq lease, which
the scan revokes), or the values of a render in OUT_DIR with no backend asked. The
report names files, lines and secrets, never a value.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

import tests.backends.openbao as openbao_backend
from initfetch import redact, scan
from initfetch.needles import Needles, value_forms
from tests.backends.local_http import free_port
from tests.backends.openbao import FakeAPI, OpenBao, start_fake_rabbitmq
from tests.helpers import assert_no_canary, clean_env, run_cli, write

openbao = openbao_backend.openbao

CANARY_SCAN = "CANARY-scan-5e7d21-never-print"
CANARY_SCAN_JSON = 'CANARY-scan "quoted"\\ value/2'
CANARIES = (CANARY_SCAN, CANARY_SCAN_JSON)


@pytest.fixture(scope="module")
def vault(openbao: OpenBao) -> OpenBao:
    kv2 = openbao.client().secrets.kv.v2
    kv2.create_or_update_secret(
        "scan/app", {"password": CANARY_SCAN, "quoted": CANARY_SCAN_JSON, "pin": "1234"}
    )
    return openbao


def env_for(server: OpenBao, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(VAULT_ADDR=server.url, VAULT_TOKEN=server.root_token, HOME=str(tmp_path), **extra)


MANIFEST = """\
version: 1
secrets:
  db: vault://secret/scan/app#password
  quoted: vault://secret/scan/app#quoted
  pin: vault://secret/scan/app#pin
  local: {ref: "env://NOT_SET", default: "a-default-in-the-manifest"}
"""


# --- forms and chunks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        CANARY_SCAN,
        CANARY_SCAN_JSON,
        "line one of it\nline two of it\r\n",
        "ünïcödé-välue",
        b"\xff\x00binary",
        12345678,
    ],
)
def test_forms_include_every_form_the_redactor_masks(value: object) -> None:
    ours = {form for form, _ in value_forms(value)}
    theirs = {f.encode("utf-8", "surrogatepass") for f in redact._forms(value) if len(f) >= redact.MIN_LEN}
    assert theirs <= ours


def test_a_value_split_between_two_chunks_is_found_on_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needles, short = scan.from_values({"db": CANARY_SCAN}, 8)
    assert not short
    lines = [f"line {i} " + ("x" * (i % 13)) for i in range(200)]
    for i in (3, 57, 58, 199):
        lines[i] += CANARY_SCAN
    lines[100] += base64.b64encode(CANARY_SCAN.encode()).decode()
    path = write(tmp_path / "f.txt", "\n".join(lines))
    for chunk in (7, 31, 64, 4096):  # smaller than a value, and every offset in between
        monkeypatch.setattr(scan, "CHUNK", chunk)
        report = scan.scan([path], needles, scan.Options())
        assert [(f.line, f.label) for f in report.findings] == [
            (4, "db"),
            (58, "db"),
            (59, "db"),
            (101, "db (base64)"),
            (200, "db"),
        ]
        assert report.bytes == path.stat().st_size


def test_nothing_to_find_and_no_values_are_not_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "f.txt", "plain text\n")
    assert scan.scan([path], Needles({}), scan.Options()).findings == []
    assert scan.scan([path], scan.from_values({"db": CANARY_SCAN}, 8)[0], scan.Options()).files == 1


# --- the command -----------------------------------------------------------------------------


def plant(repo: Path) -> None:
    """A repository with the values in many forms and places."""
    write(repo / "config/app.env", f"USER=app\nPASSWORD={CANARY_SCAN}\n")
    write(repo / "config/app.json", json.dumps({"x": CANARY_SCAN_JSON}) + "\n")
    write(repo / "docs/notes.md", "intro\n\nbasic " + base64.b64encode(CANARY_SCAN.encode()).decode() + "\n")
    write(repo / "docs/url.txt", "a\nb\nhttps://h/?p=" + quote(CANARY_SCAN_JSON, safe="") + "\n")
    write(repo / "clean.txt", "nothing here but a-default-in-the-manifest and 1234\n")
    write(repo / ".git/config", CANARY_SCAN)  # version control: skipped
    write(repo / "outside/held.txt", CANARY_SCAN)
    os.symlink(repo / "outside/held.txt", repo / "config/link.txt")  # not followed
    (repo / "bin").mkdir()
    (repo / "bin/blob.bin").write_bytes(b"\x00\x01ELF\n\n" + CANARY_SCAN.encode() + b"\x00")
    write(repo / f"named-{CANARY_SCAN}.txt", "the name itself is the leak\n" + CANARY_SCAN)


def test_scan_reports_files_lines_and_names_never_values(vault: OpenBao, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    plant(repo)
    write(tmp_path / "initfetch.yaml", MANIFEST)
    r = run_cli(["scan", "--exclude", "outside", "repo"], env=env_for(vault, tmp_path), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stdout.splitlines() == [
        "repo/bin/blob.bin:3: db (binary file)",
        "repo/config/app.env:2: db",
        "repo/config/app.json:1: quoted (JSON-escaped)",
        "repo/docs/notes.md:3: db (base64)",
        "repo/docs/url.txt:3: quoted (URL-encoded)",
        "repo/named-<secret:db>.txt:2: db",
    ]
    # The short pin is not searched (it would match by chance), and says so; a default is not a secret.
    assert "not searched: 1 secret(s) shorter than 8 characters: pin" in r.stderr
    assert "skipped: 1 excluded, 1 symbolic link, 1 version-control directory" in r.stderr
    assert_no_canary(r.stdout, r.stderr, canaries=CANARIES)


def test_a_clean_tree_exits_0_and_limits_apply(vault: OpenBao, tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", MANIFEST)
    write(tmp_path / "src/a.py", "print('hello')\n")
    write(tmp_path / "big/huge.log", ("filler\n" * 200) + CANARY_SCAN)
    env = env_for(vault, tmp_path)
    r = run_cli(["scan", "--max-file-size", "1KiB", "src", "big"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "1 larger than the size limit" in r.stderr
    r = run_cli(["scan", "big"], env={**env, "INITFETCH_SCAN_MIN_LENGTH": "4"}, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout == "big/huge.log:201: db\n", r.stderr
    r = run_cli(["scan", "no/such/dir"], env=env, cwd=tmp_path)
    assert r.returncode == 2 and "no/such/dir: no such file or directory to scan" in r.stderr


def test_scan_revokes_the_leases_its_reads_created(vault: OpenBao, tmp_path: Path) -> None:
    api = start_rabbitmq_mount(vault, "rmq-scan")
    try:
        write(
            tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  user: vault://rmq-scan/creds/app#username\n"
        )
        write(tmp_path / "repo/a.txt", "nothing\n")
        r = run_cli(["scan", "repo"], env=env_for(vault, tmp_path), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        created = [p for m, p, _ in api.requests if m == "PUT" and p.startswith("/api/users/")]
        deleted = [p for m, p, _ in api.requests if m == "DELETE" and p.startswith("/api/users/")]
        assert len(created) == 1 and deleted == created  # the lease was revoked: the user is gone
        assert "revoked 1 lease(s)" in r.stderr
    finally:
        api.stop()


def start_rabbitmq_mount(server: OpenBao, mount: str) -> FakeAPI:
    api = start_fake_rabbitmq()
    c = server.client()
    c.sys.enable_secrets_engine("rabbitmq", path=mount)
    c.adapter.post(
        f"/v1/{mount}/config/connection",
        json={
            "connection_uri": api.url,
            "username": "admin",
            "password": "admin",
            "verify_connection": False,
        },
    )
    c.adapter.post(f"/v1/{mount}/config/lease", json={"ttl": 600, "max_ttl": 3600})
    vhosts = json.dumps({"/": {"configure": ".*", "write": ".*", "read": ".*"}})
    c.adapter.post(f"/v1/{mount}/roles/app", json={"vhosts": vhosts})
    return api


@pytest.fixture
def rendered(vault: OpenBao, tmp_path: Path) -> Iterator[Path]:
    """A real render in tmp_path/out: a JSON template, a dotenv template and a raw file."""
    write(
        tmp_path / "initfetch.yaml",
        MANIFEST + "templates:\n"
        "  - {src: app.json.j2, dest: app.json}\n"
        "  - {src: app.env.j2, dest: app.env}\n"
        "files:\n  - {secret: db, dest: db.txt}\n",
    )
    write(
        tmp_path / "app.json.j2", '{"db": {"password": {{ secrets.quoted | tojson }}}, "host": "db.local"}\n'
    )
    write(tmp_path / "app.env.j2", "export DB_PASSWORD='{{ secrets.db }}'\nHOST=db.local\n")
    out = tmp_path / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env_for(vault, tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    yield out


def test_scan_from_out_dir_needs_no_backend(rendered: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(repo / "leak1.yaml", f"password: {CANARY_SCAN}\n")
    write(repo / "leak2.json", json.dumps({"p": CANARY_SCAN_JSON}) + "\n")
    write(repo / "copy/app.json", (rendered / "app.json").read_text())  # a committed render
    dead = clean_env(VAULT_ADDR=f"http://127.0.0.1:{free_port()}", VAULT_TOKEN="x", HOME=str(tmp_path))
    r = run_cli(["scan", "--from", "out", "."], env=dead, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    got = r.stdout.splitlines()
    assert "./repo/copy/app.json:1: app.json" in got  # the whole rendered file
    # The raw file's value, also a KEY=VALUE line's value: one form, named once (the first file).
    assert "./repo/leak1.yaml:1: app.env#DB_PASSWORD" in got
    assert "./repo/leak2.json:1: app.json#/db/password (JSON-escaped)" in got  # a JSON leaf
    assert not any(line.startswith("./out/") for line in got)  # OUT_DIR itself is not reported
    assert "the output directory scanned from" in r.stderr
    assert_no_canary(r.stdout, r.stderr, canaries=CANARIES)


def test_scan_from_a_directory_without_a_render_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    r = run_cli(["scan", "--from", str(tmp_path / "empty"), str(tmp_path)], env=clean_env())
    assert r.returncode == 2 and "no complete render here" in r.stderr


def test_the_parsers_defaults_are_the_modules() -> None:
    from initfetch import cli
    from initfetch.limits import parse_size

    assert int(cli.SCAN_MIN_LENGTH) == scan.DEFAULT_MIN_LENGTH
    assert parse_size(cli.SCAN_MAX_FILE_SIZE) == scan.DEFAULT_MAX_FILE_SIZE
