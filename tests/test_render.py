"""Template helpers produce configs that parse back to the secret, whatever it contains."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from initfetch.redact import Redactor
from initfetch.templating.sandbox import environment

NASTY = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)


def render(source: str, **secrets: object) -> str:
    return environment(Path("."), Redactor()).from_string(source).render(secrets=secrets, meta={})


@given(NASTY)
def test_tojson_round_trips(value: str) -> None:
    assert json.loads(render('{"p": {{ secrets.v | tojson }}}', v=value)) == {"p": value}


@given(NASTY)
def test_toyaml_round_trips(value: str) -> None:
    assert yaml.safe_load(render("p: {{ secrets.v | toyaml }}", v=value)) == {"p": value}


@given(NASTY)
def test_b64_round_trips(value: str) -> None:
    assert render("{{ secrets.v | b64encode | b64decode }}", v=value) == value


@given(NASTY)
def test_shquote_round_trips(value: str) -> None:
    assert shlex.split(render("x {{ secrets.v | shquote }}", v=value)) == ["x", value]


def test_shquote_through_a_real_shell() -> None:
    value = "a'b\"c $HOME `id` \\ end"
    out = subprocess.run(
        ["sh", "-c", render("printf %s {{ secrets.v | shquote }}", v=value)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == value


def test_dotenv_quoting() -> None:
    assert render("K={{ secrets.v | dotenv }}", v='a"b$c\\d\ne') == 'K="a\\"b\\$c\\\\d\\ne"'


def test_tojson_does_not_html_escape() -> None:
    assert render("{{ secrets.v | tojson }}", v="<a&b'>") == '"<a&b\'>"'


def test_dicts_print_as_json_and_fromjson_parses() -> None:
    assert json.loads(render("{{ secrets.v }}", v={"a": [1, 2]})) == {"a": [1, 2]}
    assert render("{{ (secrets.v | fromjson).a }}", v='{"a": "x"}') == "x"


def test_derived_values_are_registered_for_masking() -> None:
    redactor = Redactor()
    redactor.add("CANARY-abc", "s")
    out = (
        environment(Path("."), redactor)
        .from_string("{{ secrets.v | b64encode }}|{{ secrets.v | tojson }}")
        .render(secrets={"v": "CANARY-abc"}, meta={})
    )
    assert redactor.scrub(out) == '<secret:s>|"<secret:s>"'
