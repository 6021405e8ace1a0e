"""awssm:// against moto's server with the real boto3 (no SDK mocks)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from initfetch.errors import AccessDenied, BadVersion, NotFound, SecretError
from initfetch.providers.aws.secretsmanager import SecretsManagerProvider
from initfetch.providers.base import Document, FetchContext
from initfetch.reference import DocKey, parse
from tests.backends.moto_server import aws_client, aws_env_fixture, moto_url_fixture, set_auth_enforced  # noqa: F401

CANARY = "CANARY-awssm-7f3a9c"


def ctx(seconds: float = 30) -> FetchContext:
    return FetchContext(time.monotonic() + seconds)


def provider(options: dict[str, Any] | None = None, name: str = "awssm") -> SecretsManagerProvider:
    return SecretsManagerProvider(name, options or {}, dict(os.environ))


def uniq(prefix: str = "app") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


def count_calls(p: SecretsManagerProvider) -> Counter[str]:
    """Count real API calls made by the provider's client (botocore event hook)."""
    calls: Counter[str] = Counter()
    client = p.aws.client("secretsmanager", ctx())

    def hook(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.secrets-manager.*", hook)
    return calls


@pytest.fixture
def sm(aws_env: dict[str, str], moto_url: str) -> Any:
    return aws_client(moto_url, "secretsmanager")


def test_name_read_returns_string_version_and_metadata(sm: Any) -> None:
    name = uniq()
    created = sm.create_secret(Name=name, SecretString=json.dumps({"password": CANARY}))
    doc = provider().fetch(DocKey(name), ctx())
    assert isinstance(doc.value, str) and json.loads(doc.value) == {"password": CANARY}
    assert doc.version == created["VersionId"]
    assert doc.metadata["arn"] == created["ARN"] and doc.metadata["name"] == name
    assert doc.metadata["stages"] == ["AWSCURRENT"]
    assert CANARY not in repr(doc.metadata) and CANARY not in str(doc.version)


def test_full_and_partial_arn(sm: Any) -> None:
    name = uniq()
    arn = sm.create_secret(Name=name, SecretString="by-arn")["ARN"]
    p = provider()
    assert p.fetch(DocKey(arn), ctx()).value == "by-arn"
    assert p.fetch(DocKey(arn[:-7]), ctx()).value == "by-arn"  # without the -XXXXXX suffix
    assert SecretsManagerProvider.check_reference(parse(f"awssm://{arn}#k")) is None


def test_stages_and_version_id(sm: Any) -> None:
    name = uniq()
    v1 = sm.create_secret(Name=name, SecretString='{"p": "one"}')["VersionId"]
    v2 = sm.put_secret_value(SecretId=name, SecretString='{"p": "two"}')["VersionId"]
    v3 = sm.put_secret_value(SecretId=name, SecretString='{"p": "green"}', VersionStages=["GREEN"])[
        "VersionId"
    ]
    sm.update_secret_version_stage(SecretId=name, VersionStage="BLUE", MoveToVersionId=v1)
    p = provider()
    current = p.fetch(DocKey(name), ctx())
    assert json.loads(current.value) == {"p": "two"} and current.version == v2
    prev = p.fetch(DocKey(name, (("stage", "AWSPREVIOUS"),)), ctx())
    assert json.loads(prev.value) == {"p": "one"} and prev.version == v1
    assert "AWSPREVIOUS" in prev.metadata["stages"] and "BLUE" in prev.metadata["stages"]
    assert json.loads(p.fetch(DocKey(name, (("stage", "GREEN"),)), ctx()).value) == {"p": "green"}
    assert json.loads(p.fetch(DocKey(name, (("stage", "BLUE"),)), ctx()).value) == {"p": "one"}
    assert p.fetch(DocKey(name, (("version_id", v3),)), ctx()).version == v3


def test_binary_secret_is_bytes(sm: Any) -> None:
    name = uniq()
    sm.create_secret(Name=name, SecretBinary=b"\x00\xffbin")
    value = provider().fetch(DocKey(name), ctx()).value
    assert isinstance(value, bytes) and value == b"\x00\xffbin"


def test_unknown_secret_is_not_found(sm: Any) -> None:
    with pytest.raises(NotFound) as e:
        provider().fetch(DocKey("no/such/secret"), ctx())
    assert str(e.value) == "Secrets Manager: secret not found"


def test_deleted_secret_says_scheduled_for_deletion(sm: Any) -> None:
    name = uniq()
    sm.create_secret(Name=name, SecretString=CANARY)
    sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    with pytest.raises(NotFound) as e:
        provider().fetch(DocKey(name), ctx())
    assert "scheduled for deletion" in str(e.value) and CANARY not in str(e.value)


def test_unknown_stage_and_version_are_bad_version(sm: Any) -> None:
    name = uniq()
    sm.create_secret(Name=name, SecretString=CANARY)
    sm.put_secret_value(SecretId=name, SecretString=CANARY + "2")
    p = provider()
    with pytest.raises(BadVersion) as e:
        p.fetch(DocKey(name, (("stage", "NOPE"),)), ctx())
    assert "no stage 'NOPE'" in str(e.value) and "AWSCURRENT, AWSPREVIOUS" in str(e.value)
    missing = "11111111-2222-3333-4444-555555555555"
    with pytest.raises(BadVersion) as e2:
        p.fetch(DocKey(name, (("version_id", missing),)), ctx())
    assert missing in str(e2.value)
    # A pinned version of a secret that does not exist at all is NotFound, not BadVersion.
    with pytest.raises(NotFound):
        p.fetch(DocKey("no/such/secret", (("stage", "AWSPREVIOUS"),)), ctx())
    for err in (e.value, e2.value):
        assert CANARY not in str(err)


def test_check_reference() -> None:
    check = SecretsManagerProvider.check_reference
    assert check(parse("awssm://myapp/db?stage=AWSPREVIOUS#password")) is None
    assert "unknown query" in (check(parse("awssm://myapp/db?version=3")) or "")
    assert "version_id" in (check(parse("awssm://myapp/db?version_id=short")) or "")
    assert "ARN" in (check(parse("awssm://arn:aws:s3:::bucket")) or "")
    assert "1-512" in (check(parse("awssm://my app")) or "")


def test_check_options() -> None:
    problems = list(
        SecretsManagerProvider.check_options(
            {"region": "eu-west-1", "external_id": "x", "bogus": 1, "duration_seconds": 60}
        )
    )
    text = "\n".join(f"{k}: {m}" for k, m in problems)
    assert "('bogus',): unknown option 'bogus'" in text
    assert "('external_id',): option 'external_id' needs 'role_arn'" in text
    assert "between 900" in text
    assert not list(SecretsManagerProvider.check_options({"region": "eu-west-1", "profile": "p"}))


def test_40_secrets_in_two_batch_calls_with_per_item_errors(sm: Any) -> None:
    base = uniq("batch")
    names = [f"{base}/s{i:02d}" for i in range(38)]
    for i, n in enumerate(names):
        sm.create_secret(Name=n, SecretString=json.dumps({"i": i}))
    gone = f"{base}/gone"
    sm.create_secret(Name=gone, SecretString=CANARY)
    sm.delete_secret(SecretId=gone)
    pinned_name = names[0]
    sm.put_secret_value(SecretId=pinned_name, SecretString='{"i": "new"}')
    docs = [DocKey(n) for n in names] + [DocKey(gone), DocKey(f"{base}/missing")]
    pinned = DocKey(pinned_name, (("stage", "AWSPREVIOUS"),))
    p = provider()
    calls = count_calls(p)
    out = p.fetch_many([*docs, pinned], ctx())
    assert calls == {"BatchGetSecretValue": 2, "GetSecretValue": 1}
    for i, n in enumerate(names[1:], start=1):
        doc = out[DocKey(n)]
        assert isinstance(doc, Document) and json.loads(doc.value) == {"i": i}
    assert json.loads(out[DocKey(pinned_name)].value) == {"i": "new"}  # type: ignore[union-attr]
    assert json.loads(out[pinned].value) == {"i": 0}  # type: ignore[union-attr]
    assert isinstance(out[DocKey(gone)], NotFound) and "deletion" in str(out[DocKey(gone)])
    assert isinstance(out[DocKey(f"{base}/missing")], NotFound)
    assert all(CANARY not in str(v) for v in out.values() if isinstance(v, SecretError))


def test_batch_answers_arn_references(sm: Any) -> None:
    name = uniq()
    arn = sm.create_secret(Name=name, SecretString="arn-batched")["ARN"]
    out = provider().fetch_many([DocKey(arn), DocKey(arn[:-7]), DocKey(name)], ctx())
    assert {v.value for v in out.values()} == {"arn-batched"}  # type: ignore[union-attr]


def _iam_user_keys(moto_url: str, actions: list[str]) -> dict[str, str]:
    """A moto IAM user allowed `actions` (moto checks actions, not resources, for this service)."""
    iam = aws_client(moto_url, "iam")
    user = uuid.uuid4().hex[:10]
    iam.create_user(UserName=user)
    if actions:
        statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_access_denied_and_batch_permission_fallback(sm: Any, moto_url: str, monkeypatch: Any) -> None:
    one, two = uniq("iam"), uniq("iam")
    sm.create_secret(Name=one, SecretString="value-one")
    sm.create_secret(Name=two, SecretString=CANARY)
    nobody = _iam_user_keys(moto_url, [])
    reader = _iam_user_keys(moto_url, ["secretsmanager:GetSecretValue"])  # no BatchGetSecretValue
    set_auth_enforced(moto_url, True)
    try:
        for k, v in nobody.items():
            monkeypatch.setenv(k, v)
        with pytest.raises(AccessDenied) as e:
            provider().fetch(DocKey(two), ctx())
        assert "access denied" in str(e.value) and CANARY not in str(e.value)
        denied = provider().fetch_many([DocKey(one), DocKey(two)], ctx())
        assert all(isinstance(v, AccessDenied) for v in denied.values())

        for k, v in reader.items():
            monkeypatch.setenv(k, v)
        p = provider()
        calls = count_calls(p)
        out = p.fetch_many([DocKey(one), DocKey(two)], ctx())
        # The batch call is denied: each secret is read alone, and the provider remembers.
        assert calls == {"BatchGetSecretValue": 1, "GetSecretValue": 2}
        assert out[DocKey(one)].value == "value-one"  # type: ignore[union-attr]
        assert out[DocKey(two)].value == CANARY  # type: ignore[union-attr]
        p.fetch_many([DocKey(one), DocKey(two)], ctx())
        assert calls == {"BatchGetSecretValue": 1, "GetSecretValue": 4}
    finally:
        set_auth_enforced(moto_url, False)
