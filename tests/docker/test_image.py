"""The initfetch image itself, built from ./Dockerfile on the CI base (see engine.py).

Properties the issue asks for: non-root uid 65532, ENTRYPOINT initfetch, EXTRAS
selects the provider SDKs, no compilers/pip in the final image, OCI labels, no
certificate content or credential in any layer our Dockerfile adds or in the history.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import pytest

from tests.docker import engine as eng
from tests.docker.conftest import sizes_report

pytestmark = pytest.mark.docker


def _inspect(engine, ref: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(engine.run(["image", "inspect", ref]).stdout)[0]


def test_image_config(engine, images) -> None:  # type: ignore[no-untyped-def]
    cfg = _inspect(engine, images.initfetch)["Config"]
    assert cfg["User"] == "65532:65532"
    assert cfg["Entrypoint"] == ["initfetch"]
    assert cfg["Cmd"] == ["render"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == "initfetch"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.base.name"] == images.base
    out = engine.run(["run", "--rm", "--network", "none", "--entrypoint", "id", images.initfetch]).stdout
    assert out.startswith("uid=65532(nonroot) gid=65532(nonroot)")
    assert engine.run(["run", "--rm", "--network", "none", images.initfetch, "--version"]).stdout.startswith(
        "initfetch "
    )


def test_final_image_has_no_pip_compiler_or_sources(engine, images) -> None:  # type: ignore[no-untyped-def]
    script = (
        "for t in pip pip3 gcc cc c++ make; do command -v $t && echo FOUND $t; done; "
        "ls /opt/initfetch/bin; test -e /src && echo FOUND /src; "
        "test -e /root/.cache/pip && echo FOUND cache; "
        "touch /opt/initfetch/x 2>/dev/null && echo FOUND writable-venv; true"
    )
    proc = engine.run(
        ["run", "--rm", "--network", "none", "--entrypoint", "sh", images.initfetch, "-c", script]
    )
    assert "FOUND" not in proc.stdout, proc.stdout
    assert "initfetch" in proc.stdout.split()


def test_extras_select_provider_sdks(engine, images) -> None:  # type: ignore[no-untyped-def]
    probe = (
        "import importlib.util as u; "
        "print(' '.join(m for m in ('hvac', 'boto3', 'azure.identity') "
        "if u.find_spec(m.split('.')[0]) and u.find_spec(m)))"
    )
    run = ["run", "--rm", "--network", "none", "--entrypoint", "python3"]
    assert engine.run([*run, images.initfetch, "-c", probe]).stdout.split() == [
        "hvac",
        "boto3",
        "azure.identity",
    ]
    assert engine.run([*run, images.initfetch_vault, "-c", probe]).stdout.split() == ["hvac"]
    # A provider that is not installed is a clear error naming the extra, not a traceback.
    proc = engine.run(
        ["run", "--rm", "--network", "none", "-e", "AWS_REGION=eu-west-1", "-e", "X=initfetch+awssm://a/b",
         images.initfetch_vault, "exec", "--", "true"],
        check=False,
    )  # fmt: skip
    assert proc.returncode in (2, 3), proc.stderr
    assert "initfetch[aws]" in proc.stderr and "Traceback" not in proc.stderr


def _host_ca_markers() -> list[bytes]:
    """A base64 line from the body of each CA the build host trusts beyond Debian's set."""
    markers = []
    for ca in sorted(eng.HOST_CA_DIR.glob("*.crt")) if eng.HOST_CA_DIR.is_dir() else []:
        body = [ln for ln in ca.read_bytes().splitlines() if ln and not ln.startswith(b"-----")]
        if len(body) > 3:
            markers.append(body[len(body) // 2])
    return markers


def test_no_certificate_or_credential_in_our_layers_or_history(engine, images) -> None:  # type: ignore[no-untyped-def]
    history = engine.run(["history", "--no-trunc", "--format", "{{.CreatedBy}}", images.initfetch]).stdout
    ours = history.split("ARG BASE_IMAGE")[0]  # newest first: the steps of our final stage
    assert "PIP_CERT" not in history and "BEGIN" not in history
    # Build arguments show up as `|N NAME=value ...` before a RUN: only these three may.
    for line in ours.splitlines():
        if line.startswith("|"):
            names = {w.split("=", 1)[0] for w in line.split(" /bin/sh")[0].split()[1:]}
            assert names <= {"BASE_IMAGE", "VERSION", "REVISION"}, line
    base_layers = len(_inspect(engine, images.base)["RootFS"]["Layers"])
    saved = subprocess.run(
        [engine.docker, "save", images.initfetch],
        env=engine.env,
        capture_output=True,
        check=True,
        timeout=300,
    ).stdout
    markers = _host_ca_markers()
    with tarfile.open(fileobj=io.BytesIO(saved)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        layers = manifest[0]["Layers"]
        assert len(layers) > base_layers
        if markers:  # the scan works: the base's trust store (the CI's stand-in base) has them
            base_data = b"".join(tar.extractfile(n).read() for n in layers[:base_layers])  # type: ignore[union-attr]
            assert all(m in base_data for m in markers)
        for name in layers[base_layers:]:
            data = tar.extractfile(name).read()  # type: ignore[union-attr]
            for marker in markers:
                assert marker not in data, f"a host CA certificate is in layer {name}"
            with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                names = layer.getnames()
            assert not any(n.startswith(("src/", "root/.cache", "tmp/pip")) for n in names), name
            assert not any(n.endswith((".pem.bak", "pip.conf")) for n in names), name


def test_image_sizes(engine, images) -> None:  # type: ignore[no-untyped-def]
    sizes = {
        "base": engine.image_size(images.base),
        "EXTRAS=all": engine.image_size(images.initfetch),
        "EXTRAS=vault": engine.image_size(images.initfetch_vault),
    }
    sizes_report(eng.CACHE / "image-sizes.json", {**sizes, "base_image": images.base})  # type: ignore[dict-item]
    print("image sizes (MB):", {k: round(v / 1e6, 1) for k, v in sizes.items()})
    assert sizes["base"] < sizes["EXTRAS=vault"] < sizes["EXTRAS=all"]
    # The venv is the whole cost on top of the base: keep it lean.
    assert sizes["EXTRAS=vault"] - sizes["base"] < 30e6
    assert sizes["EXTRAS=all"] - sizes["base"] < 90e6
