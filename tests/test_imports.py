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
watched = {'hvac', 'boto3', 'botocore', 'azure', 'requests', 'urllib3', 'jinja2', 'tenacity',
           'prometheus_client'}
heavy = sorted({m.split('.')[0] for m in sys.modules} & watched)
print('HEAVY=' + ','.join(heavy))
print('RESOLVER=' + str('initfetch.resolve.resolver' in sys.modules))
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


def _vault_run(tmp_path: Path, manifest: str, files: dict[str, str] | None = None) -> str:
    """Render `manifest` against the Vault double in a fresh process; the HEAVY= line it printed."""
    from tests.backends.vault_double import TOKEN, start_vault_double

    write(tmp_path / "initfetch.yaml", manifest)
    for name, text in (files or {}).items():
        write(tmp_path / name, text)
    with start_vault_double() as double:
        double.kv2["secret/app"] = {"k": "v"}
        double.faults["auth/approle/login"] = (
            200,
            {"auth": {"client_token": TOKEN, "lease_duration": 0, "renewable": False, "policies": []}},
        )
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
    return next(line for line in r.stdout.splitlines() if line.startswith("HEAVY="))


def test_vault_token_render_imports_no_sdk_at_all(tmp_path: Path) -> None:
    # A ready token: reads go over http.client (providers/vault/lean.py); hvac, requests and
    # urllib3 are never loaded, nor Jinja (no template) nor tenacity (no retry).
    manifest = "version: 1\nsecrets:\n  a: vault://secret/app#k\nfiles:\n  - {secret: a, dest: a}\n"
    assert _vault_run(tmp_path, manifest) == "HEAVY="
    assert (tmp_path / "o" / "a").read_text() == "v"


def test_vault_templated_render_imports_jinja_only_when_the_template_needs_it(tmp_path: Path) -> None:
    # Text and {{ secrets.NAME }} only: rendered without Jinja (templating/simple.py).
    manifest = "version: 1\nsecrets:\n  a: vault://secret/app#k\ntemplates:\n  - {src: t.j2, dest: t}\n"
    assert _vault_run(tmp_path / "simple", manifest, {"t.j2": "a={{ secrets.a }}\n"}) == "HEAVY="
    assert (tmp_path / "simple" / "o" / "t").read_text() == "a=v\n"
    # A filter is Jinja's to run.
    files = {"t.j2": "a={{ secrets.a | upper }}\n"}
    assert _vault_run(tmp_path / "filter", manifest, files) == "HEAVY=jinja2"
    assert (tmp_path / "filter" / "o" / "t").read_text() == "a=V\n"


def test_vault_approle_render_imports_hvac_to_log_in(tmp_path: Path) -> None:
    # A login method hvac implements: hvac (and requests under it) log in; the reads still go
    # through lean.py with the token it got.
    manifest = (
        "version: 1\nproviders:\n  vault:\n    type: vault\n    auth: {method: approle, role_id: r, "
        "secret_id: s}\nsecrets:\n  a: vault://secret/app#k\nfiles:\n  - {secret: a, dest: a}\n"
    )
    assert _vault_run(tmp_path, manifest) == "HEAVY=hvac,requests,urllib3"
    assert (tmp_path / "o" / "a").read_text() == "v"


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


def test_check_of_simple_templates_imports_no_jinja_and_no_http(tmp_path: Path) -> None:
    write(tmp_path / "t.j2", "a={{ secrets.a }}\nb={{ secrets.b }}\n")
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  a: vault://secret/app#k\n  b: env://B\n"
        "templates:\n  - {src: t.j2, dest: t}\n",
    )
    probe = PROBE.replace("'tenacity'}", "'tenacity', 'http', 'ssl'}")
    r = subprocess.run(
        [sys.executable, "-c", probe, "check"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "HEAVY=\n" in r.stdout


def test_the_starter_checks_and_renders_without_jinja(tmp_path: Path) -> None:
    # `initfetch init` writes a comment and `| tojson`: simple.py renders both, as Jinja would;
    # a render renders the `env:` values too (exec's), and they are simple as well. check
    # resolves nothing, so it does not load the resolver's machinery either.
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-m", "initfetch", "init"], cwd=tmp_path, env=env, capture_output=True
    )
    assert r.returncode == 0, r.stderr
    for args in (
        ["check"],
        ["render", "-o", str(tmp_path / "o"), "--allow-disk"],
    ):
        r = subprocess.run(
            [sys.executable, "-c", PROBE, *args],
            cwd=tmp_path,
            env={**env, "API_TOKEN": 'to"ken'},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert "HEAVY=\n" in r.stdout, (args, r.stdout)
        assert ("RESOLVER=True" in r.stdout) is (args[0] == "render"), r.stdout
    assert (tmp_path / "o" / "config.json").read_text() == '{"api_token": "to\\"ken"}\n'
