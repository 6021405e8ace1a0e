"""The redactor's cost per line does not grow with the number of values (issue 9, point 1).

Counted, not timed: a resolution of N values builds the matcher once, however
many audit lines are then scrubbed, and masking stays leftmost-longest.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

from initfetch.logs import setup
from initfetch.manifest import load_manifest
from initfetch.redact import Redactor
from initfetch.resolve.resolver import Resolver


def test_one_build_per_batch_of_values() -> None:
    r = Redactor()
    for i in range(1000):
        r.add(f"value-{i:04d}-secret", f"s{i}")
    lines = [r.scrub(f"line {i}: value-{i:04d}-secret and value-{999 - i:04d}-secret") for i in range(1000)]
    assert r.builds == 1
    assert lines[3] == "line 3: <secret:s3> and <secret:s996>"
    r.add("one-more-value", "x")  # a new batch: one more build, whatever the number of lines
    for _ in range(100):
        assert r.scrub("a one-more-value b") == "a <secret:x> b"
    assert r.builds == 2


def test_resolving_many_values_with_audit_lines_builds_once(tmp_path: Path) -> None:
    n = 300
    environ = {f"V{i}": f"secret-value-{i:04d}" for i in range(n)}
    (tmp_path / "initfetch.yaml").write_text(
        "version: 1\nsecrets:\n" + "".join(f"  s{i}: env://V{i}\n" for i in range(n))
    )
    redactor = Redactor()
    setup(redactor, level="debug")  # every audit record passes through the scrubbing filter
    try:
        manifest = load_manifest(tmp_path / "initfetch.yaml", environ)
        resolution = Resolver(manifest, environ, redactor, timeout=10).resolve()
    finally:
        logging.getLogger().handlers.clear()
    assert len(resolution.values) == n
    assert redactor.builds == 1


def test_longest_match_wins_and_forms_are_masked() -> None:
    r = Redactor()
    r.add("hunter2", "short")
    r.add("hunter2-and-more", "long")
    r.add({"cert": "-----BEGIN X-----\nAAAAline\n-----END X-----"}, "pem")
    assert r.scrub("x hunter2-and-more y hunter2") == "x <secret:long> y <secret:short>"
    escaped = json.dumps("-----BEGIN X-----\nAAAAline\n-----END X-----")
    assert "AAAAline" not in r.scrub(escaped)
    assert "AAAAline" not in r.scrub("logged: AAAAline")  # one line of a multi-line value
    b64 = base64.b64encode(b"hunter2-and-more").decode()
    assert r.scrub(f"b64 {b64}") == "b64 <secret:long>"
    assert r.scrub("hunter2-and-more", min_len=20) == "hunter2-and-more"  # structured fields


def test_values_sharing_a_long_prefix_are_told_apart() -> None:
    r = Redactor()
    prefix = "-----BEGIN CERTIFICATE-----MIIF"  # longer than the matcher's anchor
    r.add(prefix + "aaaa", "a")
    r.add(prefix + "bbbb", "b")
    assert r.scrub(f"{prefix}bbbb {prefix}aaaa {prefix}cccc") == f"<secret:b> <secret:a> {prefix}cccc"


def test_retire_keeps_only_the_given_values_and_the_latest_additions() -> None:
    r = Redactor()
    for i in range(1000):
        r.add(f"old-value-{i:04d}", f"s{i}")
    r.retire([])  # additions since the last retire (all of them) are kept once more
    assert len(r) == 2000  # each value and its base64 form
    r.add("new-derived-form", "d")
    r.retire(["old-value-0007"])
    assert len(r) == 2 + 2  # the kept value and the newest addition, with their base64 forms
    assert r.scrub("new-derived-form old-value-0007") == "<secret:d> <secret:s7>"
    assert r.scrub("old-value-0008") == "old-value-0008"  # forgotten
