"""docs/reliability.md states figures; this keeps them true.

- The figures table is parsed and checked against the constants of the tests that
  produce them (tests/test_faults_random.py, tests/test_fuzz.py): lowering a run count
  or a fuzz budget below what the doc claims, or claiming a partial write or a leak,
  fails here.
- The limits table must list every field of initfetch.limits.Limits with its default
  and the setting that raises it.
- The leak check itself (tests/conftest.py) is tested: it finds every encoded form of a
  canary, and it is wired into this session.
- Exec mode: no secret in the child's or the supervisor's argv (/proc/PID/cmdline).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

import tests.conftest as leakcheck
import tests.test_faults_random as faults
import tests.test_fuzz as fuzz
from initfetch import limits
from tests.backends.fault_proxy import TRANSIENT_KINDS
from tests.helpers import CANARY, CANARY2, REPO, clean_env, run_cli, write

DOC = REPO / "docs" / "reliability.md"


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped, header and rule skipped) of the first table under `heading`."""
    text = DOC.read_text()
    start = text.index(heading)
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"no table under {heading!r}"
    return rows[2:]


def figures() -> dict[str, str]:
    return {row[0]: row[1] for row in table_after("## Figures")}


def number(cell: str) -> float:
    m = re.search(r"-?\d[\d,]*(\.\d+)?", cell)
    assert m, f"no number in {cell!r}"
    return float(m.group(0).replace(",", ""))


def test_run_counts_do_not_regress() -> None:
    f = figures()
    runs = number(f["randomized whole-process runs"])
    assert 200 <= runs <= faults.RANDOM_RUNS
    assert number(f["backends behind the fault proxy"]) == len(faults.BACKENDS)
    assert number(f["highest transient fault rate per request"]) == faults.MAX_FAULT_RATE * 100
    ok, of = (number(x) for x in f["randomized runs that succeeded completely"].split(" of "))
    assert ok == of == runs
    assert number(f["--timeout of a randomized run"]) == faults.RUN_TIMEOUT


def test_failure_figures_do_not_regress() -> None:
    f = figures()
    permanent = len(faults.BACKENDS) * len(faults.PERMANENT_KINDS) + len(faults.BACKENDS)
    assert number(f["permanent-fault runs (exit 3)"]) <= permanent
    assert number(f["longest fast failure"]) < faults.FAST_FAILURE_BOUND
    assert number(f["fast-failure bound (with --timeout 60)"]) == faults.FAST_FAILURE_BOUND
    assert number(f["deadline runs (exit 4)"]) <= len(faults.BACKENDS) * len(faults.DOWN_KINDS)
    assert number(f["deadline of those runs"]) == faults.SHORT_TIMEOUT
    assert number(f["partial or mixed writes"]) == 0
    assert number(f["leaks found"]) == 0
    assert number(f["faults injected (one seeded session)"]) > 0
    share = number(f["share of requests faulted in the randomized runs"])
    assert faults.MIN_FAULT_RATE * 100 <= share <= faults.MAX_FAULT_RATE * 100


def test_fuzz_figures_do_not_regress() -> None:
    f = figures()
    assert number(f["hostile inputs tried (hypothesis)"]) <= sum(fuzz.FUZZ_EXAMPLES.values())
    assert number(f["fuzz crashes and internal errors"]) == 0


CORPUS_FILES = (
    "tests/test_manifest_hardening.py",
    "tests/test_writer_names.py",
    "tests/test_render_limits.py",
    "tests/test_file_limits.py",
)


def test_corpus_figure_does_not_regress() -> None:
    import subprocess
    import sys

    from tests.helpers import REPO

    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *CORPUS_FILES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    cases = sum("::" in line for line in collected.stdout.splitlines())
    assert number(figures()["hostile inputs tried (corpus)"]) <= cases, collected.stdout[-2000:]


def test_every_fault_kind_is_documented_and_was_injected() -> None:
    rows = {row[0].strip("`"): row for row in table_after("## Faults injected")}
    kinds = {"refuse", *TRANSIENT_KINDS}
    assert kinds <= rows.keys(), kinds - rows.keys()
    for kind in kinds:
        assert number(rows[kind][1]) > 0, kind
    total = sum(int(number(rows[k][1])) for k in kinds)
    assert total == number(figures()["faults injected (one seeded session)"])


def test_limits_table_matches_the_code() -> None:
    rows = {row[0].strip("`"): row for row in table_after("## Limits")}
    defaults = limits.Limits()
    names = [f.name for f in dataclasses.fields(defaults)]
    assert sorted(rows) == sorted(names), "the doc's limits are not the code's"
    for name in names:
        value = getattr(defaults, name)
        shown = limits.human_size(value) if name.endswith("_size") else str(value)
        assert rows[name][1].replace(",", "").replace("_", "") == shown.replace(",", ""), name
        assert limits.env_name(name) in rows[name][2], name
        in_manifest = limits.DESCRIPTIONS[name][1]
        assert ("limits:" in rows[name][2]) == in_manifest, name


def test_other_bounds_match_the_code() -> None:
    from initfetch.cli import build_parser
    from initfetch.providers.base import FetchContext

    text = DOC.read_text()
    timeout = build_parser({}).parse_args(["render"]).timeout
    assert f"(default {timeout:g} s, `INITFETCH_TIMEOUT`)" in text
    assert FetchContext(deadline=float("inf")).timeout() == 10.0
    assert "one HTTP request waits at most 10 s" in text


# --- the leak check itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda v: v,
        lambda v: base64.b64encode(v.encode()).decode(),
        lambda v: base64.b64encode(b"x:" + v.encode()).decode(),  # at an offset inside a longer value
        lambda v: base64.b64encode(b"xy:" + v.encode() + b"\n").decode(),
        lambda v: base64.urlsafe_b64encode(b"?" + v.encode()).decode(),
        lambda v: quote("a/" + v + "/b", safe=""),
        lambda v: quote_plus("k=" + v + " x"),
        lambda v: json.dumps({"k": v + '"\n'})[1:-1],
        lambda v: json.dumps(v)[1:-1],
    ],
)
@pytest.mark.parametrize("canary", [CANARY, CANARY2, 'pa ss/w+rd=é"\\x'])
def test_scanner_finds_every_form(canary: str, encode: object) -> None:
    leakcheck.helpers.register_canary(canary)
    text = "prefix " + encode(canary) + " suffix"  # type: ignore[operator]
    assert leakcheck.find_leaks([("probe", text)], count=False)
    assert not leakcheck.find_leaks([("probe", "nothing to see " + CANARY[:-3])], count=False)


def test_leak_check_is_wired_into_this_session(pytestconfig: pytest.Config) -> None:
    import subprocess

    hooks = {
        impl.function.__module__
        for impl in pytestconfig.pluginmanager.hook.pytest_runtest_makereport.get_hookimpls()
    }
    assert "tests.conftest" in hooks
    assert subprocess.Popen.communicate is leakcheck._communicate
    before = len(leakcheck.helpers.RECORDED)
    r = run_cli(["--version"])
    assert r.returncode == 0
    assert len(leakcheck.helpers.RECORDED) > before  # run_cli's outputs are recorded for the scan


# --- exec mode: no secret in any argv ----------------------------------------------------------------

PROBE = r"""
import json, os, sys
forms = json.load(open(sys.argv[1]))
def hits(path):
    try:
        data = open(path, "rb").read().decode("utf-8", "replace")
    except OSError as e:
        return ["unreadable: " + type(e).__name__]
    return [i for i, f in enumerate(forms) if f in data]
report = {
    "self_cmdline": hits("/proc/self/cmdline"),
    "parent_cmdline": hits(f"/proc/{os.getppid()}/cmdline"),
    "parent_argv": open(f"/proc/{os.getppid()}/cmdline", "rb").read().split(b"\0")[:6],
    "self_environ": hits("/proc/self/environ"),
}
report["parent_argv"] = [a.decode("utf-8", "replace") for a in report["parent_argv"]]
open(sys.argv[2], "w").write(json.dumps(report))
"""


@pytest.mark.parametrize("mode", [["--supervise"], []])
def test_exec_child_and_supervisor_argv_hold_no_secret(tmp_path: Path, mode: list[str]) -> None:
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  a: env://SRC\n  b: file://pw\n"
        "env:\n  DB_PASSWORD: '{{ secrets.a }}'\n  TOKEN: '{{ secrets.b | b64encode }}'\n",
    )
    write(tmp_path / "pw", CANARY2 + "\n")
    write(tmp_path / "probe.py", PROBE)
    forms = sorted({f for c in (CANARY, CANARY2) for f in leakcheck.canary_forms(c)})
    (tmp_path / "forms.json").write_text(json.dumps(forms))
    report_file = tmp_path / "report.json"
    r = run_cli(
        [
            "exec",
            *mode,
            "--",
            sys.executable,
            str(tmp_path / "probe.py"),
            str(tmp_path / "forms.json"),
            str(report_file),
        ],
        env=clean_env(SRC=CANARY),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(report_file.read_text())
    # The probe does see secrets where they are meant to be (its environment): it would see them in argv.
    assert report["self_environ"], "probe found no secret in its own environment"
    assert report["self_cmdline"] == []
    assert report["parent_cmdline"] == []
    if mode:  # the parent is the supervising initfetch itself
        assert "initfetch" in " ".join(report["parent_argv"]) and "exec" in report["parent_argv"]
