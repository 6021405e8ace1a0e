"""The initfetch image itself, built from ./Dockerfile on the CI base (see engine.py).

Properties: non-root uid 65532, ENTRYPOINT initfetch with no shell behind it, EXTRAS
selects the provider SDKs, no compilers/pip in the final image, OCI labels, no
certificate content or credential in any layer our Dockerfile adds or in the history;
the installed distributions are exactly the lock's and all listed in the image's SBOM;
`--version` and `healthcheck` run on a read-only root as 65532 without a HOME; no
world-writable path; the slimmed venv still serves every provider, and its size.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.docker import engine as eng
from tests.docker.conftest import ARTIFACTS, sizes_report
from tests.test_lock import parse_lock

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
    assert labels["initfetch.sbom.path"] == SBOM_PATH
    assert labels["initfetch.sbom.format"] == "CycloneDX 1.6 JSON"
    # The licence travels with the code: initfetch's dist-info in the image holds LICENSE.
    files = engine.python(
        images.initfetch, "import importlib.metadata as m; print(*m.distribution('initfetch').files)"
    ).stdout.split()
    assert any(f.startswith("initfetch-") and f.endswith("LICENSE") for f in files), files
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
        "test -e /build && echo FOUND /build; "
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
    assert engine.run([*run, images.initfetch_core, "-c", probe]).stdout.split() == []
    # A provider that is not installed is a clear error naming the extra, not a traceback.
    proc = engine.run(
        ["run", "--rm", "--network", "none", "-e", "AWS_REGION=eu-west-1", "-e", "X=initfetch+awssm://a/b",
         images.initfetch_vault, "exec", "--", "true"],
        check=False,
    )  # fmt: skip
    assert proc.returncode in (2, 3), proc.stderr
    assert "initfetch[aws]" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_extra_fails_the_build(engine, images) -> None:  # type: ignore[no-untyped-def]
    # sbom is a lock file in requirements/ too, but not an extra: it must never reach the venv.
    for bad in ("gcp", "vault,sbom"):
        with pytest.raises(eng.EngineError, match=f"unknown extra '{bad.split(',')[-1]}'"):
            engine.build_initfetch("localhost/initfetch:ci-bad-extra", images.base, bad)


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
            assert not any(n.startswith(("src/", "build/", "root/.cache", "tmp/pip")) for n in names), name
            assert not any(n.endswith((".pem.bak", "pip.conf")) for n in names), name


SBOM_PATH = "/opt/initfetch/sbom.cdx.json"
LOCKS = eng.REPO / "requirements"
# name==version of every distribution the interpreter sees (what `pip freeze` prints).
FREEZE = (
    "import importlib.metadata as m\n"
    "print('\\n'.join(sorted(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions())))"
)


def _installed(engine, ref: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    lines = engine.python(ref, FREEZE).stdout.split()
    return {canonicalize_name(n): v for n, _, v in (ln.partition("==") for ln in lines)}


def _read_from_image(engine, ref: str, path: str) -> bytes:  # type: ignore[no-untyped-def]
    with tarfile.open(fileobj=io.BytesIO(engine.export(ref))) as tar:
        member = tar.extractfile(path.lstrip("/"))
        assert member is not None, path
        return member.read()


@pytest.mark.parametrize(
    ("image", "lock"), [("initfetch", "all"), ("initfetch_vault", "vault"), ("initfetch_core", "core")]
)
def test_installed_is_the_lock_and_the_sbom_lists_it(engine, images, image, lock) -> None:  # type: ignore[no-untyped-def]
    ref = getattr(images, image)
    installed = _installed(engine, ref)
    # Exactly the lock of this extra, at its versions, plus initfetch itself (no pip, no setuptools).
    locked = {e.name: e.version for e in parse_lock(LOCKS / f"{lock}.txt").values() if e.applies()}
    assert {n: v for n, v in installed.items() if n != "initfetch"} == locked
    assert "initfetch" in installed
    # The SBOM, found through the image's label and read without running the image.
    path = _inspect(engine, ref)["Config"]["Labels"]["initfetch.sbom.path"]
    raw = _read_from_image(engine, ref, path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"sbom-{lock}.cdx.json").write_bytes(raw)  # the build artifact CI keeps
    sbom = json.loads(raw)
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    listed = {canonicalize_name(c["name"]): c["version"] for c in sbom["components"]}
    assert listed == installed
    for c in sbom["components"]:  # initfetch itself comes from a local wheel, not from PyPI
        if c["name"] != "initfetch":
            assert c["purl"] == f"pkg:pypi/{canonicalize_name(c['name'])}@{c['version']}", c


def test_read_only_root_as_nonroot_without_home(engine, images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    locked_down = ["run", "--rm", "--network", "none", "--read-only", "--user", "65532:65532",
                   "-e", "HOME=/nonexistent", "--cap-drop", "ALL",
                   "--security-opt", "no-new-privileges"]  # fmt: skip
    for ref in (images.initfetch, images.initfetch_core):
        proc = engine.run([*locked_down, ref, "--version"], check=False)
        assert proc.returncode == 0 and proc.stdout.startswith("initfetch "), proc.stderr
        assert proc.stderr == ""
        # Nothing rendered yet: "not ready", exit 1, one line, no traceback.
        proc = engine.run([*locked_down, "--tmpfs", "/run/secrets:uid=65532,gid=65532", ref, "healthcheck"],
                          check=False)  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert "not ready" in proc.stderr and "Traceback" not in proc.stderr
    # After a render on the tmpfs: healthy. `exec` renders, then runs the healthcheck as its child.
    (tmp_path / "initfetch.yaml").write_text(
        textwrap.dedent("""\
            version: 1
            secrets:
              token: env://CI_TOKEN
            files:
              - secret: token
                dest: token
        """)
    )
    (tmp_path / "initfetch.yaml").chmod(0o444)
    proc = engine.run(
        [*locked_down, "--tmpfs", "/run/secrets:uid=65532,gid=65532,mode=0700",
         "-v", f"{tmp_path / 'initfetch.yaml'}:/etc/initfetch/initfetch.yaml:ro", "-e", "CI_TOKEN=t0ken",
         images.initfetch, "exec", "--", "initfetch", "healthcheck"],
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def _shebang(engine, ref: str, path: str) -> bytes:  # type: ignore[no-untyped-def]
    return _read_from_image(engine, ref, path).split(b"\n", 1)[0]


def test_no_shell_behind_the_entrypoint(engine, images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = _inspect(engine, images.initfetch)["Config"]
    assert cfg["Entrypoint"] == ["initfetch"] and cfg["Cmd"] == ["render"]  # exec form: no `sh -c`
    assert (
        _shebang(engine, images.initfetch, "/opt/initfetch/bin/initfetch") == b"#!/opt/initfetch/bin/python"
    )
    # Every shell in the image replaced by an empty file: initfetch still starts, renders and
    # execs its child (here the healthcheck), because no step of it goes through a shell.
    shells = engine.python(
        images.initfetch,
        "import os\nfor p in ('/usr/bin/sh','/usr/bin/dash','/usr/bin/bash'):\n"
        "    print(os.path.realpath(p)) if os.path.exists(p) else None",
    ).stdout.split()
    assert shells
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\nsecrets: {t: 'env://T'}\nfiles: [{secret: t, dest: t}]\n"
    )
    (tmp_path / "initfetch.yaml").chmod(0o444)
    no_shell = [a for sh in sorted(set(shells)) for a in ("-v", f"/dev/null:{sh}:ro")]
    base = ["run", "--rm", "--network", "none", "--read-only", *no_shell]
    proc = engine.run([*base, "--entrypoint", "/usr/bin/sh", images.initfetch, "-c", "true"], check=False)
    assert proc.returncode != 0  # the shells really are gone
    assert engine.run([*base, images.initfetch, "--version"]).stdout.startswith("initfetch ")
    proc = engine.run(
        [*base, "--tmpfs", "/run/secrets:uid=65532,gid=65532", "-e", "T=x",
         "-v", f"{tmp_path / 'initfetch.yaml'}:/etc/initfetch/initfetch.yaml:ro",
         images.initfetch, "exec", "--", "initfetch", "healthcheck"],
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_no_world_writable_path(engine, images) -> None:  # type: ignore[no-untyped-def]
    with tarfile.open(fileobj=io.BytesIO(engine.export(images.initfetch))) as tar:
        members = tar.getmembers()
    assert any(m.name.startswith("opt/initfetch/") for m in members)
    writable = [
        f"{m.name} {m.mode:o}"
        for m in members
        if m.mode & 0o002
        and not m.issym()
        and not m.islnk()
        # Device nodes (/dev/null, ...) are the engine's, made for every container.
        and not (m.ischr() or m.isblk())
        and not m.name.startswith("dev/")
    ]
    assert writable == []
    # The venv belongs to root and is read-only to everyone else.
    venv = [m for m in members if m.name.startswith("opt/initfetch")]
    assert all(m.uid == 0 and not m.mode & 0o022 for m in venv if not m.issym())


def test_slim_venv_still_serves_every_provider(engine, images) -> None:  # type: ignore[no-untyped-def]
    """What docs/containers.md says was dropped is gone, and what initfetch loads still works."""
    code = textwrap.dedent("""\
        import pathlib, sys, sysconfig
        import botocore.session, botocore.exceptions, boto3
        s = botocore.session.get_session()
        for svc in ("secretsmanager", "ssm", "sts", "sso", "sso-oidc", "signin"):
            s.create_client(svc, region_name="eu-west-1", aws_access_key_id="a", aws_secret_access_key="b")
        try:
            s.create_client("s3", region_name="eu-west-1")
            print("FOUND s3 model")
        except botocore.exceptions.UnknownServiceError:
            pass
        boto3.session.Session(region_name="eu-west-1").client("ssm")
        import hvac, azure.identity, azure.keyvault.secrets
        cred = azure.identity.DefaultAzureCredential()
        azure.keyvault.secrets.SecretClient("https://v.vault.azure.net", cred)
        # Stripped extension modules: the crypto a certificate credential uses, YAML's C loader.
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        k.public_key().verify(k.sign(b"m", padding.PKCS1v15(), hashes.SHA256()), b"m",
                              padding.PKCS1v15(), hashes.SHA256())
        e = ec.generate_private_key(ec.SECP256R1())
        e.public_key().verify(e.sign(b"m", ec.ECDSA(hashes.SHA256())), b"m", ec.ECDSA(hashes.SHA256()))
        import jwt, yaml, ahocorasick, markupsafe, charset_normalizer
        assert jwt.decode(jwt.encode({"a": 1}, e, "ES256"), e.public_key(), ["ES256"]) == {"a": 1}
        assert yaml.load("a: [1]", Loader=yaml.CSafeLoader) == {"a": [1]}
        # Third-party code is sourceless bytecode; initfetch keeps its sources.
        sp = pathlib.Path(sysconfig.get_paths()["purelib"])
        print("SOURCES", *sorted({p.relative_to(sp).parts[0] for p in sp.rglob("*.py")}))
        print("BOTOCORE", pathlib.Path(botocore.__file__).name)
        print("MODELS", *sorted(p.name for p in (sp / "botocore" / "data").iterdir() if p.is_dir()))
        import struct
        def section_types(b):  # ELF64 little-endian section header types
            shoff, = struct.unpack_from("<Q", b, 0x28); shnum, = struct.unpack_from("<H", b, 0x3C)
            return [struct.unpack_from("<I", b, shoff + i * 64 + 4)[0] for i in range(shnum)]
        so = list(sp.rglob("*.so"))
        print("SHARED", len(so))
        print("SYMTAB", *[p.name for p in so if 2 in section_types(p.read_bytes())])
    """)
    out = engine.python(images.initfetch, code).stdout
    assert "FOUND" not in out, out
    rep = {ln.split(" ", 1)[0]: ln.split()[1:] for ln in out.splitlines()}
    assert rep["SOURCES"] == ["initfetch"]
    assert rep["BOTOCORE"] == ["__init__.pyc"]
    assert rep["MODELS"] == sorted(["secretsmanager", "signin", "ssm", "sso", "sso-oidc", "sts"])
    assert int(rep["SHARED"][0]) >= 5 and rep["SYMTAB"] == []


# What the image adds to its base, at most (docs/containers.md, "Footprint").
SIZE_TARGETS = {"EXTRAS=all": 30e6, "EXTRAS=": 6e6}


def test_image_sizes(engine, images) -> None:  # type: ignore[no-untyped-def]
    base = engine.image_size(images.base)
    refs = {"EXTRAS=": images.initfetch_core, "EXTRAS=vault": images.initfetch_vault}
    for extra in ("aws", "azure"):  # built only here, for the table in docs/containers.md
        refs[f"EXTRAS={extra}"] = engine.build_initfetch(
            f"localhost/initfetch:ci-{extra}", images.base, extra
        )
    refs["EXTRAS=all"] = images.initfetch
    added = {name: engine.image_size(ref) - base for name, ref in refs.items()}
    report = {"base": base, "base_image": images.base, "added": added}
    sizes_report(eng.CACHE / "image-sizes.json", report)  # type: ignore[arg-type]
    sizes_report(ARTIFACTS / "image-sizes.json", report)  # type: ignore[arg-type]
    print("base", round(base / 1e6, 1), "MB; added (MB):", {k: round(v / 1e6, 1) for k, v in added.items()})
    assert 0 < added["EXTRAS="] < added["EXTRAS=vault"] < added["EXTRAS=all"]
    assert added["EXTRAS=aws"] < added["EXTRAS=all"] and added["EXTRAS=azure"] < added["EXTRAS=all"]
    for name, limit in SIZE_TARGETS.items():
        assert added[name] <= limit, f"{name} adds {added[name] / 1e6:.1f} MB, more than {limit / 1e6:.0f} MB"
