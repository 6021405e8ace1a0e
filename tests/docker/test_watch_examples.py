"""The watch-mode examples on a real Docker engine, with a secret changed while the stack is up.

- compose-examples/watch-sidecar: `render --watch` into a tmpfs volume; the app sees the new
  database.json (by checksum) after the KV v2 secret gets a new version.
- compose-examples/watch-exec-wrapper: `exec --watch` as the ENTRYPOINT; a new file version
  reaches the app with SIGHUP, a new `env:` value restarts it with the new environment.

Each test uses its own APP_ENV (its own secret paths), so the shared OpenBao's other
secrets stay as the other tests expect them.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import pytest

from tests.docker import engine as eng
from tests.docker.conftest import DB_USER

pytestmark = pytest.mark.docker

CANARY_OLD = "CANARY-watch-old-3b9f"
CANARY_NEW = "CANARY-watch-new-c71d"
CANARY_KEY = "CANARY-watch-key-0e55"

# Host networking (no bridge on the CI engine), no restart loop, quick healthchecks.
SIDECAR_OVERRIDE = """\
services:
  initfetch:
    network_mode: host
    restart: "no"
    healthcheck:
      interval: 1s
      start_period: 30s
  app:
    network_mode: host
"""
EXEC_OVERRIDE = """\
services:
  app:
    network_mode: host
"""


def fast(example_dir: Path) -> None:
    """Poll every second instead of every 30 s: the example's manifest, otherwise unchanged."""
    manifest = example_dir / "initfetch.yaml"
    text = manifest.read_text()
    assert "refresh: 30s" in text
    manifest.write_text(text.replace("refresh: 30s", "refresh: 1s").replace("refresh: 5m", "refresh: 1s"))


def database_json(password: str) -> bytes:
    """What templates/database.json.j2 renders (its trailing newline kept)."""
    return f'{{"host": "db", "port": 5432, "user": "{DB_USER}", "password": "{password}"}}\n'.encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_logs(engine, ex, service: str, text: str, timeout: float = 120) -> str:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while True:
        logs = engine.compose_run(ex.files, ["logs", "--no-color", service], ex.project, ex.env).stdout
        if text in logs:
            return logs
        if time.monotonic() > end:
            everything = engine.compose_run(ex.files, ["logs", "--no-color"], ex.project, ex.env, check=False)
            ps = engine.compose_run(ex.files, ["ps", "-a"], ex.project, ex.env, check=False)
            raise AssertionError(
                f"{text!r} never appeared in the {service} logs:\n{everything.stdout[-4000:]}"
                f"{everything.stderr[-2000:]}\n{ps.stdout}"
            )
        time.sleep(1)


def seed(bao, env: str, password: str, key: str) -> None:  # type: ignore[no-untyped-def]
    import hvac

    from tests.backends.openbao import ROOT_TOKEN

    c = hvac.Client(url=bao.url, token=ROOT_TOKEN)
    c.secrets.kv.v2.create_or_update_secret(f"{env}/myapp/db", {"username": DB_USER, "password": password})
    c.secrets.kv.v2.create_or_update_secret(f"{env}/myapp/api", {"key": key})


def test_sidecar_rerenders_while_the_stack_is_up(engine, example_factory, bao, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app_env = f"watch{uuid.uuid4().hex[:6]}"
    seed(bao, app_env, CANARY_OLD, CANARY_KEY)
    override = tmp_path / "override.yaml"
    override.write_text(SIDECAR_OVERRIDE)
    ex = example_factory("watch-sidecar", str(override), APP_ENV=app_env)
    fast(ex.dir)
    up = engine.compose_run(
        ex.files, ["up", "-d", "--wait", "initfetch"], ex.project, ex.env, check=False, timeout=240
    )
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    up = engine.compose_run(ex.files, ["up", "-d", "app"], ex.project, ex.env, check=False, timeout=240)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    wait_logs(engine, ex, "app", f"sha256={sha(database_json(CANARY_OLD))}")
    seed(bao, app_env, CANARY_NEW, CANARY_KEY)
    wait_logs(engine, ex, "app", f"sha256={sha(database_json(CANARY_NEW))}")
    logs = wait_logs(engine, ex, "initfetch", "secret db_pass changed")
    assert "(version 1 -> 2)" in logs
    for canary in (CANARY_OLD, CANARY_NEW, CANARY_KEY, ex.env["VAULT_TOKEN"]):
        assert canary not in logs
    # The sidecar is healthy with --max-stale while refreshes succeed.
    ps = engine.run(["ps", "--filter", f"label=com.docker.compose.project={ex.project}",
                     "--format", "{{.Names}} {{.Status}}"]).stdout  # fmt: skip
    assert "(healthy)" in ps, ps


@pytest.fixture(scope="module")
def watch_app_image(engine, images) -> str:  # type: ignore[no-untyped-def]
    app_dir = eng.REPO / "compose-examples" / "watch-exec-wrapper"
    tag = "localhost/myapp-watch-with-initfetch:ci"
    engine.run(
        ["build", "--network", "none", "--build-arg", f"INITFETCH_IMAGE={images.initfetch}",
         "-f", str(app_dir / "Dockerfile.app"), "-t", tag, str(app_dir)],
        timeout=300,
    )  # fmt: skip
    return tag


def test_exec_watch_signals_on_a_file_change_and_restarts_on_an_env_change(  # type: ignore[no-untyped-def]
    engine, example_factory, bao, watch_app_image, tmp_path
) -> None:
    app_env = f"watch{uuid.uuid4().hex[:6]}"
    seed(bao, app_env, CANARY_OLD, CANARY_KEY)
    override = tmp_path / "override.yaml"
    override.write_text(EXEC_OVERRIDE)
    ex = example_factory("watch-exec-wrapper", str(override), APP_ENV=app_env, APP_IMAGE=watch_app_image)
    fast(ex.dir)
    # The image carries its own manifest: mount the fast one over it.
    ex.env["WATCH_MANIFEST"] = str(ex.dir / "initfetch.yaml")
    override.write_text(
        EXEC_OVERRIDE + "    volumes:\n      - ${WATCH_MANIFEST}:/etc/initfetch/initfetch.yaml:ro\n"
    )
    up = engine.compose_run(
        ex.files, ["up", "-d", "--no-build", "app"], ex.project, ex.env, check=False, timeout=240
    )
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    old_pw = sha(CANARY_OLD.encode())
    wait_logs(engine, ex, "app", f"DB_PASSWORD sha256={old_pw}")
    # A new api key: a file only, so SIGHUP, and the app reads the new file.
    seed(bao, app_env, CANARY_OLD, CANARY_KEY + "-2")
    wait_logs(engine, ex, "app", f"app: reloaded api_key sha256={sha((CANARY_KEY + '-2').encode())}")
    # A new password: an env value, so a restart with the new environment.
    seed(bao, app_env, CANARY_NEW, CANARY_KEY + "-2")
    logs = wait_logs(engine, ex, "app", f"DB_PASSWORD sha256={sha(CANARY_NEW.encode())}")
    assert "app: stopping" in logs  # the old process was asked to stop first
    assert "cannot see a new environment" in logs
    for canary in (CANARY_OLD, CANARY_NEW, CANARY_KEY, ex.env["VAULT_TOKEN"]):
        assert canary not in logs
    # docker stop: SIGTERM forwarded, the app's own exit code (0 from its trap) is the container's.
    stop = engine.compose_run(
        ex.files, ["stop", "-t", "20", "app"], ex.project, ex.env, check=False, timeout=120
    )
    assert stop.returncode == 0, stop.stderr
    ps = engine.compose_run(
        ex.files, ["ps", "-a", "--format", "{{.State}} {{.ExitCode}}"], ex.project, ex.env
    )
    assert "exited 0" in ps.stdout, ps.stdout
