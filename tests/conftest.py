"""Shared test plumbing.

In CI (CI=true) a test that cannot run its required parts fails loudly instead
of skipping: a skipped test is not a passing test.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: object, why: str) -> None:
    """Skip on a developer machine, fail in CI, when a required part is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required test dependency missing in CI: {why}", pytrace=False)
    pytest.skip(why)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    # In CI any skip (a skipif marker, a pytest.skip() deep in a fixture) is a failure.
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"
