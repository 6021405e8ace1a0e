"""Templates of text and {{ secrets.NAME }} only render without Jinja (templating/simple.py), to
the very bytes Jinja gives; anything else, or a value that is not a plain string, goes to Jinja."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from initfetch.errors import BadInput
from initfetch.manifest import load_manifest
from initfetch.pipeline import Mode, load
from initfetch.redact import Redactor
from initfetch.templating import sandbox
from initfetch.templating.render import Renderer
from initfetch.templating.simple import parse_simple
from tests.helpers import write

CANARY_A = "canary-simple-a-7Hq2"
VALUES: dict[str, Any] = {
    "a": CANARY_A,
    "b": "line1\nline2\r\n",
    "c": "ünï €",
    "d": "",
    "q": 'he said "hi" \\ <&> \' $HOME `x`\t',  # everything the quoting filters escape
}

SIMPLE = [
    "",
    "no placeholder at all\n",
    "{{ secrets.a }}",
    "A={{secrets.a}}\nB={{ secrets.b }}\n",
    "x {{\n  secrets.c\n}} y\r\nz\r",  # newlines inside the tag; CRLF and CR in the text
    "{ a } {{ secrets.a }}}} }{ {x}\n",  # single braces are text
    "{{ secrets.d }}{{ secrets.a }}{{ secrets.a }}\n\n",
    'json: {"k": "{{ secrets.a }}"}\n',
    # comments, and the whitespace their `-` strips (newlines and all)
    "{# note #}{{ secrets.a }}",
    "a=1\n  {#- gone -#}  \n\tb={{ secrets.a }}\n",
    "{# {{ secrets.nope }} {% if %} #}x\n",  # anything inside a comment is comment
    "x \n{#- one\ntwo\n-#}\n\n",  # strips to the end
    "{#+ keep +#} {#-#}{#--#}\n{# a #}{# b -#} \n {{ secrets.b }}",
    "{#\n\n#}{{\n secrets.c }}#} }}\n",
    # one quoting filter
    '{"api_token": {{ secrets.q | tojson }}}\n',
    "{{ secrets.q|json }} {{secrets.c|tojson}}\n",
    "k: {{ secrets.q | toyaml }}\nu: {{ secrets.c | toyaml }}\n",
    "B={{ secrets.q | b64encode }}\nS={{ secrets.q | shquote }}\nD={{ secrets.q | dotenv }}\n",
    "{{ secrets.b | dotenv }}{{ secrets.d | shquote }}{{ secrets.d | tojson }}",
]

NOT_SIMPLE = [
    "{{ secrets.a | upper }}",
    "{{ secrets['a'] }}",
    "{% if true %}{{ secrets.a }}{% endif %}",
    "{# unclosed {{ secrets.a }}",
    "{{# x #}}",
    "{{ secrets.a | tojson(indent=2) }}",
    "{{ secrets.a | tojson | upper }}",
    "{{ secrets.a | b64decode }}",  # not a quoting filter
    "{{- secrets.a }}",
    "{{ secrets.a -}}",
    "{{{ secrets.a }}",  # the tag starts one brace early
    "{{ secrets.items }}",  # a dict method, for Jinja
    "{{ meta.a }}",
    "{{ secrets.a }} {{",
]


def _jinja(source: str, values: dict[str, Any], tmp_path: Path) -> str:
    env = sandbox.environment(tmp_path)
    return "".join(env.from_string(source).generate({"secrets": dict(values), "meta": {}}))


def _manifest(tmp_path: Path, source: str) -> Any:
    write(tmp_path / "t.j2", source)
    names = "".join(f"  {n}: env://V_{n.upper()}\n" for n in VALUES)
    write(
        tmp_path / "initfetch.yaml", f"version: 1\nsecrets:\n{names}templates:\n  - {{src: t.j2, dest: t}}\n"
    )
    return load_manifest(tmp_path / "initfetch.yaml", {})


@pytest.mark.parametrize("source", SIMPLE)
def test_simple_template_renders_what_jinja_renders(tmp_path: Path, source: str) -> None:
    assert parse_simple(source) is not None
    renderer = Renderer(_manifest(tmp_path, source), None)
    got = renderer.render(VALUES, {}).files["t"]
    assert renderer._env is None  # Jinja was not used
    assert got == _jinja(source, VALUES, tmp_path).encode()


@pytest.mark.parametrize("source", NOT_SIMPLE)
def test_anything_more_is_jinjas(tmp_path: Path, source: str) -> None:
    assert parse_simple(source) is None


@pytest.mark.parametrize("value", [{"k": 1}, b"bytes", 3, None, "\ud800"])
def test_a_value_that_is_not_a_plain_string_goes_to_jinja(tmp_path: Path, value: Any) -> None:
    source = "v={{ secrets.a }}\n"
    renderer = Renderer(_manifest(tmp_path, source), None)
    values = {**VALUES, "a": value}
    try:
        expected: bytes | None = _jinja(source, values, tmp_path).encode()
    except UnicodeEncodeError:
        expected = None
    if expected is None:  # a lone surrogate: one problem line, as before
        with pytest.raises(BadInput):
            renderer.render(values, {})
    else:
        assert renderer.render(values, {}).files["t"] == expected
    assert renderer._env is not None


def test_check_names_an_undeclared_secret_at_its_line_without_jinja(tmp_path: Path) -> None:
    write(tmp_path / "t.j2", "a={{ secrets.a }}\r\n\nb={{\n secrets.nope }}\n")
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  a: env://A\ntemplates:\n  - {src: t.j2, dest: t}\n",
    )
    with pytest.raises(BadInput) as e:
        load(tmp_path / "initfetch.yaml", {"A": "x"}, Mode.CHECK)
    lines = [str(p) for p in e.value.problems]
    assert len(lines) == 1 and "t.j2:4" in lines[0] and "secrets.nope" in lines[0]


def _with_env(tmp_path: Path, template: str, env: dict[str, str]) -> Any:
    write(tmp_path / "t.j2", template)
    names = "".join(f"  {n}: env://V_{n.upper()}\n" for n in VALUES)
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in env.items())
    write(
        tmp_path / "initfetch.yaml",
        f"version: 1\nsecrets:\n{names}templates:\n  - {{src: t.j2, dest: t}}\nenv:\n{lines}",
    )
    return load_manifest(tmp_path / "initfetch.yaml", {})


def test_env_values_render_what_jinja_renders_without_jinja(tmp_path: Path) -> None:
    env = {"A": "{{ secrets.a }}", "Q": "{{ secrets.q | shquote }}", "J": "x={{ secrets.c|tojson }}"}
    renderer = Renderer(_with_env(tmp_path, "{{ secrets.a }}", env), None)
    got = renderer.render(VALUES, {}).env
    assert renderer._env is None
    assert got == {k: _jinja(v, VALUES, tmp_path) for k, v in env.items()}


def test_a_nul_through_a_quoting_filter_is_refused_by_jinja_with_its_place(tmp_path: Path) -> None:
    renderer = Renderer(_manifest(tmp_path, "S={{ secrets.a | shquote }}\n"), None)
    with pytest.raises(BadInput) as e:
        renderer.render({**VALUES, "a": "x\0y"}, {})
    assert renderer._env is not None
    assert "t.j2:1" in str(e.value) and "NUL" in str(e.value)


@pytest.mark.parametrize("simple", [True, False])
def test_a_quoted_value_is_registered_with_the_redactor_as_jinja_registers_it(
    tmp_path: Path, simple: bool
) -> None:
    # q's JSON, base64 and dotenv forms do not contain q verbatim: each is registered.
    source = "{{ secrets.q | tojson }} {{ secrets.q | b64encode }} {{ secrets.q | dotenv }}"
    redactor = Redactor()
    for name, value in VALUES.items():
        redactor.add(value, name)
    renderer = Renderer(_manifest(tmp_path, source + ("" if simple else "{{ meta }}")), redactor)
    out = renderer.render(VALUES, {"q": {}}).files["t"].decode()
    assert (renderer._env is None) is simple
    scrubbed = redactor.scrub(out)
    assert "he said" not in scrubbed and base64.b64encode(VALUES["q"].encode()).decode() not in scrubbed
