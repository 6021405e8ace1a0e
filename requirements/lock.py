"""Write the hash-pinned lock files in requirements/ from pyproject.toml (`make lock`).

  all.txt                     initfetch[all]: every runtime distribution, resolved once
  core.txt vault.txt aws.txt azure.txt
                              one per extra (core = no extra), resolved with all.txt as
                              constraints, so a distribution has the same version and hashes
                              in every file and `-r vault.txt -r aws.txt` installs cleanly
  build.txt                   the build backend ([build-system] requires), for the image build
  sbom.txt                    the SBOM generator (sbom.in), used in the image's build stage only
  tools.txt                   uv itself (tools.in), which `make lock` runs

Each file starts with `# inputs-sha256: ...`, a digest of what it was resolved from
(pyproject's dependency tables, or the .in file); tests/test_lock.py fails when pyproject.toml
changed without `make lock`. Existing pins are kept unless UPGRADE=1 (uv --upgrade).
Resolution is universal (markers instead of this machine's answers) for Python 3.11 and newer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYPROJECT = ROOT / "pyproject.toml"
EXTRAS = ("vault", "aws", "azure")
PYTHON_VERSION = "3.11"  # the oldest supported: the lock must install there
DIGEST_PREFIX = "# inputs-sha256: "


def pyproject_inputs(path: Path = PYPROJECT) -> dict[str, object]:
    """The parts of pyproject.toml a lock is resolved from, and nothing else."""
    data = tomllib.loads(path.read_text())
    project = data["project"]
    return {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system.requires": data.get("build-system", {}).get("requires", []),
    }


def digest(inputs: object) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def expected_digests(path: Path = PYPROJECT) -> dict[str, str]:
    """lock file name -> the digest its header must carry."""
    project = digest(pyproject_inputs(path))
    out = {f"{name}.txt": project for name in ("all", "core", *EXTRAS, "build")}
    for name in ("sbom", "tools"):
        out[f"{name}.txt"] = digest((HERE / f"{name}.in").read_text())
    return out


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX) :].strip()
    return None


def _compile(uv: str, name: str, args: list[str], upgrade: bool, stdin: str | None = None) -> None:
    out = HERE / f"{name}.txt"
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / out.name
        if out.exists():  # uv keeps the pins it finds in the output file
            body.write_text(out.read_text())
        cmd = [
            uv, "pip", "compile", "--quiet", "--universal", "--python-version", PYTHON_VERSION,
            "--generate-hashes", "--custom-compile-command", "make lock",
            "--output-file", str(body), *args,
        ]  # fmt: skip
        if upgrade:
            cmd.append("--upgrade")
        # The system trust store: a TLS-inspecting proxy's CA is there, not in uv's own roots.
        env = {"UV_NATIVE_TLS": "1", **os.environ}
        subprocess.run(cmd, check=True, cwd=ROOT, input=stdin, text=True, env=env)
        text = body.read_text()
    # Our header replaces a stale one (the kept pins came in with the old file).
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(DIGEST_PREFIX)) + "\n"
    header = f"{DIGEST_PREFIX}{expected_digests()[out.name]}\n"
    out.write_text(header + text)
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uv", default="uv", help="the uv executable")
    ap.add_argument("--upgrade", action="store_true", default=os.environ.get("UPGRADE") == "1")
    args = ap.parse_args()
    uv, up = args.uv, args.upgrade
    _compile(uv, "all", ["pyproject.toml", "--extra", "all"], up)
    constraints = ["--constraint", "requirements/all.txt"]
    _compile(uv, "core", ["pyproject.toml", *constraints], up)
    for extra in EXTRAS:
        _compile(uv, extra, ["pyproject.toml", "--extra", extra, *constraints], up)
    build_requires = pyproject_inputs()["build-system.requires"]
    _compile(uv, "build", ["-"], up, stdin="\n".join(build_requires) + "\n")  # type: ignore[arg-type]
    _compile(uv, "sbom", ["requirements/sbom.in"], up)
    _compile(uv, "tools", ["requirements/tools.in"], up)
    return 0


if __name__ == "__main__":
    sys.exit(main())
