"""Shared test plumbing.

In CI (CI=true) a test that cannot run its required parts fails loudly instead
of skipping: a skipped test is not a passing test.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import threading
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from tests import helpers

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: object, why: str) -> None:
    """Skip on a developer machine, fail in CI, when a required part is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required test dependency missing in CI: {why}", pytrace=False)
    pytest.skip(why)


# --- the suite-wide leak check ------------------------------------------------------------------
#
# After every phase of every test, scan what it produced for every canary value and its
# base64 (at any byte offset), URL-encoded and JSON-escaped forms:
# - the test process's captured stdout, stderr and log records (report sections);
# - every record the `initfetch` loggers emitted in the test process, audit records included
#   (a handler on the `initfetch` logger scans each record as it is emitted, at whatever
#   level the test or the CLI set);
# - stdout and stderr of every initfetch process the test started (tests/helpers.py records
#   them through the wrapped Popen.communicate), except stdout of `preview --reveal` and of
#   `exec` (the application's own output);
# - audit files (`*audit*`) and completion markers (`.initfetch-ready.json`) under the
#   test's tmp_path.
# Other files in OUT_DIR are never scanned: secrets belong there. A hit fails the test.
#
# Canaries: tests.helpers.CANARIES, every test module's CANARY* constants (str or a tuple
# of str), and values registered with tests.helpers.register_canary.


MIN_CANARY = 8  # shorter values would match by chance
LEAK_STATS = {"tests": 0, "outputs": 0, "bytes": 0, "hits": 0, "canaries": 0, "forms": 0}
_MODULE_CANARIES: set[str] = set()
_PATTERN: list[object] = [None, frozenset()]  # compiled regex, the canary set it was built for


def b64_cores(data: bytes, alphabet: bytes = b"+/") -> list[str]:
    """The base64 text of `data` as it appears inside the base64 of any longer byte string.

    For a prefix of 0, 1 or 2 bytes the first 0, 2 or 3 characters depend on that prefix
    and the last group on what follows, so only the characters in between are certain.
    """
    out = []
    for k, skip in ((0, 0), (1, 2), (2, 3)):
        n = k + len(data)
        enc = base64.b64encode(b"\0" * k + data, altchars=alphabet).decode()
        core = enc[skip : 4 * (n // 3)]
        if len(core) >= MIN_CANARY:
            out.append(core)
    return out


def canary_forms(value: str) -> dict[str, str]:
    """form -> a label saying which encoding of the canary it is."""
    forms = {value: "raw"}
    data = value.encode("utf-8")
    for label, form in (
        ("url-encoded", quote(value, safe="")),
        ("url-encoded", quote(value)),
        ("url-encoded (plus)", quote_plus(value)),
        ("json-escaped", json.dumps(value)[1:-1]),
        ("json-escaped", json.dumps(value, ensure_ascii=False)[1:-1]),
    ):
        forms.setdefault(form, label)
    for core in b64_cores(data):
        forms.setdefault(core, "base64")
    for core in b64_cores(data, b"-_"):
        forms.setdefault(core, "base64url")
    return {f: label for f, label in forms.items() if len(f) >= MIN_CANARY}


def all_canaries() -> frozenset[str]:
    values = set(helpers.CANARIES) | _MODULE_CANARIES | set(helpers.REGISTERED)
    return frozenset(v for v in values if isinstance(v, str) and len(v) >= MIN_CANARY)


def _pattern() -> tuple[re.Pattern[str], dict[str, tuple[str, str]]]:
    canaries = all_canaries()
    if _PATTERN[0] is None or _PATTERN[1] != canaries:
        lookup: dict[str, tuple[str, str]] = {}
        for canary in sorted(canaries):
            for form, label in canary_forms(canary).items():
                lookup.setdefault(form, (canary, label))
        regex = re.compile("|".join(re.escape(f) for f in sorted(lookup, key=len, reverse=True)))
        _PATTERN[:] = [(regex, lookup), canaries]
        LEAK_STATS["canaries"], LEAK_STATS["forms"] = len(canaries), len(lookup)
    return _PATTERN[0]  # type: ignore[return-value]


def find_leaks(sources: list[tuple[str, str]], *, count: bool = True) -> list[str]:
    """One line per (source, canary, form) found; never the canary itself."""
    regex, lookup = _pattern()
    found = []
    for where, text in sources:
        if count:
            LEAK_STATS["outputs"] += 1
            LEAK_STATS["bytes"] += len(text)
        for m in set(regex.findall(text)):
            canary, label = lookup[m]
            found.append(f"{where}: the {label} form of canary #{sorted(all_canaries()).index(canary)}")
    return found


class _LogScanner(logging.Handler):
    """Scans each record of the `initfetch` loggers as it is emitted; keeps only what it finds.

    It does not change any logger's level (tests and the CLI set those): it sees the records
    the test really produced. Nothing is stored per record, so a test that counts memory
    over thousands of cycles stays flat.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.hits: list[str] = []
        self.records = 0
        self.lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string is not a leak
            text = str(record.msg)
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):
            text += " " + json.dumps(audit, default=str)
        hits = find_leaks([(f"log record of {record.name}", text)], count=False)
        with self.lock_:
            self.records += 1
            self.hits += hits


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    seen: set[int] = set()
    for item in items:
        module = getattr(item, "module", None)
        if module is None or id(module) in seen:
            continue
        seen.add(id(module))
        for name, value in vars(module).items():
            if not name.startswith("CANARY"):
                continue
            for v in value if isinstance(value, tuple | list | frozenset | set) else (value,):
                if isinstance(v, str):
                    _MODULE_CANARIES.add(v)


_original_communicate = subprocess.Popen.communicate


def _communicate(self: subprocess.Popen, *args: object, **kwargs: object):  # type: ignore[no-untyped-def, type-arg]
    out, err = _original_communicate(self, *args, **kwargs)  # type: ignore[arg-type]
    helpers.record_process_output(self.args, out, err)
    return out, err


subprocess.Popen.communicate = _communicate  # type: ignore[method-assign]

_LOGS = _LogScanner()
_LEAK_KEY = pytest.StashKey[dict]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    helpers.RECORDED.clear()
    with _LOGS.lock_:
        _LOGS.hits.clear()
    item.stash[_LEAK_KEY] = {"sections": 0}
    logger = logging.getLogger("initfetch")
    if _LOGS not in logger.handlers:
        logger.addHandler(_LOGS)
    LEAK_STATS["tests"] += 1


def _phase_sources(item: pytest.Item, report: pytest.TestReport) -> list[tuple[str, str]]:
    state = item.stash.get(_LEAK_KEY, {"sections": 0})
    sources = [(f"{report.when}: {title}", text) for title, text in report.sections[state["sections"] :]]
    state["sections"] = len(report.sections)
    recorded, helpers.RECORDED[:] = list(helpers.RECORDED), []
    sources += [(f"{report.when}: {label}", text) for label, text in recorded]
    if report.when == "teardown":
        tmp = getattr(item, "funcargs", {}).get("tmp_path")
        if isinstance(tmp, Path) and tmp.is_dir():
            # Audit files, and completion markers: they sit in OUT_DIR but never hold a value.
            for p in sorted({*tmp.rglob("*audit*"), *tmp.rglob(".initfetch-ready.json")}):
                if p.is_file() and not p.is_symlink() and p.stat().st_size < 16 * 1024 * 1024:
                    sources.append((f"file {p.relative_to(tmp)}", p.read_text(errors="replace")))
    return sources


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    # In CI any skip (a skipif marker, a pytest.skip() deep in a fixture) is a failure.
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"
    leaks = find_leaks(_phase_sources(item, report))
    with _LOGS.lock_:
        leaks += [f"{report.when}: {hit}" for hit in _LOGS.hits]
        _LOGS.hits.clear()
    if leaks:
        LEAK_STATS["hits"] += len(leaks)
        report.outcome = "failed"
        report.longrepr = "secret canary leaked:\n  " + "\n  ".join(leaks)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    s = LEAK_STATS
    terminalreporter.write_line(
        f"leak check: {s['outputs']} outputs ({s['bytes']} bytes) and {_LOGS.records} log records "
        f"of {s['tests']} tests scanned for {s['canaries']} canaries in {s['forms']} forms: "
        f"{s['hits']} hits"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = Path(session.config.rootpath) / ".pytest_cache" / "initfetch-leak-check.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**LEAK_STATS, "log_records": _LOGS.records}, indent=1) + "\n")
    except OSError:
        pass
