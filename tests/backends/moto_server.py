"""moto's server on 127.0.0.1 for the AWS providers' tests and `make demo`.

Plain use (the demo):

    handle = start_moto()          # .url, .stop()
    seed_demo(handle.url)          # a few demo secrets and parameters
    ...
    handle.stop()

In tests, the `moto_url` fixture gives one shared server per test process
(started on first use) and `aws_env` points the standard AWS variables of
this process at it, with dummy keys and no profile, config file or IMDS.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

REGION = "us-east-1"
ACCOUNT = "123456789012"

# Variables that would otherwise leak the developer's own AWS setup into tests.
_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    "AWS_ENDPOINT_URL_SSM",
    "AWS_ENDPOINT_URL_STS",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
)


@dataclass
class MotoHandle:
    url: str
    server: Any

    def stop(self) -> None:
        self.server.stop()


def start_moto() -> MotoHandle:
    """Start moto's ThreadedMotoServer on 127.0.0.1, on a free port."""
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request even with verbose=False.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return MotoHandle(f"http://{host}:{port}", server)


def aws_client(url: str, service: str) -> Any:
    """A plain boto3 client on moto, for seeding (independent of the environment)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto does not check signatures
    )


def seed_demo(url: str) -> dict[str, str]:
    """Create demo secrets and parameters; returns name -> what it is, for the demo's README."""
    sm = aws_client(url, "secretsmanager")
    ssm = aws_client(url, "ssm")
    sm.create_secret(
        Name="demo/db", SecretString=json.dumps({"username": "app", "password": "demo-db-password-v1"})
    )
    sm.put_secret_value(
        SecretId="demo/db", SecretString=json.dumps({"username": "app", "password": "demo-db-password-v2"})
    )
    sm.create_secret(Name="demo/api-key", SecretString="demo-api-key")
    sm.create_secret(Name="demo/tls-key", SecretBinary=b"\x00demo-binary\xff")
    for name, value, kind in (
        ("/demo/prod/db/password", "demo-ssm-db-password", "SecureString"),
        ("/demo/prod/db/user", "app", "String"),
        ("/demo/prod/feature-flags", "a,b,c", "StringList"),
        ("/demo/prod/log.level", "info", "String"),
    ):
        ssm.put_parameter(Name=name, Value=value, Type=kind)
    return {
        "awssm://demo/db": "JSON secret, two versions (AWSCURRENT, AWSPREVIOUS)",
        "awssm://demo/api-key": "plain string secret",
        "awssm://demo/tls-key": "binary secret",
        "ssm:///demo/prod/": "parameter prefix: db/password, db/user, feature-flags, log.level",
    }


def set_auth_enforced(url: str, enforced: bool) -> None:
    """Turn moto's IAM enforcement on (every request checked) or off."""
    body = b"0" if enforced else b"inf"
    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth", data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=5).read()  # noqa: S310 - a loopback URL we built


# --- pytest fixtures ---------------------------------------------------------------

_shared: MotoHandle | None = None
_shared_lock = threading.Lock()


def shared_moto() -> MotoHandle:
    """One server per test process: test modules import the fixtures below separately."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = start_moto()
            atexit.register(_shared.stop)
        return _shared


# Fixture functions carry a different Python name than the fixture, so a test
# module imports them (`from tests.backends.moto_server import moto_fixtures`)
# without its parameters shadowing the import.
@pytest.fixture(scope="session", name="moto_url")
def moto_url_fixture() -> str:
    return shared_moto().url


@pytest.fixture(name="aws_env")
def aws_env_fixture(
    moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> Iterator[dict[str, str]]:
    """Point this process's standard AWS variables at moto; yields the variables set."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    values = {
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield values


moto_fixtures = (moto_url_fixture, aws_env_fixture)
