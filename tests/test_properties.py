"""Property-based tests: any input gives a parsed value or a clean error, never a traceback."""

from __future__ import annotations

import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initfetch.errors import BadInput
from initfetch.manifest import load_manifest
from initfetch.reference import RefSyntaxError, expand_vars, parse

REF_ALPHABET = string.ascii_letters + string.digits + ":/?#=&$.{}-_~%+ @\n"


@given(st.text(alphabet=REF_ALPHABET, max_size=80) | st.text(max_size=40))
def test_reference_parser_never_crashes(text: str) -> None:
    try:
        ref = parse(text)
    except RefSyntaxError as e:
        assert "\n" not in str(e)
        return
    assert ref.scheme and ref.path
    assert str(ref) == text


@given(
    scheme=st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
    path=st.text(alphabet=string.ascii_letters + string.digits + "/:._-", min_size=1, max_size=40).filter(
        lambda p: p.strip() == p
    ),
    key=st.lists(st.text(alphabet=string.ascii_letters + "~/", min_size=1, max_size=6), max_size=3),
    version=st.none() | st.integers(min_value=1, max_value=999),
)
def test_reference_round_trip(scheme: str, path: str, key: list[str], version: int | None) -> None:
    text = f"{scheme}://{path}"
    if version is not None:
        text += f"?version={version}"
    if key:
        text += "#/" + "/".join(k.replace("~", "~0").replace("/", "~1") for k in key)
    ref = parse(text)
    assert ref.scheme == scheme and ref.path == path
    assert ref.doc.param("version") == (str(version) if version is not None else None)
    assert ref.key == (tuple(key) if key else None)


def test_arn_with_colons_query_and_key() -> None:
    ref = parse(
        "awssm://arn:aws:secretsmanager:eu-west-1:123456789012:secret:myapp/db-AbCdEf?stage=AWSPREVIOUS#password"
    )
    assert ref.path == "arn:aws:secretsmanager:eu-west-1:123456789012:secret:myapp/db-AbCdEf"
    assert ref.doc.param("stage") == "AWSPREVIOUS" and ref.key == ("password",)
    assert parse("ssm:///myapp/prod/db_password?version=4").path == "/myapp/prod/db_password"
    assert parse("vault://secret/app#/a/b~1c").key == ("a", "b/c")


@given(
    st.dictionaries(st.from_regex(r"[A-Z]{1,4}", fullmatch=True), st.text(max_size=5), max_size=3),
    st.text(alphabet="ab${}:-$ABCD", max_size=30),
)
def test_expand_vars_never_crashes(env: dict[str, str], text: str) -> None:
    try:
        out = expand_vars(text, env)
    except RefSyntaxError:
        return
    assert isinstance(out, str)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["ref", "src", "dest", "mode", "secret", "optional", "default", "x"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=10,
)
manifest_docs = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from([1, 2, "1", None]),
        "secrets": st.dictionaries(
            st.from_regex(r"[a-z_-]{1,5}", fullmatch=True),
            st.sampled_from(["env://A", "file://x", "bad", "vault://"]) | yaml_values,
            max_size=3,
        ),
        "templates": yaml_values,
        "files": yaml_values,
        "env": yaml_values,
        "env_from": yaml_values,
        "providers": yaml_values,
        "other": yaml_values,
    },
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest_docs)
def test_manifest_loader_never_crashes(tmp_path: Path, doc: dict[str, object]) -> None:
    import yaml

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        load_manifest(path, {"A": "x"})
    except BadInput as e:
        assert e.problems and all("\n" not in str(p) for p in e.problems)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_manifest_loader_on_arbitrary_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    try:
        load_manifest(path, {})
    except BadInput as e:
        assert e.problems
