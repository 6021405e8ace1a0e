"""Hostile templates: sandbox escapes, reads outside the manifest directory, work or
memory without bound, values no output can hold. Each ends in one line with exit 2,
nothing is written (the previous render stays exactly as it was) and no value leaks."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import clean_env, run_cli, write

CANARY_VALUE = "CANARY-5e1ec7-render-limits"
CANARY_INCLUDED = "CANARY-1nc1ud-preview-mask"

OUTPUT_LIMIT = (
    "the total size of the rendered files and environment exceeds the limit of 16 MiB "
    "(output_size; raise it with limits: {output_size: ...} in the manifest or INITFETCH_LIMIT_OUTPUT_SIZE)"
)
TOO_LARGE = "template error: a value computed in the template is too large: " + OUTPUT_LIMIT
UNSAFE = "not allowed in a template: access to attribute"

MANIFEST = """\
version: 1
secrets:
  pw: env://PW
templates:
  - {src: t.j2, dest: t.txt}
"""

# (id, template, the one error line it must give)
CORPUS = [
    ("dunder-class", "{{ secrets.pw.__class__ }}", f"{UNSAFE} '__class__' of 'str' object is unsafe."),
    ("dunder-globals", "{{ lipsum.__globals__ }}", f"{UNSAFE} '__globals__' of 'function' object is unsafe."),
    ("mro", "{{ ''.__class__.__mro__ }}", f"{UNSAFE} '__class__' of 'str' object is unsafe."),
    (
        "template-context",
        "{{ self._TemplateReference__context }}",
        f"{UNSAFE} '_TemplateReference__context' of 'TemplateReference' object is unsafe.",
    ),
    (
        "include-parent",
        "{% include '../outside.txt' %}",
        "template error: template '../outside.txt' not found (templates are read from the manifest's",
    ),
    (
        "import-absolute",
        "{% import '/etc/passwd' as x %}",
        "template error: template '/etc/passwd' not found (templates are read from the manifest's directory)",
    ),
    ("extends-absolute", "{% extends '/etc/hostname' %}", "template '/etc/hostname' not found"),
    ("include-self", "{% include 't.j2' %}", "template error: nested too deeply"),
    (
        "macro-recursion",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "template error: nested too deeply",
    ),
    ("power-tower", "{{ 9 ** (9 ** 9) }}", "template error: a number would have more than 4300 digits"),
    ("int-squaring", "{% set n = 10 ** 4000 %}{{ n * n }}", "a number would have more than 4300 digits"),
    ("str-times", "{{ 'a' * 10**8 * 8 }}", TOO_LARGE),
    ("list-times", "{{ ([secrets.pw] * 100000000) | length }}", TOO_LARGE),
    ("percent-width", "{{ '%0999999999d' % 1 }}", TOO_LARGE),
    ("percent-star", "{{ '%*d' % (999999999, 1) }}", TOO_LARGE),
    ("percent-repeat", "{{ ('%(a)s' * 1000) % {'a': 'x' * 100000} }}", TOO_LARGE),
    ("format-filter", "{{ '%0999999999d' | format(1) }}", TOO_LARGE),
    ("str-format", "{{ '{:999999999}'.format(1) }}", TOO_LARGE),
    ("str-format-nested", "{{ '{:{}}'.format(1, 10**9) }}", TOO_LARGE),
    ("format-map", "{{ ('{a}' * 1000).format_map({'a': 'x' * 100000}) }}", TOO_LARGE),
    ("lipsum", "{{ lipsum(10**9) }}", TOO_LARGE),
    ("ljust", "{{ 'x'.ljust(10**9) }}", TOO_LARGE),
    ("zfill", "{{ '1'.zfill(10**9) }}", TOO_LARGE),
    ("center-filter", "{{ 'x' | center(10**9) }}", TOO_LARGE),
    ("expandtabs", "{{ ('\t' * 100000).expandtabs(100000) }}", TOO_LARGE),
    ("replace-method", "{{ ('a' * 100000).replace('a', 'b' * 1000) }}", TOO_LARGE),
    ("replace-filter", "{{ ('a' * 100000) | replace('a', 'b' * 1000) }}", TOO_LARGE),
    ("join-filter", "{{ range(100000) | join('x' * 100000) }}", TOO_LARGE),
    ("join-method", "{{ ('x' * 100000).join(range(100000) | map('string')) }}", TOO_LARGE),
    ("join-string", "{{ ('y' * 100000) | join('x' * 1000) }}", TOO_LARGE),
    ("indent", "{{ ('\n' * 100000) | indent('x' * 1000) }}", TOO_LARGE),
    ("wordwrap", "{{ ('a ' * 100000) | wordwrap(1, wrapstring='x' * 1000) }}", TOO_LARGE),
    ("translate", "{{ ('a' * 100000).translate({97: 'b' * 1000}) }}", TOO_LARGE),
    ("batch-fill", "{{ [1] | batch(10**9, 0) | list }}", TOO_LARGE),
    ("slice-count", "{{ [] | slice(10**9) | list }}", TOO_LARGE),
    ("tojson-indent", "{{ [[[[[[[[1]]]]]]]] | tojson(indent=10**7) }}", TOO_LARGE),
    (
        "concat-doubling",
        "{% set x = 'x' * 1000000 %}" + "{% set x = x ~ x %}" * 30 + "{{ x | length }}",
        TOO_LARGE,
    ),
    (
        "namespace-doubling",
        "{% set ns = namespace(x='ab') %}{% for i in range(100) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        TOO_LARGE,
    ),
    (
        "list-doubling",
        "{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
        TOO_LARGE,
    ),
    (
        "set-block",
        "{% set x %}{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endset %}{{ x | length }}",
        TOO_LARGE,
    ),
    (
        "filter-block",
        "{% filter upper %}{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endfilter %}",
        TOO_LARGE,
    ),
    (
        "macro-doubling",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% else %}{{ 'x' * 1000000 }}{% endif %}"
        "{% endmacro %}{{ f(40) }}",
        TOO_LARGE,
    ),
    (
        "streamed-output",
        "{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}",
        "output t.txt: " + OUTPUT_LIMIT,
    ),
    ("literal-list", "{% set b = 'x' * 10000000 %}{{ [b, b, b, b] }}", TOO_LARGE),
    ("literal-tuple-tojson", "{% set b = 'x' * 10000000 %}{{ (b, b, b, b) | tojson }}", TOO_LARGE),
    ("literal-dict", "{% set b = 'x' * 10000000 %}{{ {'a': b, 'b': b} }}", TOO_LARGE),
    ("str-format-width-string", "{{ '{:{}}'.format(1, '999999999') }}", TOO_LARGE),
    ("map-join", "{{ range(100000) | map('center', 100000) | join }}", TOO_LARGE),
    ("map-str-join", "{{ ''.join(range(100000) | map('center', 100000)) }}", TOO_LARGE),
    # each item is under the limit, the list of them is not: the memory bound stops it
    ("map-list", "{{ range(100000) | map('center', 100000) | list | length }}", "used more than 256 MiB"),
    (
        # a buffer of small pieces grows without any single value being large
        "buffer-growth",
        "{% macro m() %}{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}"
        "{% endfor %}{% endmacro %}{{ m() | length }}",
        "rendering used more than 256 MiB of memory (16 times output_size;",
    ),
    (
        "deep-nesting",
        "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
        "template syntax error: nested too deeply",
    ),
]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: content and mode (the completion marker included)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = (p.read_bytes(), stat.S_IMODE(p.lstat().st_mode))
    return out


def rendered_once(tmp_path: Path, manifest: str = MANIFEST) -> tuple[Path, dict[str, tuple[bytes, int]]]:
    """A good render in place, to prove that a failing one leaves it alone."""
    write(tmp_path / "initfetch.yaml", manifest)
    write(tmp_path / "t.j2", "good {{ secrets.pw | length }}\n")
    out = tmp_path / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=clean_env(PW=CANARY_VALUE), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = snapshot(out)
    assert before["t.txt"][0] == f"good {len(CANARY_VALUE)}\n".encode()
    return out, before


def assert_one_line(r: subprocess.CompletedProcess[str], expected: str) -> None:
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 2, r.stderr  # the problem, then the headline with the exit code
    assert expected in errors[0], r.stderr
    assert errors[1].endswith("(exit 2)")
    for word in ("Traceback", "MemoryError", "RecursionError", "internal error"):
        assert word not in r.stderr
    assert CANARY_VALUE not in r.stderr + r.stdout


@pytest.mark.parametrize(("template", "expected"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_hostile_template_is_one_line_and_writes_nothing(
    tmp_path: Path, template: str, expected: str
) -> None:
    out, before = rendered_once(tmp_path)
    write(tmp_path.parent / "outside.txt", CANARY_VALUE)
    write(tmp_path / "t.j2", template)
    # the bound is generous: without the limits these run out of memory or never end
    r = run_cli(
        ["render", "-o", str(out), "--allow-disk"], env=clean_env(PW=CANARY_VALUE), cwd=tmp_path, timeout=120
    )
    assert r.returncode == 2, r.stderr
    assert_one_line(r, expected)
    assert snapshot(out) == before


TIME_CORPUS = [
    ("nested-loops", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
    (
        "nested-loops-in-macro",
        "{% macro m() %}{% for i in range(100000) %}{% for j in range(100000) %}"
        "{% endfor %}{% endfor %}{% endmacro %}{{ m() | length }}",
    ),
    (
        "exponential-macro",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    ),
    # the loop body never runs: the time goes into the loop's condition
    (
        "loop-condition",
        "{% for i in range(100000) if not (range(100000) | map('string') | join) %}{% endfor %}",
    ),
]


@pytest.mark.parametrize("template", [c[1] for c in TIME_CORPUS], ids=[c[0] for c in TIME_CORPUS])
def test_endless_rendering_stops_at_the_timeout(tmp_path: Path, template: str) -> None:
    write(tmp_path / "initfetch.yaml", MANIFEST + 'env:\n  X: "{{ secrets.pw }}"\n')
    write(tmp_path / "t.j2", template)
    for args in (["preview", "--timeout", "2"], ["preview", "--offline", "--timeout", "2"]):
        r = run_cli(args, env=clean_env(PW=CANARY_VALUE), cwd=tmp_path, timeout=120)
        assert r.returncode == 2, r.stderr
        assert_one_line(r, "rendering did not finish within --timeout (2s)")


def test_render_stops_at_the_timeout_and_writes_nothing(tmp_path: Path) -> None:
    out, before = rendered_once(tmp_path)
    write(tmp_path / "t.j2", TIME_CORPUS[0][1])
    r = run_cli(
        ["render", "-o", str(out), "--allow-disk", "--timeout", "2"],
        env=clean_env(PW=CANARY_VALUE),
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert_one_line(r, "rendering did not finish within --timeout (2s)")
    assert snapshot(out) == before


def test_total_output_counts_files_env_and_raw_secrets(tmp_path: Path) -> None:
    manifest = (
        "version: 1\nlimits: {output_size: 1KiB}\nsecrets:\n  pw: env://PW\n  raw: env://RAW\n"
        "templates:\n  - {src: t.j2, dest: t.txt}\n  - {src: u.j2, dest: u.txt}\n"
        "files:\n  - {secret: raw, dest: raw}\nenv:\n  E: \"{{ 'e' * 300 }}\"\n"
    )
    write(tmp_path / "initfetch.yaml", manifest)
    write(tmp_path / "t.j2", "{{ 't' * 300 }}")
    write(tmp_path / "u.j2", "{{ 'u' * 300 }}")
    env = clean_env(PW=CANARY_VALUE, RAW="r" * 300)
    out = tmp_path / "out"
    # 3 files of 300 bytes fit in 1 KiB; the 300 more of E do not
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert_one_line(
        r, "env E: the total size of the rendered files and environment exceeds the limit of 1 KiB"
    )
    env["INITFETCH_LIMIT_OUTPUT_SIZE"] = "2KiB"  # the variable wins over the manifest
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    env["RAW"] = "r" * 2000  # a raw secret file counts too
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert_one_line(
        r, "file raw: the total size of the rendered files and environment exceeds the limit of 2 KiB"
    )


def test_linear_work_well_under_the_limits_still_renders(tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", MANIFEST)
    write(
        tmp_path / "t.j2",
        "{{ (range(100000) | batch(1) | list) | sum(start=[]) | length }} {{ 2 ** 1000 % 7 }} "
        "{{ '%05d' % 42 }} {{ '{:>6}'.format('ab') }} {{ 'ab'.center(6) }}|{{ [1, 2] | join(', ') }} "
        "{{ lipsum(2, html=false) | length > 0 }} {{ ('x' * 1000000) | length }}\n",
    )
    r = run_cli(["preview", "--reveal"], env=clean_env(PW=CANARY_VALUE), cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "100000 2 00042     ab   ab  |1, 2 True 1000000\n" in r.stdout


# --- values no output can hold, and values every output must quote right ------------------------

NASTY = f"{CANARY_VALUE}\nline2 \"dq\" 'sq' $HOME `id` \\ \r\tend"


def nasty_project(tmp_path: Path) -> Path:
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  v: file://nasty?raw=true\n  nul: file://nul\n  bin: file://bin\n"
        "templates:\n  - {src: t.j2, dest: t.txt}\nfiles:\n  - {secret: bin, dest: bin}\n"
        'env:\n  V: "{{ secrets.v }}"\n',
    )
    (tmp_path / "nasty").write_text(NASTY)
    (tmp_path / "nul").write_bytes(b"a\0b-" + CANARY_VALUE.encode())
    (tmp_path / "bin").write_bytes(b"\xff\xfe-" + CANARY_VALUE.encode())
    return tmp_path


def test_nasty_values_round_trip_through_every_quoting_helper(tmp_path: Path) -> None:
    nasty_project(tmp_path)
    write(
        tmp_path / "t.j2",
        '{"v": {{ secrets.v | tojson }}, "nul": {{ secrets.nul | tojson }}}\n'
        "---\nv: {{ secrets.v | toyaml }}\nnul: {{ secrets.nul | toyaml }}\n---\n"
        "V={{ secrets.v | shquote }}\n---\nV={{ secrets.v | dotenv }}\n---\n{{ secrets.bin | b64encode }}\n",
    )
    out = tmp_path / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    json_part, yaml_part, sh_part, dotenv_part, b64_part = (
        (out / "t.txt").read_bytes().decode().split("---\n")
    )
    nul = "a\0b-" + CANARY_VALUE
    assert yaml.safe_load(json_part) == {"v": NASTY, "nul": nul}
    assert yaml.safe_load(yaml_part) == {"v": NASTY, "nul": nul}
    script = sh_part + 'printf %s "$V"'
    assert subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout.decode() == NASTY
    assert (
        dotenv_part
        == 'V="'
        + NASTY.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "\\$")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        + '"\n'
    )
    assert b64_part.strip() == base64.b64encode(b"\xff\xfe-" + CANARY_VALUE.encode()).decode()
    assert (out / "bin").read_bytes() == b"\xff\xfe-" + CANARY_VALUE.encode()  # raw files keep bytes
    # the environment gets the value byte for byte, newlines and quotes included
    check = "import os, sys; sys.exit(0 if os.environ['V'] == open(sys.argv[1], newline='').read() else 1)"
    r = run_cli(
        ["exec", "-o", str(out), "--allow-disk", "--", sys.executable, "-c", check, str(tmp_path / "nasty")],
        env=clean_env(),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr


VALUE_CORPUS = [
    ("env-nul", 'E: "{{ secrets.nul }}"', "", "env E: the value contains a NUL byte"),
    ("env-binary", 'E: "{{ secrets.bin }}"', "", "env E: template error: a value is binary, not UTF-8 text"),
    ("shquote-nul", "", "{{ secrets.nul | shquote }}", "shquote: the value contains a NUL byte"),
    ("dotenv-nul", "", "{{ secrets.nul | dotenv }}", "dotenv: the value contains a NUL byte"),
    ("tojson-binary", "", "{{ secrets.bin | tojson }}", "a value is binary, not UTF-8 text"),
    ("toyaml-binary", "", "{{ secrets.bin | toyaml }}", "a value is binary, not UTF-8 text"),
    ("print-binary", "", "{{ secrets.bin }}", "a value is binary, not UTF-8 text"),
]


@pytest.mark.parametrize(
    ("env_line", "template", "expected"), [c[1:] for c in VALUE_CORPUS], ids=[c[0] for c in VALUE_CORPUS]
)
def test_values_no_output_can_hold_are_one_line(
    tmp_path: Path, env_line: str, template: str, expected: str
) -> None:
    nasty_project(tmp_path)
    write(tmp_path / "t.j2", "ok\n")
    out = tmp_path / "out"
    r = run_cli(["render", "-o", str(out), "--allow-disk"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = snapshot(out)
    if env_line:
        manifest = (tmp_path / "initfetch.yaml").read_text()
        write(tmp_path / "initfetch.yaml", manifest.replace('  V: "{{ secrets.v }}"', "  " + env_line))
    if template:
        write(tmp_path / "t.j2", template)
    command = (
        ["exec", "-o", str(out), "--allow-disk", "--", "true"] if env_line else ["render", "-o", str(out)]
    )
    r = run_cli([*command, "--allow-disk"] if not env_line else command, env=clean_env(), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert_one_line(r, expected)
    assert snapshot(out) == before


# --- preview masks what a template pulls in besides `secrets` -----------------------------------


def test_preview_masks_an_included_secret_file(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  db: file://db_password\ntemplates:\n  - {src: t.j2, dest: t.txt}\n"
        "env:\n  DB: \"{% include 'db_password' %}\"\n",
    )
    write(tmp_path / "db_password", CANARY_INCLUDED + "\n")
    write(tmp_path / "t.j2", "password={% include 'db_password' %}via secrets={{ secrets.db }}\n")
    r = run_cli(["preview"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert CANARY_INCLUDED not in r.stdout + r.stderr
    assert "password=<secret:db>\nvia secrets=<secret:db>\n" in r.stdout
    assert "DB=<secret:db>\n" in r.stdout
    r = run_cli(["preview", "--reveal"], env=clean_env(), cwd=tmp_path)
    assert f"password={CANARY_INCLUDED}\n" in r.stdout


def test_preview_scrubs_a_value_that_an_included_file_repeats(tmp_path: Path) -> None:
    # not a secret's source file, so only the redactor knows that its content is a value
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  pw: env://PW\ntemplates:\n  - {src: t.j2, dest: t.txt}\n"
        "env:\n  E: \"{% include 'legacy.conf' %}\"\n",
    )
    write(tmp_path / "legacy.conf", f"user=app password={CANARY_INCLUDED}\n")
    write(tmp_path / "t.j2", "{% include 'legacy.conf' %}")
    r = run_cli(["preview"], env=clean_env(PW=CANARY_INCLUDED), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert CANARY_INCLUDED not in r.stdout + r.stderr
    assert "user=app password=<secret:pw>\n--- env\nE=user=app password=<secret:pw>\n" in r.stdout


def test_offline_preview_masks_an_included_secret_file(tmp_path: Path) -> None:
    # offline nothing is resolved, so there is no value to scrub with: the file itself is masked
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  db: file://secrets/db_password\ntemplates:\n  - {src: t.j2, dest: t.txt}\n",
    )
    write(tmp_path / "secrets/db_password", CANARY_INCLUDED + "\n")
    (tmp_path / "link").symlink_to("secrets/db_password")  # another name for the same file
    write(tmp_path / "t.j2", "a={% include 'secrets/db_password' %}\nb={% include 'link' %}\n")
    r = run_cli(["preview", "--offline"], env=clean_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert CANARY_INCLUDED not in r.stdout + r.stderr
    assert "a=<secret:db>\n\nb=<secret:db>\n\n" in r.stdout  # the file's own newline stays


@pytest.mark.parametrize("text", ["1KıB", "1Mİ", "0MiB", "MiB", "1 TiB"])
def test_a_size_with_an_unknown_unit_is_a_value_error(text: str) -> None:
    # "ı" matches [Ii] case-insensitively but lowers to no known unit: once a KeyError (a crash)
    from initfetch.limits import parse_size

    with pytest.raises(ValueError):
        parse_size(text)
