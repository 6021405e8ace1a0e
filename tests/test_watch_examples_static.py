"""Static checks of the watch-mode examples that the shared example checks do not cover:
the Kubernetes native sidecar (an initContainer with restartPolicy: Always) and the
manifests' watch settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from initfetch.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
SIDECAR = REPO / "compose-examples" / "watch-sidecar"
BIN = Path(sys.executable).parent


def test_kubernetes_native_sidecar_shape(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all((SIDECAR / "kubernetes-native-sidecar.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ServiceAccount", "ConfigMap", "Deployment"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar (Kubernetes >= 1.29)
    assert sidecar["args"][:2] == ["render", "--watch"]
    # HTTP probes on --listen: /readyz is healthcheck's verdict (with --max-stale), /healthz the loop
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["INITFETCH_LISTEN"] == "0.0.0.0:9090" and env["INITFETCH_MAX_STALE"] == "10m"
    (port,) = sidecar["ports"]
    assert port == {"name": "metrics", "containerPort": 9090}
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["fetched"]["emptyDir"]["medium"] == "Memory"
    for c in [sidecar, *pod["containers"]]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    # The embedded manifest is valid, watch settings included.
    cm = kinds["ConfigMap"]
    for item in vols["manifest"]["configMap"]["items"]:
        dest = tmp_path / item["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(cm["data"][item["key"]])
    manifest = load_manifest(tmp_path / "initfetch.yaml", {})
    assert manifest.watch.providers == {"vault": 60.0}
    assert manifest.watch.on_change.revoke_grace == 120.0
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("INITFETCH_", "VAULT_"))}
    check = subprocess.run(
        [str(BIN / "initfetch"), "check", "-m", str(tmp_path / "initfetch.yaml")],
        capture_output=True, text=True, timeout=60, env=environ,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_example_manifests_carry_watch_settings() -> None:
    sidecar = load_manifest(SIDECAR / "initfetch.yaml", {})
    assert sidecar.watch.providers == {"vault": 30.0} and sidecar.watch.secrets == {"api_key": 300.0}
    wrapper = load_manifest(REPO / "compose-examples" / "watch-exec-wrapper" / "initfetch.yaml", {})
    assert wrapper.watch.on_change.signal == 1  # SIGHUP
