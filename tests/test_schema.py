"""The manifest's JSON Schema: printed by `initfetch schema`, committed in schema/, made from the
loader's own tables, valid for every manifest the repository ships, and never stricter than
`check` (a manifest the schema rejects, the loader rejects too, quoting no value)."""

from __future__ import annotations

import datetime
import json
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.test_manifest_hardening as hardening
from initfetch import providers
from initfetch.errors import BadInput
from initfetch.manifest import load_manifest, model, yamlsrc
from initfetch.manifest.schema import manifest_schema
from initfetch.manifest.starter import MANIFEST as STARTER
from initfetch.manifest.watch import ON_CHANGE_KEYS
from initfetch.providers.base import COMMON_OPTIONS
from tests.helpers import CANARY, REPO, run_cli

# Not identifier-like: error text may quote short identifier-like tokens (errors.shown), never this.
CANARY_SCHEMA = "$6$CANARY-schema/0d4c2e x"
SCHEMA = manifest_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def test_schema_command_prints_the_committed_schema_and_it_is_valid_2020_12() -> None:
    r = run_cli(["schema"])
    assert r.returncode == 0, r.stderr
    committed = (REPO / "schema/initfetch.schema.json").read_text()
    assert r.stdout == committed, "schema/initfetch.schema.json is stale: initfetch schema > it"
    jsonschema.Draft202012Validator.check_schema(json.loads(r.stdout))
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_readme_shows_the_editor_modeline() -> None:
    assert "# yaml-language-server: $schema=" in (REPO / "README.md").read_text()


# --- made from the loader's tables -----------------------------------------------------------


def _branch(type_name: str) -> dict[str, Any]:
    branches = SCHEMA["properties"]["providers"]["additionalProperties"]["allOf"]
    return next(b["then"] for b in branches if b["if"]["properties"]["type"]["const"] == type_name)


def test_every_key_the_loader_knows_is_in_the_schema_and_nothing_else() -> None:
    props = SCHEMA["properties"]
    assert set(props) == model.TOP_KEYS
    secret_long = props["secrets"]["additionalProperties"]["anyOf"][1]["properties"]
    assert set(secret_long) == model.SECRET_KEYS
    assert set(props["templates"]["items"]["anyOf"][0]["properties"]) == model.TEMPLATE_KEYS
    assert set(props["files"]["items"]["anyOf"][0]["properties"]) == model.FILE_KEYS
    assert set(props["env_from"]["items"]["anyOf"][0]["properties"]) == model.ENV_FROM_KEYS
    # on_change.timeout comes with the hooks work; until then the schema is ahead of the loader.
    assert set(props["on_change"]["properties"]) == ON_CHANGE_KEYS | {"timeout"}
    assert set(props["providers"]["additionalProperties"]["properties"]["type"]["enum"]) == set(
        providers.TYPES
    )
    for type_name in providers.TYPES:
        cls = providers.provider_class(type_name)
        expected = model.PROVIDER_KEYS | set(cls.OPTIONS) | set(COMMON_OPTIONS)
        assert set(_branch(type_name)["properties"]) == expected, type_name


def test_login_methods_come_from_the_backends_tables() -> None:
    from initfetch.providers.azure.credentials import AUTH_OPTIONS
    from initfetch.providers.azure.credentials import METHODS as AZURE
    from initfetch.providers.vault.auth import METHODS as VAULT

    vault = _branch("vault")["properties"]["auth"]
    assert vault["properties"]["method"]["enum"] == sorted(VAULT)
    for branch in vault["allOf"]:
        method = branch["if"]["properties"]["method"]["const"]
        assert set(branch["then"]["properties"]) == set(VAULT[method].all_keys())
    azure = _branch("azure-keyvault")["properties"]["auth"]
    assert azure["properties"]["method"]["enum"] == sorted(AZURE)
    for branch in azure["allOf"]:
        method = branch["if"]["properties"]["method"]["const"]
        assert set(branch["then"]["properties"]) == {k for k, (_, ms) in AUTH_OPTIONS.items() if method in ms}


# --- every manifest the repository ships validates ---------------------------------------------


def _tree(text: str, name: str) -> Any:
    data, problems = yamlsrc.load(text, name)
    assert not problems, f"{name}: {problems[0]}"
    return data


def shipped_manifests() -> Iterator[tuple[str, Any]]:
    """(where, data): manifest files, the `init` starter, and every YAML snippet of the docs."""
    for path in sorted([REPO / "initfetch.yaml", *REPO.glob("compose-examples/*/initfetch.yaml")]):
        yield str(path.relative_to(REPO)), _tree(path.read_text(), str(path))
    yield "initfetch init's starter", _tree(STARTER, "starter")
    for doc in sorted([REPO / "README.md", *REPO.glob("docs/*.md")]):
        for i, found in enumerate(re.findall(r"```ya?ml\n(.*?)```", doc.read_text(), re.S)):
            block = textwrap.dedent(found.rstrip(" "))  # a block inside a list item is indented
            where = f"{doc.relative_to(REPO)} YAML block {i + 1}"
            data = yaml.safe_load(block)
            if not isinstance(data, dict):
                continue
            if set(data) == {"auth"}:  # an `auth:` block of the page's backend
                type_name = {"vault.md": "vault", "azure.md": "azure-keyvault"}[doc.name]
                block = f"providers:\n  p:\n    type: {type_name}\n" + re.sub(r"(?m)^", "    ", block)
            elif not set(data) <= model.TOP_KEYS:
                continue  # not a manifest (a Compose file, a Kubernetes object)
            alternatives = [block]
            if re.search(r"(?m)^# one of", block) or len(re.findall(r"(?m)^on_change:", block)) > 1:
                alternatives = [line for line in block.splitlines() if line.strip()]  # one per line
            for text in alternatives:
                if "version:" not in text:  # a fragment of a manifest
                    text = "version: 1\n" + text
                yield where, _tree(text, where)


def test_every_shipped_manifest_and_docs_snippet_validates() -> None:
    seen = 0
    for where, data in shipped_manifests():
        errors = sorted(VALIDATOR.iter_errors(data), key=lambda e: list(e.path))
        assert not errors, f"{where}: {errors[0].json_path}: {errors[0].message}"
        seen += 1
    assert seen >= 30  # the files, the starter and the docs' snippets were all found


# --- never stricter than the loader --------------------------------------------------------------


def judge(directory: Path, text: str) -> tuple[bool, str | None]:
    """(whether the schema accepts the manifest, the loader's problems or None if it accepts)."""
    path = directory / "m.yaml"
    path.write_text(text)
    data, problems = yamlsrc.load(text, str(path))
    valid = data is not None and not problems and VALIDATOR.is_valid(data)
    try:
        load_manifest(path, {"A": "a"}, lenient_vars=True)
    except BadInput as e:
        return valid, "\n".join(str(p) for p in e.problems)
    except Exception as e:  # noqa: BLE001 - the loader's own bug: `check` reports it and exits non-zero
        return valid, f"internal error: {type(e).__name__}"
    return valid, None


def assert_never_stricter(directory: Path, text: str) -> None:
    valid, problems = judge(directory, text)
    if not valid:
        assert problems is not None, f"the schema rejects what check accepts:\n{text}"
    if problems is not None:
        for canary in (CANARY, CANARY_SCHEMA):
            assert canary not in problems


@pytest.mark.parametrize("kind", ["azure-keyvault", "vault"])
def test_an_auth_method_that_is_a_mapping_is_never_quoted(workdir: Path, kind: str) -> None:
    text = (
        f"version: 1\nproviders:\n  k:\n    type: {kind}\n    auth: {{method: {{ref: '{CANARY_SCHEMA}'}}}}\n"
    )
    valid, problems = judge(workdir, text)
    assert not valid and problems is not None
    assert CANARY_SCHEMA not in problems and "auth method must be one of" in problems


def hardening_corpus() -> Iterator[str]:
    """The odd manifests of tests/test_manifest_hardening.py, as those tests write them."""
    for name, template in (
        ("test_messages_never_quote_manifest_text", "version: 1\n{}\n"),
        ("test_bad_limits_sections", "version: 1\n{}\n"),
        ("test_yaml_values_of_the_wrong_type_are_located", "version: 1\n{}\n"),
        (
            "test_modes_that_are_accepted",
            "version: 1\nsecrets: {{s: env://S}}\nfiles: [{{secret: s, dest: f, mode: {}}}]\n",
        ),
        (
            "test_modes_that_could_surprise_are_refused",
            "version: 1\nsecrets: {{s: env://S}}\nfiles: [{{secret: s, dest: f, mode: {}}}]\n",
        ),
    ):
        for mark in getattr(hardening, name).pytestmark:
            if mark.name != "parametrize":
                continue
            for case in mark.args[1]:
                body = case[0] if isinstance(case, tuple) else case
                yield template.format(body.replace("{C}", "$6$" + CANARY))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("schema")
    (d / "t.j2").write_text("{{ secrets.a }}\n")
    return d


def test_the_hardening_corpus_is_judged_alike(workdir: Path) -> None:
    cases = list(hardening_corpus())
    assert len(cases) > 30
    for text in cases:
        assert_never_stricter(workdir, text)


BASE: dict[str, Any] = {
    "version": 1,
    "providers": {
        "v": {
            "type": "vault",
            "address": "https://v:8200",
            "auth": {"method": "approle", "role_id_env": "R"},
        },
        "k": {
            "type": "azure-keyvault",
            "vault_url": "https://kv.example",
            "auth": {"method": "client_secret"},
        },
        "s": {"type": "aws-ssm", "region": "eu-west-1", "refresh": "1m"},
    },
    "secrets": {"a": "env://A", "b": {"ref": "v://secret/x#k", "optional": True, "refresh": "30s"}},
    "templates": [{"src": "t.j2", "dest": "t.txt", "mode": "0440"}],
    "files": [{"secret": "a", "dest": "d/a.txt", "owner": 1000}],
    "env": {"A": "{{ secrets.a }}"},
    "env_from": [{"secret": "b", "prefix": "B_"}],
    "limits": {"secret_size": "1MiB"},
    "on_change": {"signal": "HUP", "grace": "5s", "command": ["true"]},
    "mask_output": True,
}

PATHS: list[tuple[Any, ...]] = [
    ("version",),
    ("providers",),
    ("providers", "v"),
    ("providers", "v", "type"),
    ("providers", "v", "concurrency"),
    ("providers", "v", "tls_skip_verify"),
    ("providers", "v", "auth"),
    ("providers", "v", "auth", "method"),
    ("providers", "v", "auth", "role_id_env"),
    ("providers", "v", "auth", "secret_id_wrapped"),
    ("providers", "k", "auth", "method"),
    ("providers", "k", "auth", "client_secret_env"),
    ("providers", "k", "auth", "additionally_allowed_tenants"),
    ("providers", "s", "duration_seconds"),
    ("providers", "s", "refresh"),
    ("providers", "s", "keep_credentials"),
    ("providers", "new"),
    ("secrets",),
    ("secrets", "a"),
    ("secrets", "b", "ref"),
    ("secrets", "b", "optional"),
    ("secrets", "b", "default"),
    ("secrets", "b", "refresh"),
    ("secrets", "c"),
    ("templates",),
    ("templates", 0),
    ("templates", 0, "dest"),
    ("templates", 0, "mode"),
    ("files", 0, "secret"),
    ("files", 0, "dest"),
    ("files", 0, "owner"),
    ("files", 0, "group"),
    ("env",),
    ("env", "A"),
    ("env", "B"),
    ("env_from", 0, "prefix"),
    ("env_from", 0, "secret"),
    ("limits",),
    ("limits", "secret_size"),
    ("limits", "output_size"),
    ("on_change",),
    ("on_change", "signal"),
    ("on_change", "restart"),
    ("on_change", "grace"),
    ("on_change", "command"),
    ("mask_output",),
    ("extra",),
]

VALUES = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            False,
            0,
            1,
            -1,
            7,
            511,
            0o440,
            1025,
            1.5,
            1.0,
            "",
            " ",
            "x",
            "a",
            "A",
            "abc",
            "env://A",
            "v://secret/y",
            "vault://x#k",
            "nope",
            "30s",
            "5m",
            "1h30m",
            "0",
            "-1s",
            "1e3",
            "500ms",
            "1MiB",
            "12KB",
            "0440",
            "0o777",
            "7777",
            "/abs",
            "a\\b",
            "../up",
            "a/../b",
            "HUP",
            "SIGUSR1",
            "vault",
            "aws-ssm",
            "file",
            "approle",
            "token",
            "jwt",
            "default",
            "managed_identity",
            "https://x",
            "B_",
            "1bad",
            "$6$" + CANARY,
            CANARY_SCHEMA,
            [],
            ["a"],
            ["x", 1],
            [{"a": 1}],
            {},
            {"k": "v"},
            {"method": "token"},
            {"ref": "env://A"},
            {"ref": CANARY_SCHEMA},
            {"type": "env"},
            {"type": "file", "base_dir": "."},
            datetime.date(2024, 1, 1),
        ]
    ),
    st.text(max_size=12),
    st.integers(-5, 2000),
)


def mutate(data: Any, path: tuple[Any, ...], value: Any, delete: bool) -> None:
    node = data
    for step in path[:-1]:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    if isinstance(node, dict):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if delete:
            node.pop(last)
        else:
            node[last] = value


# SCHEMA_EXAMPLES=6000 for a longer search (about 20 s); 400 in the suite.
@settings(
    max_examples=int(os.environ.get("SCHEMA_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(st.sampled_from(PATHS), VALUES, st.booleans()), min_size=1, max_size=4))
def test_check_never_accepts_what_the_schema_rejects(workdir: Path, changes: list[Any]) -> None:
    data = json.loads(json.dumps(BASE))
    for path, value, delete in changes:
        mutate(data, path, value, delete)
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    assert_never_stricter(workdir, text)


def test_the_base_of_the_property_test_is_valid(workdir: Path) -> None:
    text = yaml.safe_dump(BASE, sort_keys=False)
    assert judge(workdir, text) == (True, None)
