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


# --- issue 23: placeholders by construction, short values never search the text -------------

SHORT_MANIFEST = """\
version: 1
secrets:
  db_user: env://DB_USER
  app_token: env://APP_TOKEN
  a: env://ONE
  cfg: env://CFG
  user_key: file://keyfile
  long_one: env://LONG
templates:
  - {src: t.j2, dest: t.txt}
env:
  TOKEN: "token={{ secrets.app_token }}"
  LITERAL: "app user a key {{ secrets.a }}"
"""

SHORT_TEMPLATE = """\
# application settings for the user, a literal line with app, user, key and a
token={{ secrets.app_token }}
user={{ secrets.db_user | toyaml }}
{% set cfg = secrets.cfg | fromjson %}app_id={{ cfg.app }}
cfg={{ cfg | tojson }}
{% for k in cfg %}key {{ k }}
{% endfor %}key_file={% include 'keyfile' %}
other={% include 'other.txt' %}
up={{ secrets.db_user | upper }}
"""


def test_short_values_in_names_keys_and_literal_text_are_never_nested(tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", SHORT_MANIFEST)
    write(tmp_path / "t.j2", SHORT_TEMPLATE)
    write(tmp_path / "keyfile", "key\n")  # a file:// secret of 3 characters, included
    write(tmp_path / "other.txt", "from a file: " + CANARY + "\n")  # a value reaching the output another way
    env = clean_env(
        DB_USER="app",  # 3: inside the name app_token and the key "app", and in literal text
        APP_TOKEN="user",  # 4: inside db_user, user_key, and literal text
        ONE="a",  # 1
        CFG=json.dumps({"app": "ap", "user": "t"}),  # 2 and 1; keys equal to other values
        LONG=CANARY,
    )
    r = run_cli(["preview"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "<secret:<secret:" not in out.lower() and "secret:<" not in out.lower(), out
    for line in (
        "# application settings for the user, a literal line with app, user, key and a\n",
        "token=<secret:app_token>\n",
        'user="<secret:db_user>"\n',
        "app_id=<secret:cfg/app>\n",
        'cfg={"app": "<secret:cfg/app>", "user": "<secret:cfg/user>"}\n',
        "key app\nkey user\n",
        "key_file=<secret:user_key>\n",
        "other=from a file: <secret:long_one>\n",
        "up=<SECRET:DB_USER>\n",
        "TOKEN=token=<secret:app_token>\n",
        "LITERAL=app user a key <secret:a>\n",
    ):
        assert line in out, (line, out)
    assert CANARY not in out


def test_the_demo_manifest_previews_without_nested_placeholders() -> None:
    """`make demo`'s manifest and templates with a 3-character user that is also the start of
    the secret name app_params: the preview the issue saw nested, offline here (no backends);
    tests/test_demo is the online run."""
    from tests.helpers import REPO

    r = run_cli(["preview", "--offline"], env=clean_env(), cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert 'log_level: "<secret:app_params/log.level>"' in r.stdout
    assert "<secret:<" not in r.stdout
