"""End to end: the initfetch CLI (a subprocess) against moto's server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.backends.local_http import free_port
from tests.backends.moto_server import REGION, aws_client, moto_url_fixture  # noqa: F401
from tests.conftest import require

CANARY = "CANARY-awscli-93e1"
INITFETCH = Path(sys.executable).parent / "initfetch"


@pytest.fixture(scope="module")
def seeded(moto_url: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    sm, ssm = aws_client(moto_url, "secretsmanager"), aws_client(moto_url, "ssm")
    db = f"cli{tag}/db"
    sm.create_secret(Name=db, SecretString=json.dumps({"user": "app", "password": CANARY + "-old"}))
    sm.put_secret_value(SecretId=db, SecretString=json.dumps({"user": "app", "password": CANARY + "-new"}))
    prefix = f"/cli{tag}/prod/"
    ssm.put_parameter(Name=prefix + "db/password", Value=CANARY + "-ssm", Type="SecureString")
    ssm.put_parameter(Name=prefix + "log-level", Value="debug", Type="String")
    import boto3

    boto3.client(
        "secretsmanager",
        endpoint_url=moto_url,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106
    ).create_secret(Name=db, SecretString=json.dumps({"password": "eu-" + CANARY}))
    return {"db": db, "prefix": prefix, "url": moto_url}


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    require(INITFETCH.exists(), "the initfetch entry point is not installed in the venv")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INITFETCH_"))}
    return subprocess.run(
        [str(INITFETCH), *args], env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def aws_env(seeded: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": seeded["url"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": str(tmp_path),
    }


def test_render_secrets_manager_ssm_prefix_and_second_region(seeded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "app.json.j2").write_text(
        "{"
        '"pw": {{ secrets.pw | tojson }}, "old": {{ secrets.old | tojson }},'
        ' "eu": {{ secrets.eu | tojson }}, "ssm": {{ secrets.conf | tojson }},'
        ' "version": {{ meta.pw.version | tojson }}'
        "}\n"
    )
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\n"
        "providers:\n"
        "  aws-eu:\n"
        "    type: aws-secretsmanager\n"
        "    region: eu-west-1\n"
        "secrets:\n"
        f"  pw: awssm://{seeded['db']}#password\n"
        f"  user: awssm://{seeded['db']}#user\n"
        f"  old: awssm://{seeded['db']}?stage=AWSPREVIOUS#password\n"
        f"  eu: aws-eu://{seeded['db']}#password\n"
        f"  conf: ssm://{seeded['prefix']}\n"
        "templates:\n"
        "  - src: app.json.j2\n"
        "    dest: app.json\n"
    )
    out = tmp_path / "out"
    r = run(["render", "-o", str(out), "--allow-disk"], aws_env(seeded, tmp_path), tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads((out / "app.json").read_text())
    assert got["pw"] == CANARY + "-new" and got["old"] == CANARY + "-old" and got["eu"] == "eu-" + CANARY
    assert got["ssm"] == {"db/password": CANARY + "-ssm", "log-level": "debug"}
    assert isinstance(got["version"], str) and len(got["version"]) >= 32
    assert CANARY not in r.stderr + r.stdout


def test_failures_are_reported_together(seeded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\n"
        "secrets:\n"
        f"  a: awssm://{seeded['db']}#nokey\n"
        f"  b: awssm://{seeded['db']}?stage=NOPE#password\n"
        "  c: awssm://cli-no-such-secret\n"
        f"  d: ssm://{seeded['prefix']}db/password?version=9\n"
    )
    r = run(["render", "-o", str(tmp_path / "out"), "--allow-disk"], aws_env(seeded, tmp_path), tmp_path)
    assert r.returncode == 3, r.stderr
    for expected in ("missing-key", "bad-version", "not-found", "no stage 'NOPE'", "no version 9"):
        assert expected in r.stderr
    assert CANARY not in r.stderr + r.stdout
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_exec_strips_environment_credentials(seeded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\n"
        "secrets:\n"
        f"  pw: awssm://{seeded['db']}#password\n"
        f"  conf: ssm://{seeded['prefix']}\n"
        "env:\n"
        '  DB_PASSWORD: "{{ secrets.pw }}"\n'
        "env_from:\n"
        "  - secret: conf\n"
        "    prefix: APP_\n"
    )
    names = ["DB_PASSWORD", "APP_DB_PASSWORD", "APP_LOG_LEVEL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    names.append("AWS_DEFAULT_REGION")
    probe = f"import os, json; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))"
    r = run(
        ["exec", "-o", str(tmp_path / "out"), "--allow-disk", "--", sys.executable, "-c", probe],
        aws_env(seeded, tmp_path),
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    seen: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {
        "DB_PASSWORD": CANARY + "-new",
        "APP_DB_PASSWORD": CANARY + "-ssm",
        "APP_LOG_LEVEL": "debug",
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_DEFAULT_REGION": REGION,
    }


def test_unreachable_endpoint_exits_4(seeded: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\n"
        "providers:\n"
        "  awssm:\n"
        "    type: aws-secretsmanager\n"
        f"    endpoint_url: http://127.0.0.1:{free_port()}\n"
        "secrets:\n"
        "  pw: awssm://anything#password\n"
    )
    r = run(
        ["render", "-o", str(tmp_path / "out"), "--allow-disk", "--timeout", "2"],
        aws_env(seeded, tmp_path),
        tmp_path,
    )
    assert r.returncode == 4, r.stderr
    assert "unavailable" in r.stderr


def test_demo_helpers_start_seed_and_stop() -> None:
    from initfetch.manifest import env_var_names
    from initfetch.providers.aws.ssm import ParameterStoreProvider
    from initfetch.providers.base import FetchContext
    from initfetch.reference import DocKey
    from tests.backends.moto_server import seed_demo, start_moto

    handle = start_moto()
    try:
        described = seed_demo(handle.url)
        assert "ssm:///demo/prod/" in described
        environ = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"}
        p = ParameterStoreProvider("ssm", {"endpoint_url": handle.url, "region": REGION}, environ)
        import time

        doc = p.fetch(DocKey("/demo/prod/"), FetchContext(time.monotonic() + 30))
        env = {n: doc.value[k] for k, n in env_var_names(doc.value, "").items()}
        assert env["DB_PASSWORD"] == "demo-ssm-db-password"
    finally:
        handle.stop()
