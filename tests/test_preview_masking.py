"""A masked preview contains no value and no form derived from one, whatever the
template does to it; template errors do not quote computed values either."""

from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

from tests.helpers import CANARY, clean_env, run_cli, write

SECRET = CANARY + "&<Mixed_Case>"

TRANSFORMS = {
    "URLENC": "secrets.pw | urlencode",
    "ESC": "secrets.pw | e",
    "UP": "secrets.pw | upper",
    "LOW": "secrets.pw | lower",
    "SLICE": "secrets.pw[1:]",
    "SPLIT": "secrets.pw.split('-')[1]",
    "REPL": "secrets.pw | replace('C', 'x')",
    "TRUNC": "secrets.pw | truncate(12)",
    "WRAP": "secrets.pw | wordwrap(5)",
    "JOIN": "secrets.pw | list | join(' ')",
    "REV": "secrets.pw | reverse",
    "TITLE": "secrets.pw | title",
    "CFGK": "(secrets.cfg | fromjson).k | upper",
    "B64UP": "secrets.pw | b64encode | upper",
    "CONCAT": "'x' ~ secrets.pw ~ 'y'",
}


def derived_forms(value: str) -> list[str]:
    return [
        value,
        value.upper(),
        value.lower(),
        value[1:],
        value[::-1],
        value.title(),
        urllib.parse.quote(value),
        value.replace("&", "&amp;"),
        value.replace("C", "x"),
        base64.b64encode(value.encode()).decode().upper(),
        CANARY[:8],
        CANARY[-8:].upper(),
    ]


def test_masked_preview_hides_every_transformed_form(tmp_path: Path) -> None:
    env_lines = "".join(f"  {name}: {json.dumps('{{ ' + e + ' }}')}\n" for name, e in TRANSFORMS.items())
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  pw: env://PW\n  cfg: env://CFG\n"
        "templates:\n  - {src: t.j2, dest: t.txt}\nenv:\n" + env_lines,
    )
    write(tmp_path / "t.j2", "".join(f"{name}={{{{ {expr} }}}}\n" for name, expr in TRANSFORMS.items()))
    env = clean_env(PW=SECRET, CFG=json.dumps({"k": "inner-" + CANARY}))
    r = run_cli(["preview"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for form in derived_forms(SECRET) + derived_forms("inner-" + CANARY):
        assert form not in r.stdout, form
        assert form not in r.stderr, form
    # the shadow render still shows where each secret goes and how it is transformed
    assert (
        "UP=<SECRET:PW>" in r.stdout
        and "CFGK=<SECRET:CFG/K>" in r.stdout
        and "CONCAT=x<secret:pw>y" in r.stdout
    )
    # and --reveal shows the real render
    r = run_cli(["preview", "--reveal"], env=env, cwd=tmp_path)
    assert f"UP={SECRET.upper()}" in r.stdout


def test_template_needing_real_content_shows_nothing_of_it(tmp_path: Path) -> None:
    # A template that branches on a decoded secret: showing even its literal lines would
    # spell the value out, one branch per character.
    pin = "1234"
    encoded = base64.b64encode(pin.encode()).decode()
    branches = "".join(f"{{% if c == '{d}' %}}\ndigit-{d}\n{{% endif %}}" for d in "0123456789")
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  b: env://B\ntemplates:\n  - {src: t.j2, dest: t.txt}\n",
    )
    write(tmp_path / "t.j2", "header\n{% for c in secrets.b | b64decode %}" + branches + "{% endfor %}\n")
    r = run_cli(["preview"], env=clean_env(B=encoded), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "<not shown: this template needs the real values" in r.stdout
    assert "digit-" not in r.stdout and "header" not in r.stdout
    r = run_cli(["preview", "--reveal"], env=clean_env(B=encoded), cwd=tmp_path)
    assert "digit-1" in r.stdout and "digit-4" in r.stdout


def test_template_errors_do_not_quote_computed_values(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  pw: env://PW\n  cfg: env://CFG\n"
        'env:\n  A: "{{ (secrets.cfg | fromjson)[secrets.pw | upper] }}"\n'
        '  B: "{{ secrets.pw.format() }}"\n  C: "{{ (secrets.cfg | fromjson).literal_key_name }}"\n',
    )
    env = clean_env(PW="val-" + CANARY + "-{x}", CFG="{}")
    r = run_cli(["render", "-o", str(tmp_path / "o"), "--allow-disk"], env=env, cwd=tmp_path)
    assert r.returncode == 2
    assert CANARY not in r.stderr and CANARY.upper() not in r.stderr
    assert "env A: undefined: a name or key computed at render time does not exist" in r.stderr
    assert "env B: template error: KeyError (message not shown" in r.stderr
    # a computed key with a quote in it, or an integer index, is not echoed either
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  q: env://Q\n  n: env://N\n"
        'env:\n  A: \'{% set m={"x":1} %}{{ m[secrets.q | replace("-", "_")] }}\'\n'
        "  B: '{% set l=[1] %}{{ l[secrets.n | int] }}'\n",
    )
    r = run_cli(
        ["render", "-o", str(tmp_path / "o"), "--allow-disk"],
        env=clean_env(Q="it's-a-secret-xyz", N="7345129"),
        cwd=tmp_path,
    )
    assert r.returncode == 2
    assert "secret_xyz" not in r.stderr and "7345129" not in r.stderr, r.stderr
    # a name written in the template is still named
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  pw: env://PW\n  cfg: env://CFG\n"
        'env:\n  C: "{{ (secrets.cfg | fromjson).literal_key_name }}"\n',
    )
    r = run_cli(["render", "-o", str(tmp_path / "o"), "--allow-disk"], env=env, cwd=tmp_path)
    assert "env C: undefined: 'dict object' has no attribute 'literal_key_name'" in r.stderr
