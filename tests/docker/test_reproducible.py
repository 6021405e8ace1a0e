"""Two builds of one commit, each from a clean state, install the same bytes.

The image is built twice with --no-cache (every layer of both stages made anew: the tools
venv, the locked downloads, the slimming, the SBOM) and the two /opt/initfetch trees are
compared: `pip freeze` over each one's site-packages, and a manifest of every path with its
type, mode, owner, mtime, and the sha256 of its bytes or its link target. Both manifests are
kept in build/docker/ for the CI log. (The image digests still differ: the legacy builder
stamps the layers' tar entries, e.g. /etc/passwd from useradd, with the time of the build.)
"""

from __future__ import annotations

import difflib
import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.docker.conftest import ARTIFACTS

pytestmark = pytest.mark.docker

VENV = "opt/initfetch/"


def _manifest(tar: tarfile.TarFile) -> list[str]:
    lines = []
    for m in tar.getmembers():
        if not (m.name + "/").startswith(VENV):
            continue
        if m.isfile():
            what = "sha256:" + hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
        elif m.issym():
            what = "-> " + m.linkname
        else:
            what = "dir" if m.isdir() else f"type {m.type!r}"
        # The one time a build leaves: the engine makes the COPY destination (the venv's own
        # directory) itself, when it builds. Everything below it carries SOURCE_DATE_EPOCH.
        mtime = "-" if m.name.rstrip("/") == VENV.rstrip("/") else str(int(m.mtime))
        lines.append(f"{m.name} {m.mode:o} {m.uid}:{m.gid} mtime={mtime} {what}")
    return sorted(lines)


def _freeze(tar: tarfile.TarFile, dest: Path) -> list[str]:
    """`pip freeze --path` (this venv's pip) over the image's dist-info directories."""
    metadata = [
        m for m in tar.getmembers() if m.isfile() and ".dist-info/" in m.name and m.name.startswith(VENV)
    ]
    for m in metadata:
        target = dest / m.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(tar.extractfile(m).read())  # type: ignore[union-attr]
    (site,) = (dest / VENV).glob("lib/python3.*/site-packages")
    out = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--path", str(site)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return out.splitlines()


def test_two_clean_builds_install_the_same_files(engine, images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    results = {}
    for run in ("a", "b"):
        ref = engine.build_initfetch(f"localhost/initfetch:ci-repro-{run}", images.base, "all", no_cache=True)
        try:
            with tarfile.open(fileobj=io.BytesIO(engine.export(ref))) as tar:
                results[run] = (_freeze(tar, tmp_path / run), _manifest(tar))
        finally:  # every run would leave two fresh, never reused image chains in the CI cache
            engine.remove_build(ref, engine.last_build)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"reproducible-{run}.txt").write_text(
            "\n".join(["# pip freeze", *results[run][0], "# files", *results[run][1]]) + "\n"
        )
    (freeze_a, files_a), (freeze_b, files_b) = results["a"], results["b"]
    assert any(line.startswith("boto3==") for line in freeze_a) and any(
        line.startswith("initfetch") for line in freeze_a
    )
    assert freeze_a == freeze_b
    assert len(files_a) > 500  # the whole venv, not an empty listing
    assert any(" sha256:" in ln and ln.startswith(VENV + "sbom.cdx.json ") for ln in files_a)
    diff = list(difflib.unified_diff(files_a, files_b, "a", "b", lineterm="", n=0))
    assert files_a == files_b, "\n".join(diff[:40])
