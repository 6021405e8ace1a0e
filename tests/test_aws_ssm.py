"""ssm:// against moto's server with the real boto3 (no SDK mocks)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from initfetch.errors import BadVersion, NotFound, SecretError
from initfetch.manifest import env_var_names
from initfetch.providers.aws_ssm import ParameterStoreProvider
from initfetch.providers.base import Document, FetchContext
from initfetch.reference import DocKey, parse
from tests.backends.moto_server import aws_client, aws_env_fixture, moto_url_fixture  # noqa: F401

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
        "import sys, initfetch.providers.aws_secretsmanager, initfetch.providers.aws_ssm;"
        "from initfetch.reference import parse;"
        "initfetch.providers.aws_ssm.ParameterStoreProvider.check_reference(parse('ssm:///a/b'));"
        "sys.exit(int(any(m.split('.')[0] in ('boto3', 'botocore') for m in sys.modules)))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
