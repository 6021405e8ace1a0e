"""The compose examples against the cloud backends, end to end on a real Docker engine.

The initfetch image (EXTRAS=all) reads from moto's AWS server (Secrets Manager and a
Parameter Store path prefix) and from the HTTPS Key Vault double (managed identity,
its CA mounted read-only and named by `ca_file`), both on 127.0.0.1 and reached through
host networking, as OpenBao is in test_examples.py. Same checks as there: what the app
container sees (content, 0400, owner 65532, tmpfs), no canary in initfetch's output,
and the login credential stripped from the app's environment by `exec`.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends.keyvault_double import start_keyvault
from tests.backends.moto_server import aws_client, start_moto
from tests.docker.conftest import CANARY_API_KEY, OVERRIDES
from tests.docker.test_examples import _contents, _report

pytestmark = pytest.mark.docker

CANARY_AWS_DB_PASS = "CANARY-awssm-dbpass-5c81e2"
CANARY_SSM_TOKEN = "CANARY-ssm-token-9d04aa"
CANARY_KV_API_KEY = "CANARY-kv-apikey-e63b17"
# moto checks no signature: the secret key is a canary too, so a leak of the login is caught.
CANARY_AWS_SECRET_KEY = "CANARY-aws-secret-key-2f7c"
AWS_DB_USER = "aws-app-user"
REGION = "us-east-1"


@dataclass
class Clouds:
    env: dict[str, str]  # compose interpolation variables for the override files
    ca_file: Path


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clouds]:
    moto = start_moto()
    kv = start_keyvault(tmp_path_factory.mktemp("kv-docker"))
    try:
        aws_client(moto.url, "secretsmanager").create_secret(
            Name="myapp-ci/prod/db",
            SecretString=json.dumps({"username": AWS_DB_USER, "password": CANARY_AWS_DB_PASS}),
        )
        ssm = aws_client(moto.url, "ssm")
        ssm.put_parameter(Name="/myapp-ci/prod/feature/token", Value=CANARY_SSM_TOKEN, Type="SecureString")
        ssm.put_parameter(Name="/myapp-ci/prod/log.level", Value="debug", Type="String")
        kv.set_secret("api-key", CANARY_KV_API_KEY)
        env = {
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_ACCESS_KEY_ID": "AKIAINITFETCHCI",
            "AWS_SECRET_ACCESS_KEY": CANARY_AWS_SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "KV_URL": kv.url,
            **kv.env,  # IDENTITY_ENDPOINT, IDENTITY_HEADER: App Service managed identity
        }
        yield Clouds(env, Path(kv.ca_file))
    finally:
        kv.stop()
        moto.stop()


def _with_clouds(ex, clouds: Clouds) -> None:  # type: ignore[no-untyped-def]
    """Copy the cloud manifests into the example copy, with the double's CA readable by 65532."""
    dst = ex.dir / "clouds"
    shutil.copytree(OVERRIDES / "clouds", dst)
    ca = dst / "kv-ca.pem"
    shutil.copyfile(clouds.ca_file, ca)
    ca.chmod(0o444)  # a bind mount keeps the host file's owner and mode
    ex.env.update(clouds.env)


def _assert_files(rep: dict[str, list[str]], contents: dict[str, str]) -> None:
    """Right content, mode 0400, owner 65532, on a tmpfs, seen by the app as uid 65532."""
    assert rep["UID"] == ["65532:65532"]
    (mount,) = rep["MOUNT"]
    assert mount.split()[2] == "tmpfs", mount
    stats = {line.split()[0].rsplit("/", 1)[1]: line.split()[1:] for line in rep["STAT"]}
    assert set(stats) == set(contents) | {".initfetch-ready.json"}
    for name in contents:
        assert stats[name] == ["400", "65532", "65532"], (name, stats[name])
    seen = _contents(rep)
    for name, want in contents.items():
        assert seen[name].strip() == want.strip(), name


DATABASE_JSON = f'{{"host": "db", "port": 5432, "user": "{AWS_DB_USER}", "password": "{CANARY_AWS_DB_PASS}"}}'


def _app_env(rep: dict[str, list[str]]) -> dict[str, str]:
    dump = base64.b64decode(rep["ENVDUMP"][0]).decode()
    return dict(line.split("=", 1) for line in dump.splitlines() if "=" in line)


# -- a. init + app sharing an in-memory volume, every backend in one manifest -------------------


def test_init_hold_all_clouds(engine, example_factory, clouds) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("init-container-tmpfs", "init-hold-clouds.yaml")
    _with_clouds(ex, clouds)
    rep, proc = _report(engine, ex)
    _assert_files(
        rep,
        {
            "database.json": DATABASE_JSON,  # Secrets Manager, JSON keys
            "settings.env": f"feature/token={CANARY_SSM_TOKEN}\nlog.level=debug\n",  # SSM path prefix
            "api_key": CANARY_KV_API_KEY,  # Key Vault over TLS with the mounted CA
            "vault_api_key": CANARY_API_KEY,  # OpenBao
        },
    )
    # The cloud logins were the initfetch service's business only.
    names = rep["ENVNAMES"][0].split()
    assert not [n for n in names if n.startswith(("AWS_", "IDENTITY_", "VAULT_", "KV_"))], names
    logs = engine.compose_run(ex.files, ["logs", "--no-color", "initfetch"], ex.project, ex.env).stdout
    for canary in (CANARY_AWS_DB_PASS, CANARY_SSM_TOKEN, CANARY_KV_API_KEY, CANARY_AWS_SECRET_KEY, "CANARY"):
        assert canary not in logs + proc.stderr, canary
    # The double's CA reached initfetch read-only, as the file the manifest names.
    mount = engine.compose_run(
        ex.files, ["exec", "-T", "initfetch", "grep", " /etc/initfetch/kv-ca.pem ", "/proc/mounts"],
        ex.project, ex.env,
    ).stdout  # fmt: skip
    assert " ro," in mount, mount


# -- b. ENTRYPOINT wrapper on AWS ---------------------------------------------------------------


def test_exec_wrapper_aws(engine, example_factory, clouds) -> None:  # type: ignore[no-untyped-def]
    ex = example_factory("entrypoint-wrapper", "exec-wrapper-aws.yaml")
    _with_clouds(ex, clouds)
    rep, proc = _report(engine, ex, out="/run/initfetch")
    _assert_files(rep, {"database.json": DATABASE_JSON})
    env = _app_env(rep)
    assert env["DB_USER"] == AWS_DB_USER and env["DB_PASSWORD"] == CANARY_AWS_DB_PASS
    assert env["APP_FEATURE_TOKEN"] == CANARY_SSM_TOKEN and env["APP_LOG_LEVEL"] == "debug"
    # initfetch logged in with the static keys, then removed them before exec.
    assert "AWS_SECRET_ACCESS_KEY" not in env and "AWS_ACCESS_KEY_ID" not in env
    assert CANARY_AWS_SECRET_KEY not in base64.b64decode(rep["ENVDUMP"][0]).decode()
    assert not any(k.startswith("INITFETCH_") for k in env)
    # stderr is initfetch's (the report goes to stdout): no value, no key.
    assert "CANARY" not in proc.stderr, proc.stderr[-2000:]
