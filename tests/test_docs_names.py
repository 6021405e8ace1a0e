"""Issue 23, point 6: what README.md and docs/ name exists. The commands, flags and
INITFETCH_* variables come from the parser itself, the manifest keys and provider options
from the manifest loader and the provider classes, so a page cannot drift from the code
without failing here.

What is checked, per page:
- every `initfetch COMMAND` in code is a command, and every flag after it (up to ` -- `)
  is one that command takes (or a common option);
- a flag alone in inline code (`--watch`) is an option of some command;
- every INITFETCH_* variable is a flag's twin, a limit's variable, or one initfetch sets
  or reads elsewhere in its code (the on_change command's, CI's);
- in a flag/twin table row, each flag's twin is the variable written next to it;
- every YAML block that is a manifest (or an `auth:` fragment of the page's provider) loads
  without an unknown key, option, type or method;
- every option in a provider page's "Option" table is an option of that provider type;
- `on_change.KEY` and the README's manifest table name keys the loader knows.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from initfetch import limits, providers
from initfetch.cli import build_parser
from initfetch.errors import BadInput
from initfetch.manifest import load_manifest
from initfetch.manifest.model import PROVIDER_KEYS, SECRET_KEYS, TOP_KEYS
from initfetch.manifest.watch import ON_CHANGE_KEYS
from initfetch.providers.base import COMMON_OPTIONS
from tests.helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# docs/watch.md is being rewritten on another branch; what it names that does not exist is
# reported to its author rather than fixed here (it names `on_change.timeout`).
KNOWN_DRIFT: dict[str, str] = {}  # page name -> why it may disagree with the code, for now

# Flags of other tools that pages name in inline code: what other secret tools print
# (`--verbose`), pip and uv (the lock files), cyclonedx-py (the SBOM), docker and dockerd.
OTHER_TOOLS = {
    "--verbose",
    "--require-hashes",
    "--only-binary",
    "--no-deps",
    "--universal",
    "--output-reproducible",
    "--build-arg",
    "--data-root",
    "--no-cache",
    "--mount",
    "--read-only",
}

FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")  # a span may wrap, never across a blank line
# A command line: initfetch first, after an optional prompt and VAR=value assignments (a
# message quoted in code, "give initfetch a new one", is not one).
COMMAND_LINE = re.compile(
    r"^\s*(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*initfetch[ \t]+([a-z][a-z-]*)(.*)$", re.M
)
FLAG = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")
PROVIDER_PAGES = {
    "vault.md": ("vault",),
    "aws.md": ("aws-secretsmanager", "aws-ssm"),
    "azure.md": ("azure-keyvault",),
}

PARSER = build_parser({})
SUB = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
COMMANDS: dict[str, argparse.ArgumentParser] = dict(SUB.choices)


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: a for a in parser._actions for flag in a.option_strings}


MAIN_FLAGS = _flags(PARSER)
TAKEN = {name: _flags(p) for name, p in COMMANDS.items()}
ALL_FLAGS = set(MAIN_FLAGS).union(*TAKEN.values())


def _twin(action: argparse.Action) -> str | None:
    m = re.search(r"\$(INITFETCH_[A-Z_]+)", action.help or "")
    return m.group(1) if m else None


TWINS = {flag: _twin(a) for flags in (MAIN_FLAGS, *TAKEN.values()) for flag, a in flags.items()}


def _code(text: str) -> tuple[list[str], list[str]]:
    """(fenced blocks, inline code spans outside them)."""
    blocks = [body for _, body in FENCE.findall(text)]
    return blocks, [" ".join(span.split()) for span in INLINE.findall(FENCE.sub("", text))]


def _variables_in_code() -> set[str]:
    found: set[str] = set()
    for pattern in ("initfetch/**/*.py", "tests/**/*.py", ".ci/*", "Makefile", "Dockerfile"):
        for path in REPO.glob(pattern):
            if path.is_file() and path != Path(__file__):
                found |= set(re.findall(r"INITFETCH_[A-Z_]+", path.read_text(errors="replace")))
    return found


def page_problems(page: Path) -> list[str]:
    text = page.read_text()
    blocks, inline = _code(text)
    problems: list[str] = []
    for code in blocks + inline:
        problems += _command_lines(code)
    for span in inline:
        flag = span.split()[0] if span.startswith("--") else None
        if flag and re.fullmatch(r"--[a-z][a-z-]*", flag) and flag not in ALL_FLAGS | OTHER_TOOLS:
            problems.append(f"`{span}`: no command takes {flag}")
        for key in re.findall(r"\bon_change\.([a-z_]+)", span):
            if key not in ON_CHANGE_KEYS:
                problems.append(f"`{span}`: on_change has no key '{key}'")
    problems += _variables(text)
    problems += _twin_rows(text)
    problems += _manifests(page, text)
    problems += _option_tables(page, text)
    if page.name == "README.md":
        problems += _manifest_table(text)
    return problems


def _command_lines(code: str) -> list[str]:
    out = []
    for command, rest in COMMAND_LINE.findall(code):
        if command not in COMMANDS:
            out.append(f"'initfetch {command}': no such command")
            continue
        rest = re.split(r"\s--\s|\s--$|\s#|\||&&|;", rest)[0]
        for flag in FLAG.findall(rest):
            if flag not in TAKEN[command] and flag not in MAIN_FLAGS:
                out.append(f"'initfetch {command} ... {flag}': {command} takes no {flag}")
    return out


def _variables(text: str) -> list[str]:
    known = {t for t in TWINS.values() if t} | {limits.env_name(n) for n in limits.DESCRIPTIONS}
    known |= _variables_in_code()
    return [
        f"{var}: neither a flag's twin, a limit, nor used by initfetch"
        for var in sorted(set(re.findall(r"INITFETCH_[A-Z_]+[A-Z]", text)) - known)
    ]


def _twin_rows(text: str) -> list[str]:
    """Table rows that pair flags with INITFETCH_* variables, in the same order."""
    out = []
    for row in re.findall(r"^\|([^\n]*)\|$", text, re.M):
        cells = [c.strip() for c in row.split("|")]
        if len(cells) < 2 or "--" not in cells[0] or "INITFETCH_" not in cells[1]:
            continue
        flags = re.findall(r"`(--?[a-z][a-z-]*)", cells[0])
        twins = re.findall(r"INITFETCH_[A-Z_]+[A-Z]", cells[1])
        if len(flags) != len(twins):
            out.append(f"row {cells[0]} | {cells[1]}: {len(flags)} flag(s), {len(twins)} variable(s)")
            continue
        for flag, twin in zip(flags, twins, strict=True):
            if TWINS.get(flag) != twin:
                out.append(f"{flag}'s twin is {TWINS.get(flag)}, not {twin}")
    return out


def _manifests(page: Path, text: str) -> list[str]:
    out = []
    types = PROVIDER_PAGES.get(page.name, ())
    for lang, body in FENCE.findall(text):
        if lang != "yaml":
            continue
        data = yaml.safe_load(body)
        if isinstance(data, dict) and set(data) == {"auth"} and types:
            data = {"providers": {"p": {"type": types[0], "auth": data["auth"]}}}
        if not isinstance(data, dict) or not set(data) & (TOP_KEYS - {"version"}):
            continue
        out += [f"YAML block {body.splitlines()[0]!r}...: {m}" for m in _unknown_names(page, data)]
    return out


def _unknown_names(page: Path, data: dict[str, object]) -> list[str]:
    import tempfile

    data = {"version": 1, **data}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "initfetch.yaml"
        path.write_text(yaml.safe_dump(data))
        try:
            load_manifest(path, {}, lenient_vars=True)
        except BadInput as e:
            return [p.message for p in e.problems if re.search(r"unknown|not allowed", p.message)]
    return []


def _option_tables(page: Path, text: str) -> list[str]:
    types = PROVIDER_PAGES.get(page.name)
    if not types:
        return []
    known = set(PROVIDER_KEYS) | set(COMMON_OPTIONS)
    for t in types:
        known |= set(providers.provider_class(t).OPTIONS)
    out = []
    for table in re.findall(r"^\| Option \|[^\n]*\n\|[-| ]+\|\n((?:\|[^\n]*\n)+)", text, re.M):
        for row in table.splitlines():
            for option in re.findall(r"`([a-z_]+)`", row.split("|")[1]):
                if option not in known:
                    out.append(f"option table names '{option}', not an option of {', '.join(types)}")
    return out


def _manifest_table(text: str) -> list[str]:
    section = text.split("## The manifest")[1].split("\n## ")[0]
    keys = set(re.findall(r"^\| (?:provider )?`([a-z_]+):", section, re.M))
    known = TOP_KEYS | SECRET_KEYS | PROVIDER_KEYS | {"concurrency"}
    return [f"the manifest table names '{k}:', which the loader does not know" for k in sorted(keys - known)]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_what_a_page_names_exists(page: Path, request: pytest.FixtureRequest) -> None:
    if page.name in KNOWN_DRIFT:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_DRIFT[page.name], strict=False))
    assert page_problems(page) == []


def test_every_flag_has_an_initfetch_twin() -> None:
    missing = sorted(f for f, twin in TWINS.items() if f.startswith("--") and twin is None)
    assert missing == ["--help", "--version"], missing


def test_the_check_finds_drift(tmp_path: Path) -> None:
    """The checks above fail on a page that names what does not exist."""
    page = tmp_path / "vault.md"
    page.write_text(
        "```sh\ninitfetch render --no-such-flag\ninitfetch frobnicate\n```\n"
        "`--nothing` and `on_change.nope` and INITFETCH_NO_SUCH_THING\n"
        "| `--watch` | `INITFETCH_HOLD=1` |\n"
        "```yaml\nsecrets: {a: env://A}\ntemplate: []\n```\n"
        "```yaml\nauth: {method: token, tokn_file: x}\n```\n"
        "| Option | Meaning |\n|---|---|\n| `adress` | typo |\n"
    )
    problems = "\n".join(page_problems(page))
    for expected in (
        "render takes no --no-such-flag",
        "'initfetch frobnicate': no such command",
        "no command takes --nothing",
        "on_change has no key 'nope'",
        "INITFETCH_NO_SUCH_THING",
        "--watch's twin is INITFETCH_WATCH, not INITFETCH_HOLD",
        "unknown key 'template'",
        "tokn_file",
        "'adress'",
    ):
        assert expected in problems, (expected, problems)
