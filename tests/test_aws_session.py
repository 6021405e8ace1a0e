"""Credentials, regions, endpoints, assume-role, retries and timeouts of the AWS providers.

Everything runs the real boto3 over HTTP against moto's server, or against a
tiny stdlib server that answers every request with a chosen AWS error (for
throttling and 5xx, which moto does not produce).
"""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from initfetch.errors import AccessDenied, BadReference, Unavailable
from initfetch.providers.aws.secretsmanager import SecretsManagerProvider
from initfetch.providers.aws.session import MAX_ATTEMPTS, timeout_bucket
from initfetch.providers.aws.ssm import ParameterStoreProvider
from initfetch.providers.base import FetchContext
from initfetch.reference import DocKey
from tests.backends.local_http import LocalServer, QuietHandler, free_port
from tests.backends.moto_server import ACCOUNT, aws_client, aws_env_fixture, moto_url_fixture  # noqa: F401

CANARY = "CANARY-awssess-0b1d"


def ctx(seconds: float = 30) -> FetchContext:
    return FetchContext(time.monotonic() + seconds)


def sm_provider(options: dict[str, Any] | None = None, name: str = "awssm") -> SecretsManagerProvider:
    return SecretsManagerProvider(name, options or {}, dict(os.environ))


def new_secret(moto_url: str, value: str, region: str = "us-east-1", **creds: str) -> str:
    name = f"sess/{uuid.uuid4().hex[:8]}"
    client = aws_client(moto_url, "secretsmanager")
    if region != "us-east-1" or creds:
        import boto3

        client = boto3.client(
            "secretsmanager",
            endpoint_url=moto_url,
            region_name=region,
            aws_access_key_id=creds.get("key", "testing"),
            aws_secret_access_key=creds.get("secret", "testing"),
            aws_session_token=creds.get("token"),
        )
    client.create_secret(Name=name, SecretString=value)
    return name


def assumed_roles(account: str) -> list[Any]:
    # ThreadedMotoServer runs in this process: read the real STS backend's record.
    from moto.sts.models import sts_backends

    return list(sts_backends[account]["aws"].assumed_roles)


# --- region and profile -------------------------------------------------------------


def test_region_option_beats_environment(aws_env: dict[str, str], moto_url: str) -> None:
    name = new_secret(moto_url, "frankfurt", region="eu-central-1")
    assert sm_provider({"region": "eu-central-1"}).fetch(DocKey(name), ctx()).value == "frankfurt"
    with pytest.raises(Exception, match="not found"):
        sm_provider().fetch(DocKey(name), ctx())  # AWS_DEFAULT_REGION=us-east-1


def test_aws_region_variable_beats_default_region(
    aws_env: dict[str, str], moto_url: str, monkeypatch: Any
) -> None:
    name = new_secret(moto_url, "paris", region="eu-west-3")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert sm_provider().fetch(DocKey(name), ctx()).value == "paris"


def test_arn_reference_uses_the_arns_region(aws_env: dict[str, str], moto_url: str) -> None:
    name = new_secret(moto_url, "tokyo", region="ap-northeast-1")
    import boto3

    arn = boto3.client(
        "secretsmanager",
        endpoint_url=moto_url,
        region_name="ap-northeast-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106
    ).describe_secret(SecretId=name)["ARN"]
    here = new_secret(moto_url, "virginia")
    p = sm_provider()  # AWS_DEFAULT_REGION=us-east-1
    assert p.fetch(DocKey(arn), ctx()).value == "tokyo"
    out = p.fetch_many([DocKey(arn), DocKey(here)], ctx())  # one batch per region
    assert {d.path: v.value for d, v in out.items()} == {arn: "tokyo", here: "virginia"}  # type: ignore[union-attr]


def test_missing_region_is_one_clear_line(aws_env: dict[str, str], monkeypatch: Any) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with pytest.raises(BadReference) as e:
        sm_provider().fetch(DocKey("x"), ctx())
    message = str(e.value)
    assert "no AWS region for provider 'awssm'" in message and "AWS_REGION" in message and "\n" not in message


def test_profile_gives_region_and_credentials(
    aws_env: dict[str, str], moto_url: str, monkeypatch: Any
) -> None:
    name = new_secret(moto_url, "london", region="eu-west-2")
    with open(aws_env["AWS_CONFIG_FILE"], "w") as f:
        f.write("[profile dev]\nregion = eu-west-2\n")
    with open(aws_env["AWS_SHARED_CREDENTIALS_FILE"], "w") as f:
        f.write("[dev]\naws_access_key_id = fromprofile\naws_secret_access_key = fromprofile\n")
    for var in ("AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    p = sm_provider({"profile": "dev"})
    assert p.fetch(DocKey(name), ctx()).value == "london"
    assert p.aws.region == "eu-west-2"
    assert p.credential_env() == set()  # nothing came from the environment
    with pytest.raises(BadReference, match="ProfileNotFound"):
        sm_provider({"profile": "nope"}).fetch(DocKey(name), ctx())


# --- credential_env -------------------------------------------------------------------


def test_credential_env_reports_environment_keys(
    aws_env: dict[str, str], moto_url: str, monkeypatch: Any
) -> None:
    name = new_secret(moto_url, "x")
    p = sm_provider()
    assert p.credential_env() == set()  # not logged in yet
    p.fetch(DocKey(name), ctx())
    assert p.credential_env() == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    p2 = ParameterStoreProvider("ssm", {}, dict(os.environ))
    with pytest.raises(Exception, match="not found"):
        p2.fetch(DocKey("/no/such/param"), ctx())
    assert p2.credential_env() == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


# --- assume role, web identity, two accounts ------------------------------------------------


def test_assume_role_with_external_id_reads_the_other_account(
    aws_env: dict[str, str],
    moto_url: str,
    monkeypatch: Any,
) -> None:
    other = "222222222222"
    role = f"arn:aws:iam::{other}:role/app-secrets"
    # Seed the other account with the role's own credentials.
    creds = aws_client(moto_url, "sts").assume_role(RoleArn=role, RoleSessionName="seed")["Credentials"]
    b = new_secret(
        moto_url,
        "in-account-b",
        key=creds["AccessKeyId"],
        secret=creds["SecretAccessKey"],
        token=creds["SessionToken"],
    )
    aws_client(moto_url, "secretsmanager").create_secret(Name=b, SecretString="in-account-a")
    # The instance's endpoint_url must carry STS too (LocalStack): no AWS_ENDPOINT_URL here.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    before = len(assumed_roles(other))
    options = {
        "endpoint_url": moto_url,
        "role_arn": role,
        "external_id": "xyz-123",
        "session_name": "initfetch-test",
        "duration_seconds": 1800,
    }
    account_b = sm_provider(options, name="aws-b")
    account_a = sm_provider({"endpoint_url": moto_url}, name="aws-a")
    assert account_b.fetch(DocKey(b), ctx()).value == "in-account-b"
    assert account_a.fetch(DocKey(b), ctx()).value == "in-account-a"
    roles = assumed_roles(other)[before:]
    assert len(roles) == 1
    assert roles[0].external_id == "xyz-123" and roles[0].session_name == "initfetch-test"
    lifetime = roles[0].expiration - datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert datetime.timedelta(minutes=25) < lifetime <= datetime.timedelta(minutes=30)
    identity = account_b.aws.client("sts", ctx()).get_caller_identity()
    assert (
        identity["Arn"].endswith("assumed-role/app-secrets/initfetch-test") and identity["Account"] == other
    )
    # The base credentials came from the environment: they are the ones to strip.
    assert account_b.credential_env() == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def test_web_identity_from_environment(
    aws_env: dict[str, str],
    moto_url: str,
    monkeypatch: Any,
    tmp_path: Any,
) -> None:
    name = new_secret(moto_url, "via-irsa")
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwIn0.c2ln")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_ROLE_ARN", f"arn:aws:iam::{ACCOUNT}:role/irsa-role")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "irsa-session")
    p = sm_provider()
    assert p.fetch(DocKey(name), ctx()).value == "via-irsa"
    identity = p.aws.client("sts", ctx()).get_caller_identity()
    assert identity["Arn"].endswith("assumed-role/irsa-role/irsa-session")
    # Pointers to the pod identity are not credentials in themselves: the app keeps them.
    assert p.credential_env() == set()


# --- endpoints ------------------------------------------------------------------------------


def test_per_service_endpoint_variable(aws_env: dict[str, str], moto_url: str, monkeypatch: Any) -> None:
    name = new_secret(moto_url, "localstack-style")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # wrong on purpose
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_url)
    assert sm_provider().fetch(DocKey(name), ctx()).value == "localstack-style"


def test_connection_refused_is_unavailable_quickly(aws_env: dict[str, str]) -> None:
    p = sm_provider({"endpoint_url": f"http://127.0.0.1:{free_port()}"})
    start = time.monotonic()
    with pytest.raises(Unavailable, match="cannot reach AWS"):
        p.fetch(DocKey("x"), ctx())
    with pytest.raises(Unavailable):
        p.fetch_many([DocKey("a"), DocKey("b")], ctx())  # a whole-batch failure is raised
    assert time.monotonic() - start < 5


# --- faults moto cannot produce: throttling, 5xx ---------------------------------------------


class FaultServer(LocalServer):
    """Answers every AWS JSON-protocol request with one fixed error; counts requests."""

    def __init__(self) -> None:
        self.status, self.error_type, self.hits, self.delay = 500, "InternalServiceError", 0, 0.0
        outer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.hits += 1
                time.sleep(outer.delay)
                body = json.dumps({"__type": outer.error_type, "message": "injected"}).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.mark.parametrize(
    ("status", "error_type", "expected", "attempts"),
    [
        (400, "ThrottlingException", Unavailable, MAX_ATTEMPTS),
        (500, "InternalServiceError", Unavailable, MAX_ATTEMPTS),
        (503, "ServiceUnavailable", Unavailable, MAX_ATTEMPTS),
        (400, "AccessDeniedException", AccessDenied, 1),
        (400, "ValidationException", BadReference, 1),
    ],
)
def test_transient_and_permanent_errors(
    aws_env: dict[str, str],
    faults: FaultServer,
    status: int,
    error_type: str,
    expected: type[Exception],
    attempts: int,
) -> None:
    faults.status, faults.error_type, faults.hits = status, error_type, 0
    for provider in (
        sm_provider({"endpoint_url": faults.url}),
        ParameterStoreProvider("ssm", {"endpoint_url": faults.url}, dict(os.environ)),
    ):
        faults.hits = 0
        with pytest.raises(expected):
            provider.fetch(DocKey("/x/y"), ctx())
        assert faults.hits == attempts  # botocore retries at most once; the resolver owns retrying


def test_read_timeout_is_unavailable_within_the_deadline(
    aws_env: dict[str, str], faults: FaultServer
) -> None:
    faults.status, faults.error_type, faults.hits, faults.delay = 400, "AccessDeniedException", 0, 2.5
    try:
        start = time.monotonic()
        with pytest.raises(Unavailable, match="ReadTimeoutError"):
            sm_provider({"endpoint_url": faults.url}).fetch(DocKey("x"), ctx(3))  # 1 s timeout bucket
        elapsed = time.monotonic() - start
    finally:
        faults.delay = 0.0
    assert faults.hits == MAX_ATTEMPTS and elapsed < 2 * MAX_ATTEMPTS + 1


# --- concurrency and timeouts ---------------------------------------------------------------


def test_one_client_shared_by_many_threads(aws_env: dict[str, str], moto_url: str) -> None:
    names = [new_secret(moto_url, f"t{i}") for i in range(4)]
    p = sm_provider()
    results: list[Any] = []
    barrier = threading.Barrier(16)

    def work(i: int) -> None:
        barrier.wait()
        results.append(p.fetch(DocKey(names[i % 4]), ctx()).value)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"t{i % 4}" for i in range(16))
    assert len(p.aws._clients) == 1


def test_timeout_fits_the_deadline() -> None:
    assert timeout_bucket(ctx(100)) == 10.0
    assert timeout_bucket(ctx(12)) == 5.0  # both attempts fit: 2 x 5 s
    assert timeout_bucket(ctx(5)) == 2.0
    assert timeout_bucket(ctx(0.2)) == 1.0  # the floor
