"""The README's install-from-the-repository path works: a wheel builds from a
clean checkout, holds the package and the LICENSE pyproject.toml promises, and
runs from where it is installed (issue 12)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import REPO, clean_env

SCRIPT = """
import sys
import initfetch
from initfetch.cli import main
print(initfetch.__file__)
sys.exit(main(["init", "--dir", sys.argv[1]]))
"""


def test_wheel_builds_and_runs_from_its_install(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("initfetch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "initfetch/cli.py" in names and "initfetch/providers/vault/provider.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "bench/")) for n in names)
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    env = {**clean_env(), "PYTHONPATH": str(target)}  # the installed copy, not the checkout
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "starter")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(str(target))
    assert (tmp_path / "starter/initfetch.yaml").exists()
