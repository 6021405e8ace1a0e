"""ssm:// against moto's server with the real boto3 (no SDK mocks)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from initfetch.errors import AccessDenied, BadVersion, NotFound, SecretError
from initfetch.manifest import env_var_names
from initfetch.providers.aws.ssm import ParameterStoreProvider
from initfetch.providers.base import Document, FetchContext
from initfetch.reference import DocKey, parse
from tests.backends.moto_server import (  # noqa: F401
    ACCOUNT,
    REGION,
    aws_client,
    aws_env_fixture,
    moto_url_fixture,
    set_auth_enforced,
)

CANARY = "CANARY-ssm-51c0de"


def ctx(seconds: float = 30) -> FetchContext:
    return FetchContext(time.monotonic() + seconds)


def provider(options: dict[str, Any] | None = None) -> ParameterStoreProvider:
    return ParameterStoreProvider("ssm", options or {}, dict(os.environ))


def env_names(values: dict[str, Any]) -> dict[str, Any]:
    """Variable name -> value, named by the core's `env_from` rule (no prefix)."""
    names = env_var_names(values, "")
    return {names[k]: v for k, v in values.items()}


def prefix() -> str:
    return f"/t{uuid.uuid4().hex[:8]}/prod/"


def count_calls(p: ParameterStoreProvider) -> Counter[str]:
    calls: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    p.aws.client("ssm", ctx()).meta.events.register("before-call.ssm.*", hook)
    return calls


@pytest.fixture
def ssm(aws_env: dict[str, str], moto_url: str) -> Any:
    return aws_client(moto_url, "ssm")


def test_securestring_is_decrypted(ssm: Any) -> None:
    name = prefix() + "db_password"
    ssm.put_parameter(Name=name, Value=CANARY, Type="SecureString")
    doc = provider().fetch(DocKey(name), ctx())
    assert doc.value == CANARY and doc.version == "1"
    assert doc.metadata["type"] == "SecureString" and doc.metadata["name"] == name
    assert CANARY not in repr(doc.metadata)


def test_version_and_label(ssm: Any) -> None:
    name = prefix() + "p"
    for v in ("one", "two", "three"):
        ssm.put_parameter(Name=name, Value=v, Type="SecureString", Overwrite=True)
    ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=["blue"])
    p = provider()
    assert p.fetch(DocKey(name), ctx()).value == "three"
    one = p.fetch(DocKey(name, (("version", "1"),)), ctx())
    assert one.value == "one" and one.version == "1"
    blue = p.fetch(DocKey(name, (("label", "blue"),)), ctx())
    assert blue.value == "two" and blue.version == "2"
    with pytest.raises(BadVersion, match="no version 9"):
        p.fetch(DocKey(name, (("version", "9"),)), ctx())
    with pytest.raises(BadVersion, match="label 'green'"):
        p.fetch(DocKey(name, (("label", "green"),)), ctx())
    with pytest.raises(NotFound, match="parameter not found"):
        p.fetch(DocKey(name + "-missing"), ctx())


def test_secrets_manager_reference(ssm: Any, moto_url: str) -> None:
    name = f"ref/{uuid.uuid4().hex[:8]}"
    aws_client(moto_url, "secretsmanager").create_secret(Name=name, SecretString=json.dumps({"k": CANARY}))
    path = f"/aws/reference/secretsmanager/{name}"
    assert json.loads(provider().fetch(DocKey(path), ctx()).value) == {"k": CANARY}
    out = provider().fetch_many([DocKey(path)], ctx())
    assert json.loads(out[DocKey(path)].value) == {"k": CANARY}  # type: ignore[union-attr]


def test_path_prefix_is_a_map_recursive_and_paginated(ssm: Any) -> None:
    pre = prefix()
    expected = {f"app/k{i:02d}": f"v{i}" for i in range(23)}  # more than one page (10 max)
    expected.update({"db/password": CANARY, "db-host": "db.local", "log.level": "info"})
    for rel, value in expected.items():
        ssm.put_parameter(Name=pre + rel, Value=value, Type="SecureString")
    ssm.put_parameter(Name=pre.rstrip("/") + "x/outside", Value="no", Type="String")  # a sibling, not below
    p = provider()
    calls = count_calls(p)
    doc = p.fetch(DocKey(pre), ctx())
    assert doc.value == expected
    assert calls["GetParametersByPath"] >= 3
    assert doc.metadata["count"] == len(expected) and doc.metadata["versions"]["db/password"] == 1
    assert CANARY not in repr(doc.metadata) and CANARY not in str(doc.version)
    shallow = p.fetch(DocKey(pre, (("recursive", "false"),)), ctx())
    assert shallow.value == {"db-host": "db.local", "log.level": "info"}
    env = env_names(doc.value)
    assert env["DB_PASSWORD"] == CANARY and env["DB_HOST"] == "db.local" and env["LOG_LEVEL"] == "info"
    assert env["APP_K07"] == "v7"
    with pytest.raises(NotFound, match="no parameters under"):
        p.fetch(DocKey(prefix()), ctx())


def test_env_names_mapping() -> None:
    assert env_names({"db/password": "x", "api-key": "y", "tls.cert": "z"}) == {
        "DB_PASSWORD": "x",
        "API_KEY": "y",
        "TLS_CERT": "z",
    }
    with pytest.raises(ValueError, match=r"'1st' does not map to a valid variable name \('1ST'\)") as e:
        env_names({"1st": CANARY})
    assert CANARY not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="two keys map to the variable name DB_PASS") as e2:
        env_names({"db-pass": CANARY, "db_pass": CANARY})
    assert CANARY not in str(e2.value)
    with pytest.raises(ValueError, match="'a:b' does not map to a valid"):
        env_names({"a:b": "x"})
    assert env_names({"/x y/": "v"}) == {"X_Y": "v"}


def test_25_parameters_in_3_get_parameters_calls(ssm: Any) -> None:
    pre = prefix()
    names = [f"{pre}p{i:02d}" for i in range(22)]
    for i, n in enumerate(names):
        ssm.put_parameter(Name=n, Value=f"value-{i}", Type="SecureString")
    ssm.put_parameter(Name=names[0], Value="value-0-new", Type="SecureString", Overwrite=True)
    ssm.label_parameter_version(Name=names[1], ParameterVersion=1, Labels=["stable"])
    docs = [DocKey(n) for n in names] + [
        DocKey(names[0], (("version", "1"),)),  # same parameter, another version: another call
        DocKey(names[1], (("label", "stable"),)),
        DocKey(pre + "missing"),
    ]
    assert len(docs) == 25
    p = provider()
    calls = count_calls(p)
    out = p.fetch_many(docs, ctx())
    assert calls == {"GetParameters": 3}
    for i, n in enumerate(names[1:], start=1):
        doc = out[DocKey(n)]
        assert isinstance(doc, Document) and doc.value == f"value-{i}"
    assert out[DocKey(names[0])].value == "value-0-new"  # type: ignore[union-attr]
    assert out[DocKey(names[0], (("version", "1"),))].value == "value-0"  # type: ignore[union-attr]
    assert out[DocKey(names[1], (("label", "stable"),))].value == "value-1"  # type: ignore[union-attr]
    assert isinstance(out[DocKey(pre + "missing")], NotFound)


def test_batch_pinned_errors_are_per_item(ssm: Any) -> None:
    name = prefix() + "p"
    ssm.put_parameter(Name=name, Value=CANARY, Type="SecureString")
    bad_version, bad_label = DocKey(name, (("version", "7"),)), DocKey(name, (("label", "nope"),))
    out = provider().fetch_many([DocKey(name), bad_version, bad_label], ctx())
    assert out[DocKey(name)].value == CANARY  # type: ignore[union-attr]
    assert isinstance(out[bad_version], BadVersion) and isinstance(out[bad_label], BadVersion)
    assert all(CANARY not in str(v) for v in out.values() if isinstance(v, SecretError))


def _judge_ssm_reads_per_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's server judge GetParameter(s) against each parameter's ARN, as AWS does.

    moto checks SSM actions against Resource "*" only, so a policy scoped by
    path would deny everything. The server runs in this process: its SSM
    request handler checks the policy once per name in the request instead,
    so GetParameters is refused when any one name is outside the policy.
    """
    from moto.ssm.responses import SimpleSystemManagerResponse

    authorize = SimpleSystemManagerResponse._authenticate_and_authorize_normal_action

    def per_parameter(self: Any, resource: str = "*") -> None:
        action = self._get_action()
        names = {"GetParameter": [self._get_param("Name")], "GetParameters": self._get_param("Names")}
        if action not in names:
            return authorize(self, resource)
        for name in names[action]:
            path = name.split(":")[0].lstrip("/")  # without a :version or :label selector
            authorize(self, f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{path}")
        return None

    monkeypatch.setattr(
        SimpleSystemManagerResponse, "_authenticate_and_authorize_normal_action", per_parameter
    )


def _iam_user_keys(moto_url: str, statement: dict[str, Any]) -> dict[str, str]:
    iam = aws_client(moto_url, "iam")
    user = uuid.uuid4().hex[:10]
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_batch_denied_by_a_path_scoped_policy_gives_per_parameter_verdicts(
    ssm: Any, moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    allowed, other = f"/allowed-{tag}/", f"/other-{tag}/"
    ssm.put_parameter(Name=allowed + "db_user", Value="app", Type="String")
    ssm.put_parameter(Name=allowed + "db_password", Value="value-allowed", Type="SecureString")
    ssm.put_parameter(Name=other + "api_key", Value=CANARY, Type="SecureString")
    keys = _iam_user_keys(
        moto_url,
        {
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:GetParameters"],
            "Resource": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{allowed}*",
        },
    )
    user, password, denied = (
        DocKey(allowed + "db_user"),
        DocKey(allowed + "db_password"),
        DocKey(other + "api_key"),
    )
    _judge_ssm_reads_per_parameter(monkeypatch)
    set_auth_enforced(moto_url, True)
    try:
        for k, v in keys.items():
            monkeypatch.setenv(k, v)
        p = provider()
        calls = count_calls(p)
        out = p.fetch_many([user, password, denied], ctx())
        # The batch is refused as a whole; each parameter is then asked alone.
        assert calls == {"GetParameters": 1, "GetParameter": 3}
        assert out[user].value == "app"  # type: ignore[union-attr]
        assert out[password].value == "value-allowed"  # type: ignore[union-attr]
        assert isinstance(out[denied], AccessDenied) and "access denied" in str(out[denied])
        assert CANARY not in str(out[denied])
        # Not remembered: a batch the policy allows is still one call.
        out = p.fetch_many([user, password], ctx())
        assert calls == {"GetParameters": 2, "GetParameter": 3}
        assert out[password].value == "value-allowed"  # type: ignore[union-attr]
    finally:
        set_auth_enforced(moto_url, False)


def test_check_reference() -> None:
    check = ParameterStoreProvider.check_reference
    assert check(parse("ssm:///myapp/prod/db_password?version=4")) is None
    assert check(parse("ssm:///myapp/prod/db_password?label=blue")) is None
    assert check(parse("ssm:///myapp/prod/")) is None
    assert "either version or label" in (check(parse("ssm:///a/b?version=1&label=x")) or "")
    assert "positive integer" in (check(parse("ssm:///a/b?version=latest")) or "")
    assert "version/label do not apply" in (check(parse("ssm:///a/?version=1")) or "")
    assert "unknown query" in (check(parse("ssm:///a/b?stage=x")) or "")
    assert "recursive applies only" in (check(parse("ssm:///a/b?recursive=false")) or "")


def test_modules_do_not_import_boto3() -> None:
    import subprocess
    import sys

    code = (
        "import sys, initfetch.providers.aws.secretsmanager, initfetch.providers.aws.ssm;"
        "from initfetch.reference import parse;"
        "initfetch.providers.aws.ssm.ParameterStoreProvider.check_reference(parse('ssm:///a/b'));"
        "sys.exit(int(any(m.split('.')[0] in ('boto3', 'botocore') for m in sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
