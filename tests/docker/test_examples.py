"""The compose examples, run end to end on a real Docker engine (dockerd 20.10, Compose v2.40).

Each test copies one example folder to a temp dir, adds a small override file
(host networking: the CI engine has no bridge), points it at a real OpenBao on
127.0.0.1 and runs it with the initfetch image built from this repository.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.docker.conftest import CANARY_API_KEY, CANARY_DB_PASS, DB_USER, OVERRIDES, parse_report

pytestmark = pytest.mark.docker

REPORT = (OVERRIDES / "report.sh").read_text()


def _run_app(engine, ex, *cmd: str, service: str = "app", extra: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return engine.compose_run(
        ex.files, ["run", "--rm", "-T", *extra, service, *cmd], ex.project, ex.env, check=False, timeout=240
    )


def _report(engine, ex, out: str = "/run/fetched"):  # type: ignore[no-untyped-def]
    proc = _run_app(engine, ex, "/bin/sh", "-c", REPORT, extra=("-e", f"OUT={out}"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return parse_report(proc.stdout), proc


def _contents(rep: dict[str, list[str]]) -> dict[str, str]:
    out = {}
    for line in rep.get("CONTENT", []):
        name, _, b64 = line.partition(" ")
        out[name] = base64.b64decode(b64).decode()
    return out


def _assert_rendered(rep: dict[str, list[str]], out: str, files: set[str]) -> None:
    """Right content, mode 0400, owner 65532, on a tmpfs, seen by the app as uid 65532."""
    assert rep["UID"] == ["65532:65532"]
    (mount,) = rep["MOUNT"]
    assert mount.split()[2] == "tmpfs", mount
    stats = {line.split()[0].rsplit("/", 1)[1]: line.split()[1:] for line in rep["STAT"]}
    assert set(stats) == files | {".initfetch-ready.json"}
    for name in files:
        assert stats[name] == ["400", "65532", "65532"], (name, stats[name])
    contents = _contents(rep)
    assert contents["database.json"].strip() == (
        f'{{"host": "db", "port": 5432, "user": "{DB_USER}", "password": "{CANARY_DB_PASS}"}}'
    )
    if "api_key" in files:
        assert contents["api_key"] == CANARY_API_KEY


# -- a. init + app sharing an in-memory volume ------------------------------------------------


def test_init_hold_app_sees_rendered_files_on_tmpfs(engine, example_factory) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("init-container-tmpfs", "init-hold.yaml")
    rep, _ = _report(engine, ex)
    _assert_rendered(rep, "/run/fetched", {"database.json", "api_key"})
    # The token was the initfetch service's business only.
    assert "VAULT_TOKEN" not in rep["ENVNAMES"][0]
    # The holder is still up (that is what keeps the volume), and healthy.
    ps = engine.run(["ps", "--filter", f"label=com.docker.compose.project={ex.project}",
                     "--format", "{{.Names}} {{.Status}}"]).stdout  # fmt: skip
    assert "initfetch" in ps and "(healthy)" in ps, ps


def test_init_that_exits_leaves_an_empty_volume(engine, example_factory) -> None:  # type: ignore[no-untyped-def]
    """The trap the example avoids, reproduced: render + exit, and the app's tmpfs volume is empty."""
    ex = example_factory("init-container-tmpfs", "init-exits.yaml")
    rep, _ = _report(engine, ex)
    assert rep["COUNT"] == ["0"]
    # initfetch itself succeeded: the files were written, then lost with the unmount.
    logs = engine.compose_run(ex.files, ["logs", "--no-color", "initfetch"], ex.project, ex.env).stdout
    assert "CANARY" not in logs


def test_init_hold_missing_secret_app_never_starts(engine, example_factory) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("init-container-tmpfs", "init-hold.yaml", APP_ENV="missing")
    # APP_ENV is read by the initfetch service from its environment (set in the override below).
    ex.env["APP_ENV"] = "missing"
    override = ex.dir / "app-env.yaml"
    override.write_text("services:\n  initfetch:\n    environment:\n      APP_ENV: ${APP_ENV}\n")
    ex.files.append(override)
    proc = _run_app(engine, ex, "/bin/sh", "-c", "echo APP-STARTED")
    assert proc.returncode != 0
    assert "APP-STARTED" not in proc.stdout
    state = engine.run(["ps", "-a", "--filter", f"label=com.docker.compose.project={ex.project}",
                        "--filter", "label=com.docker.compose.service=initfetch",
                        "--format", "{{.Status}}"]).stdout  # fmt: skip
    assert "Exited (3)" in state, state
    logs = engine.compose_run(ex.files, ["logs", "--no-color", "initfetch"], ex.project, ex.env).stdout
    assert "secret/missing/myapp/db" in logs and "not-found" in logs
    assert CANARY_DB_PASS not in logs and ex.env["VAULT_TOKEN"] not in logs


# -- b. ENTRYPOINT wrapper --------------------------------------------------------------------


def test_exec_wrapper_app_gets_files_and_env(engine, example_factory) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("entrypoint-wrapper", "exec-wrapper.yaml")
    rep, _ = _report(engine, ex, out="/run/initfetch")
    _assert_rendered(rep, "/run/initfetch", {"database.json"})
    env = dict(
        line.split("=", 1)
        for line in base64.b64decode(rep["ENVDUMP"][0]).decode().splitlines()
        if "=" in line
    )
    assert (
        env["DB_PASSWORD"] == CANARY_DB_PASS
        and env["API_KEY"] == CANARY_API_KEY
        and env["DB_USER"] == DB_USER
    )
    # The login credential was removed before exec, and so were initfetch's own settings.
    assert "VAULT_TOKEN" not in env
    assert not any(k.startswith("INITFETCH_") for k in env)


def test_exec_wrapper_exit_code_propagates(engine, example_factory) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("entrypoint-wrapper", "exec-wrapper.yaml")
    proc = _run_app(engine, ex, "/bin/sh", "-c", "echo APP-STARTED; exit 7")
    assert proc.returncode == 7, proc.stderr[-2000:]
    assert "APP-STARTED" in proc.stdout


def test_exec_wrapper_missing_secret_exits_3_app_never_starts(engine, example_factory) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("entrypoint-wrapper", "exec-wrapper.yaml")
    proc = _run_app(engine, ex, "/bin/sh", "-c", "echo APP-STARTED", extra=("-e", "APP_ENV=missing"))
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "APP-STARTED" not in proc.stdout
    both = proc.stdout + proc.stderr
    assert "secret/missing/myapp/db" in both and "not-found" in both
    assert CANARY_DB_PASS not in both and ex.env["VAULT_TOKEN"] not in both


# -- c. local preview -----------------------------------------------------------------------


def test_local_preview_is_masked(engine, example_factory) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("local-preview", "exec-wrapper.yaml", APP_ENV="prod")
    ex.files = ex.files[:1]  # the example already uses host networking
    proc = _run_app(engine, ex, service="preview")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "database.json" in out and "api_key" in out
    assert CANARY_DB_PASS not in out and CANARY_API_KEY not in out and ex.env["VAULT_TOKEN"] not in out


# -- d. credential bootstrapping --------------------------------------------------------------


def _write_bootstrap_secrets(ex, role_id: str, secret_id: str) -> None:  # type: ignore[no-untyped-def]
    # Outside swarm, file secrets are bind mounts with the host file's owner and mode.
    for name, value in (("vault_role_id", role_id), ("vault_secret_id", secret_id)):
        path: Path = ex.dir / "secrets" / name
        path.write_text(value + "\n")
        os.chown(path, 65532, 65532)
        path.chmod(0o400)


def test_approle_bootstrap_credential_never_reaches_app(engine, example_factory, bao) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("approle-bootstrap", "init-hold.yaml")
    del ex.env["VAULT_TOKEN"]  # AppRole only: no token anywhere
    _write_bootstrap_secrets(ex, bao.role_id, bao.secret_id)
    rep, proc = _report(engine, ex)
    _assert_rendered(rep, "/run/fetched", {"database.json", "api_key"})
    assert rep["SECRETS"] == [""]  # no /run/secrets at all in the app
    everything = proc.stdout + "".join(_contents(rep).values()) + base64.b64decode(rep["ENVDUMP"][0]).decode()
    assert bao.secret_id not in everything and bao.role_id not in everything
    assert "VAULT_" not in rep["ENVNAMES"][0]
    # ...while the initfetch service did have it, as a file.
    ls = engine.compose_run(ex.files, ["exec", "-T", "initfetch", "ls", "/run/secrets"], ex.project, ex.env)
    assert set(ls.stdout.split()) == {"vault_role_id", "vault_secret_id"}


def test_approle_bootstrap_wrong_secret_id_exits_3(engine, example_factory, bao) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("approle-bootstrap", "init-hold.yaml")
    del ex.env["VAULT_TOKEN"]
    wrong = "CANARY-wrong-secret-id-0b1d"
    _write_bootstrap_secrets(ex, bao.role_id, wrong)
    proc = _run_app(engine, ex, "/bin/sh", "-c", "echo APP-STARTED")
    assert proc.returncode != 0 and "APP-STARTED" not in proc.stdout
    logs = engine.compose_run(ex.files, ["logs", "--no-color", "initfetch"], ex.project, ex.env).stdout
    assert "approle" in logs.lower() and wrong not in logs
    state = engine.run(["ps", "-a", "--filter", f"label=com.docker.compose.project={ex.project}",
                        "--filter", "label=com.docker.compose.service=initfetch",
                        "--format", "{{.Status}}"]).stdout  # fmt: skip
    assert "Exited (3)" in state, state
