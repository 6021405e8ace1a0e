"""Fuzzing with hypothesis, for a fixed budget: the reference parser, the manifest loader,
`initfetch check`, and every template helper through a real sandboxed render.

Zero crashes and zero internal errors: the only exception allowed out of the reference
parser is RefSyntaxError, out of the manifest loader and the renderer BadInput (each
problem one line), and `check` exits 0 or 2, never 1, never with a traceback.

tests/test_properties.py covers the reference round trip and the loader on plain
`yaml.safe_dump` documents; tests/test_render.py the text round trips of tojson, toyaml
and base64. This module goes after what those do not reach: hostile reference pieces,
variable expansion, YAML features (anchors, aliases, merge keys, tags, deep nesting),
realistic manifests with every section, and structured, binary and odd values in every
helper. FUZZ_EXAMPLES is the budget (docs/reliability.md quotes its total).
"""

from __future__ import annotations

import json
import math
import shlex
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from initfetch.errors import BadInput
from initfetch.manifest import load_manifest
from initfetch.redact import Redactor
from initfetch.reference import RefSyntaxError, expand_vars, parse
from initfetch.templating.render import Renderer
from tests.helpers import clean_env, run_cli, write

# Examples per fuzz target: the fixed budget (about 30-40 s on a CI runner in total).
FUZZ_EXAMPLES = {
    "reference_pieces": 400,
    "expand_then_parse": 300,
    "manifest_yaml_text": 250,
    "manifest_structures": 250,
    "cli_check": 8,
    "template_helpers": 300,
    "template_files": 150,
}


def budget(name: str) -> Any:
    return settings(
        max_examples=FUZZ_EXAMPLES[name],
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=False,
    )


def one_line(e: BadInput) -> None:
    assert e.problems, "BadInput without a problem"
    for p in e.problems:
        assert "\n" not in str(p) and "\r" not in str(p), str(p)
        assert "Traceback" not in str(p)


# --- references ------------------------------------------------------------------------------

PIECES = st.sampled_from(
    [
        "vault",
        "awssm",
        "ssm",
        "azkv",
        "file",
        "env",
        "x-y.z+w",
        "://",
        ":/",
        "/",
        "//",
        "?",
        "#",
        "&",
        "=",
        "version=3",
        "stage=AWSPREVIOUS",
        "%",
        "%2F",
        "%00",
        "%zz",
        "~",
        "~0",
        "~1",
        "~2",
        "#/",
        "#//",
        "/a/b",
        "${",
        "}",
        "$$",
        "${A}",
        "${A:-d}",
        " ",
        "\t",
        "\n",
        "\x00",
        "é",
        "💥",
        "\u202e",
        "\ufeff",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
        "a" * 300,
        "?" * 5,
        "#" * 5,
        "..",
        "../..",
        "\\",
        "'",
        '"',
        ";",
        "|",
        "*",
        "[0]",
    ]
)


@budget("reference_pieces")
@given(st.lists(PIECES | st.text(max_size=6), max_size=12).map("".join))
def test_reference_from_hostile_pieces(text: str) -> None:
    try:
        ref = parse(text)
    except RefSyntaxError as e:
        assert "\n" not in str(e)
        return
    # What parsed is coherent: a scheme, a non-empty trimmed path, non-empty key segments,
    # unique query names, and the text re-parses to the same reference.
    assert ref.scheme and ref.path and ref.path == ref.path.strip()
    assert ref.key is None or all(part != "" for part in ref.key)
    names = [k for k, _ in ref.doc.query]
    assert len(names) == len(set(names))
    assert parse(str(ref)) == ref


ENV = st.dictionaries(
    st.sampled_from(["A", "B", "STAGE", "_X", "a1"]),
    st.text(alphabet=string.printable + "${}é", max_size=12),
    max_size=4,
)


@budget("expand_then_parse")
@given(
    ENV,
    st.lists(PIECES | st.sampled_from(["${STAGE}", "${B:-x}", "${9}", "${A-B}"]), max_size=10).map("".join),
    st.booleans(),
)
def test_expand_then_parse_raises_only_ref_syntax_errors(
    env: dict[str, str], text: str, lenient: bool
) -> None:
    try:
        expanded = expand_vars(text, env, lenient=lenient)
    except RefSyntaxError as e:
        assert "\n" not in str(e)
        assert not (lenient and "is not set" in str(e)), "lenient expansion must keep unset variables"
        return
    assert isinstance(expanded, str)
    if "$" not in text:
        assert expanded == text
    try:
        parse(expanded)
    except RefSyntaxError as e:
        assert "\n" not in str(e)


# --- the manifest loader ------------------------------------------------------------------------

YAML_TOKENS = st.sampled_from(
    [
        "version: 1\n",
        "secrets:\n",
        "  a: env://A\n",
        "  b: {ref: vault://secret/x#k, optional: true}\n",
        "providers:\n",
        "  v: {type: vault, address: http://127.0.0.1:1}\n",
        "templates:\n",
        "  - {src: t.j2, dest: out}\n",
        "files:\n",
        "  - {secret: a, dest: f}\n",
        "env:\n",
        "  E: '{{ secrets.a }}'\n",
        "env_from:\n",
        "  - {secret: a}\n",
        "limits:\n",
        "  secret_size: 1KiB\n",
        "&a ",
        "*a",
        "<<: *a\n",
        "!!binary ",
        "!!python/object:os.system ",
        "!custom ",
        "!!set ",
        "? ",
        ": ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ",",
        '"',
        "'",
        "|\n",
        ">\n",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "%TAG ! tag:x,2000:\n",
        "\t",
        "  ",
        "\n",
        "#",
        "~",
        "null",
        "1e309",
        "0x1F",
        "0o17",
        "-.inf",
        "2001-12-14",
        "yes",
        "on",
        "=",
        "\ufeff",
        "\x00",
        "\x85",
        "\u2028",
        "é",
        "a" * 200,
        "[" * 100,
        "{a: " * 50,
        "- " * 80,
    ]
)


@budget("manifest_yaml_text")
@given(st.lists(YAML_TOKENS | st.text(max_size=5), max_size=30).map("".join))
def test_manifest_loader_on_yamlish_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_manifest(path, {"A": "x"})
    except BadInput as e:
        one_line(e)


REFS = st.sampled_from(
    [
        "env://A",
        "env://A#k",
        "file://secret.txt",
        "file:///etc/hostname",
        "vault://secret/app#password",
        "vault://secret/app?version=2#/a/b",
        "vault://database/creds/app#username",
        "awssm://app/db#password",
        "awssm://arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf?stage=AWSPREVIOUS",
        "ssm:///app/prod/db",
        "ssm:///app/prod/",
        "ssm:///app/prod/db?version=4",
        "azkv://vault1/db-password",
        "azkv://vault1/db-password/0123abcd",
        "v2://secret/x",
        "nosuch://x",
        "vault://",
        "env://${A}",
        "env://${UNSET}",
        "env://${A:-B}",
        "azkv://bad_vault!/x",
        "ssm://relative",
        "awssm://x?stage=",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=10),
    st.sampled_from(["0400", "0644", "7777", "u+r", "../x", "/abs", "a/../../b", ""]),
)
ANY = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True) | st.text(max_size=5)
PROVIDER = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["vault", "aws-secretsmanager", "aws-ssm", "azure-keyvault", "file", "env", "x", 1]
        )
    },
    optional={
        "address": st.sampled_from(["http://127.0.0.1:1", "ftp://x", "", 5]),
        "region": st.sampled_from(["eu-west-1", "", 3]),
        "vault_url": st.sampled_from(["https://v.vault.azure.net", "http://x", "https://x/path"]),
        "auth": st.fixed_dictionaries(
            {"method": st.sampled_from(["token", "approle", "managed_identity", "zz"])},
            optional={"role_id_file": SCALARS, "client_id": SCALARS},
        ),
        "refresh": st.sampled_from(["30s", "5m", "0s", "-1s", "forever", 10]),
        "keep_credentials": SCALARS,
        "bogus": ANY,
    },
)
SECRET = REFS | st.fixed_dictionaries(
    {"ref": REFS | SCALARS}, optional={"optional": SCALARS, "default": SCALARS, "refresh": SCALARS, "x": ANY}
)
OUTPUT = st.fixed_dictionaries(
    {"dest": st.sampled_from(["out", "a/b", "../up", "/etc/x", "", ".", "a//b", "é", "x" * 300]) | SCALARS},
    optional={
        "src": st.sampled_from(["t.j2", "missing.j2", "../t.j2", "/etc/hostname", ""]) | SCALARS,
        "secret": NAMES,
        "mode": SCALARS,
        "owner": SCALARS,
        "group": SCALARS,
    },
)
MANIFESTS = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 1, 2, "1", None, True])},
    optional={
        "providers": st.dictionaries(NAMES, PROVIDER | ANY, max_size=3),
        "secrets": st.dictionaries(NAMES, SECRET | ANY, max_size=5),
        "templates": st.lists(OUTPUT | ANY, max_size=3) | ANY,
        "files": st.lists(OUTPUT | ANY, max_size=3) | ANY,
        "env": st.dictionaries(
            NAMES, st.sampled_from(["{{ secrets.a }}", "{{", "{% x %}", "plain"]) | ANY, max_size=3
        ),
        "env_from": st.lists(
            st.fixed_dictionaries({"secret": NAMES}, optional={"prefix": SCALARS}) | ANY, max_size=2
        ),
        "on_change": ANY,
        "limits": st.dictionaries(
            st.sampled_from(["secret_size", "output_size", "manifest_size", "zz"]), SCALARS, max_size=2
        ),
        "extra": ANY,
    },
)


def dump(doc: dict[str, Any]) -> str:
    # Floats like nan/inf and big ints survive a YAML dump; keys are quoted as needed.
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


@budget("manifest_structures")
@given(MANIFESTS)
def test_manifest_loader_on_realistic_structures(tmp_path: Path, doc: dict[str, Any]) -> None:
    (tmp_path / "t.j2").write_text("{{ secrets.a | default('') }}")
    (tmp_path / "secret.txt").write_text("x")
    path = tmp_path / "m.yaml"
    path.write_text(dump(doc), encoding="utf-8", errors="surrogatepass")
    for lenient in (False, True):
        try:
            load_manifest(path, {"A": "x"}, lenient_vars=lenient)
        except BadInput as e:
            one_line(e)


@budget("cli_check")
@given(MANIFESTS)
def test_cli_check_exits_0_or_2_never_a_traceback(tmp_path: Path, doc: dict[str, Any]) -> None:
    (tmp_path / "t.j2").write_text("{{ secrets.a | default('') }}")
    path = tmp_path / "m.yaml"
    path.write_text(dump(doc), encoding="utf-8", errors="surrogatepass")
    r = subprocess.run(
        [sys.executable, "-m", "initfetch", "check", "-m", str(path)],
        env=clean_env(A="x"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode in (0, 2), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr


# --- every template helper, through a real sandboxed render ----------------------------------------

HELPERS = ("tojson", "json", "toyaml", "b64encode", "b64decode", "fromjson", "shquote", "dotenv")
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False) | TEXT,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4),
    max_leaves=12,
)
VALUES = (
    JSONISH
    | st.binary(max_size=24)
    | st.floats()  # nan and inf too
    # A lone surrogate ("\ud800", which a JSON document can carry) never reaches the renderer
    # as a value: the resolver rejects it (test_lone_surrogate_in_a_secret_is_a_clean_error).
    # One made at render time (fromjson) is covered by test_lone_surrogate_made_in_a_template.
    | st.sampled_from(["", "\x00", "null", "e30=", "W10=", "[[[[[[[[", '"', "'", "$(id)", "a\nb"])
    | st.just("[" * 5000 + "]" * 5000)  # deep JSON for fromjson
)


@pytest.fixture(scope="module")
def helper_manifest(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A manifest with one env value and one template per helper, each applied to secret `v`."""
    base = tmp_path_factory.mktemp("helpers")
    env = {f"H_{i}": "{{ secrets.v | " + h + " }}" for i, h in enumerate(HELPERS)}
    env["CHAIN"] = "{{ secrets.v | tojson | fromjson | toyaml | b64encode | b64decode | shquote | dotenv }}"
    templates = []
    for i, h in enumerate(HELPERS):
        (base / f"t{i}.j2").write_text("x: {{ secrets.v | " + h + " }}\n{{ secrets.v }}\n")
        templates.append({"src": f"t{i}.j2", "dest": f"out/{h}"})
    doc = {
        "version": 1,
        "secrets": {"v": "env://V"},
        "env": env,
        "templates": templates,
        "files": [{"secret": "v", "dest": "raw"}],
    }
    (base / "initfetch.yaml").write_text(json.dumps(doc))
    return load_manifest(base / "initfetch.yaml", {"V": "x"})


def render_value(manifest: Any, v: Any) -> Any:
    redactor = Redactor()
    if isinstance(v, str | bytes) and v:
        redactor.add(v, "v")
    return Renderer(manifest, redactor).render({"v": v}, {"v": {"provider": "env", "version": None}})


@budget("template_helpers")
@given(VALUES)
def test_every_helper_on_any_value_renders_or_is_bad_input(helper_manifest: Any, v: Any) -> None:
    try:
        rendered = render_value(helper_manifest, v)
    except BadInput as e:
        one_line(e)
        return
    # What rendered is what the helpers promise, for the values they take.
    if isinstance(v, str | int | bool | list | dict) or v is None:
        if not (isinstance(v, float) and not math.isfinite(v)):
            assert json.loads(rendered.env["H_0"]) == v
    if isinstance(v, str) and "\x00" not in v:
        assert shlex.split(rendered.env[f"H_{HELPERS.index('shquote')}"]) == [v]


@budget("template_files")
@given(VALUES)
def test_file_outputs_of_any_value_are_bytes_or_bad_input(helper_manifest: Any, v: Any) -> None:
    try:
        rendered = render_value(helper_manifest, v)
    except BadInput as e:
        one_line(e)
        return
    assert all(isinstance(b, bytes) for b in rendered.files.values())
    assume(isinstance(v, str))
    assert rendered.files["raw"] == v.encode("utf-8")


def test_lone_surrogate_in_a_secret_is_a_clean_error(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  s: env://V#k\nfiles:\n  - {secret: s, dest: s}\n",
    )
    r = run_cli(
        ["render", "-o", str(tmp_path / "o"), "--allow-disk"],
        env=clean_env(V='{"k": "a\\ud800b"}'),
        cwd=tmp_path,
    )
    assert r.returncode in (2, 3), r.stderr
    assert "internal error" not in r.stderr and "\\ud800" not in r.stderr


@pytest.mark.parametrize(
    ("where", "manifest"),
    [
        ("template", "templates:\n  - {src: t.j2, dest: t}\n"),
        pytest.param(
            "env",
            "env:\n  X: '{{ secrets.s | fromjson }}'\n",
        ),
        pytest.param(
            "preview",
            "env:\n  X: '{{ secrets.s | fromjson }}'\n",
        ),
    ],
)
def test_lone_surrogate_made_in_a_template_is_a_clean_error(
    tmp_path: Path, where: str, manifest: str
) -> None:
    # The secret is valid text; `fromjson` of it makes a lone surrogate while rendering.
    write(tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  s: env://V\n" + manifest)
    write(tmp_path / "t.j2", "{{ secrets.s | fromjson }}")
    command = ["render", "-o", str(tmp_path / "o"), "--allow-disk"]
    if where == "env":
        command = ["exec", "-o", str(tmp_path / "o"), "--allow-disk", "--", "true"]
    elif where == "preview":
        command = ["preview", "--reveal"]
    r = run_cli(command, env=clean_env(V='"a\\ud800b"'), cwd=tmp_path)
    assert r.returncode in (2, 3), r.stderr
    assert "internal error" not in r.stderr and "\\ud800" not in r.stderr
    assert not (tmp_path / "o").exists()
