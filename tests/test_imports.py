"""The provider registry imports an SDK only when a manifest uses it, and a
missing extra is a one-line error naming the pip extra."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, write

PROBE = """
import sys
from initfetch.cli import main
rc = main(sys.argv[1:])
watched = {'hvac', 'boto3', 'botocore', 'azure', 'requests', 'jinja2', 'tenacity', 'prometheus_client'}
heavy = sorted({m.split('.')[0] for m in sys.modules} & watched)
print('HEAVY=' + ','.join(heavy))
sys.exit(rc)
"""

MANIFEST = "version: 1\nsecrets:\n  a: env://A\n  b: file://b\nfiles:\n  - {secret: a, dest: a}\n"


def test_file_env_render_imports_no_sdk(tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", MANIFEST)
    write(tmp_path / "b", "x")
    r = subprocess.run(
        [sys.executable, "-c", PROBE, "render", "-o", str(tmp_path / "o"), "--allow-disk"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "A": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "HEAVY=\n" in r.stdout


def test_vault_only_render_imports_no_aws_azure_or_tenacity(tmp_path: Path) -> None:
    from tests.backends.vault_double import TOKEN, start_vault_double

    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  a: vault://secret/app#k\n")
    with start_vault_double() as double:
        double.kv2["secret/app"] = {"k": "v"}
        r = subprocess.run(
            [sys.executable, "-c", PROBE, "render", "-o", str(tmp_path / "o"), "--allow-disk"],
            cwd=tmp_path,
            env={
                "PATH": os.environ["PATH"],
                "PYTHONPATH": str(REPO),
                "HOME": str(tmp_path),
                "VAULT_ADDR": double.url,
                "VAULT_TOKEN": TOKEN,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 0, r.stderr
    assert "HEAVY=hvac,requests\n" in r.stdout  # no Jinja (no template), no tenacity (no retry)


def core_only_path(tmp_path: Path) -> Path:
    """A directory holding only the core dependencies, as a minimal install would have."""
    lib = tmp_path / "core-lib"
    lib.mkdir()
    for name in ("jinja2", "markupsafe", "yaml", "tenacity", "ahocorasick", "prometheus_client"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        origin = Path(mod.__file__ or "")
        src = origin.parent if origin.name == "__init__.py" else origin
        os.symlink(src, lib / src.name)
    return lib


def test_missing_extra_names_the_pip_extra(tmp_path: Path) -> None:
    lib = core_only_path(tmp_path)
    write(
        tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  a: vault://secret/app#x\n  b: awssm://app/db\n"
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{REPO}:{lib}"}
    cmd = [sys.executable, "-S", "-m", "initfetch"]
    r = subprocess.run(
        [*cmd, "render", "-o", str(tmp_path), "--allow-disk"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "initfetch.yaml:3:3: the vault provider needs" in r.stderr
    assert "pip install 'initfetch[vault]'" in r.stderr
    assert "pip install 'initfetch[aws]'" in r.stderr
    assert "Traceback" not in r.stderr
    # check and an offline preview still work without the SDKs: they only warn
    r = subprocess.run([*cmd, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "initfetch[vault]" in r.stderr
    r = subprocess.run(
        [*cmd, "preview", "--offline"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
