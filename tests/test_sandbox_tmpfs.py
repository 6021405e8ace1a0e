"""Writes land on a real tmpfs, in a private mount namespace, as a non-root uid
(unshare + setpriv, see shared/notes/containers.md). Nothing leaks to the host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tests.helpers import CANARY, REPO, assert_no_canary, write

UID = 65532


@pytest.fixture
def sandbox_ready() -> None:
    require(os.geteuid() == 0, "needs root to create mount namespaces")
    require(shutil.which("unshare") and shutil.which("setpriv"), "needs util-linux unshare and setpriv")


def run_sandboxed(tmp_path: Path, cli_args: str) -> subprocess.CompletedProcess[str]:
    """Mount tmpfs dirs privately, bind the repo (and its venv) somewhere uid 65532 can read,
    drop to uid 65532 with no capabilities, run the CLI, then list what landed."""
    python = Path(sys.executable)
    venv = Path(sys.prefix)
    script = f"""
set -eu
mount -t tmpfs -o size=4m,mode=0755 tmpfs /mnt
mkdir -p /mnt/src /mnt/venv /mnt/input /mnt/fetched /mnt/disk
mount --bind {REPO} /mnt/src
mount --bind {venv} /mnt/venv
mount --bind {tmp_path} /mnt/input
mount -o remount,bind,ro /mnt/input
mount -t tmpfs -o size=1m,mode=0700,uid={UID},gid={UID} tmpfs /mnt/fetched
mount --bind {tmp_path}/disk /mnt/disk
chown {UID}:{UID} /mnt/disk
cd /mnt/input
set +e
PYTHONPATH=/mnt/src setpriv --reuid {UID} --regid {UID} --clear-groups --no-new-privs --inh-caps=-all \
  --bounding-set=-all /mnt/venv/bin/python -m initfetch {cli_args}
echo "rc=$?"
find /mnt/fetched -printf '%p %U %m %F\\n' 2>/dev/null
"""
    del python
    tmp_path.chmod(0o755)  # pytest makes it 0700; the non-root uid must read the manifest
    (tmp_path / "disk").mkdir(exist_ok=True)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": "/nonexistent", "S": CANARY},
        capture_output=True,
        text=True,
        timeout=60,
    )


def project(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml",
        """\
version: 1
secrets:
  s: env://S
templates:
  - {src: t.j2, dest: conf/app.conf}
files:
  - {secret: s, dest: token}
""",
    )
    write(tmp_path / "t.j2", "password={{ secrets.s }}\n")


def test_renders_to_tmpfs_as_non_root(tmp_path: Path, sandbox_ready: None) -> None:
    project(tmp_path)
    r = run_sandboxed(tmp_path, "render -o /mnt/fetched")
    assert "rc=0" in r.stdout, r.stdout + r.stderr
    listing = {
        line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.startswith("/mnt/")
    }
    assert listing["/mnt/fetched/token"] == [str(UID), "400", "tmpfs"]
    assert listing["/mnt/fetched/conf/app.conf"] == [str(UID), "400", "tmpfs"]
    assert "/mnt/fetched/.initfetch-ready.json" in listing
    assert_no_canary(r.stderr)
    # nothing leaked to the host: the tmpfs was private to the namespace
    assert not any(tmp_path.rglob("token"))


def test_plain_disk_is_refused_in_sandbox(tmp_path: Path, sandbox_ready: None) -> None:
    project(tmp_path)
    r = run_sandboxed(tmp_path, "render -o /mnt/disk")
    assert "rc=5" in r.stdout, r.stdout + r.stderr
    assert "not tmpfs/ramfs" in r.stderr
    assert list((tmp_path / "disk").iterdir()) == []
    r = run_sandboxed(tmp_path, "render -o /mnt/disk --allow-disk")
    assert "rc=0" in r.stdout, r.stdout + r.stderr
    token = tmp_path / "disk" / "token"
    assert token.stat().st_uid == UID and oct(token.stat().st_mode & 0o777) == "0o400"
    marker = json.loads((tmp_path / "disk" / ".initfetch-ready.json").read_text())
    assert "token" in marker["files"]
