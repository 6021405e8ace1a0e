"""The watcher over local providers: what a refresh writes, signals and keeps."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from initfetch.errors import NotReady
from initfetch.manifest.watch import WatchConfig
from initfetch.outdir import health, names
from tests.helpers import CANARY, CANARY2, assert_no_canary, write
from tests.watch_helpers import Clock, start_watcher, wait_until

MANIFEST = """\
version: 1
secrets:
  a: file://src/a
  b: file://src/b
templates:
  - src: both.j2
    dest: conf/both.txt
files:
  - {secret: a, dest: a.txt}
  - {secret: b, dest: b.txt}
env:
  A: "{{ secrets.a }}"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "src/a", "a-v1")
    write(tmp_path / "src/b", "b-v1")
    write(tmp_path / "both.j2", "{{ secrets.b }}\n")
    return tmp_path


def fingerprint(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def config(seconds: float = 10) -> WatchConfig:
    return WatchConfig(providers={"file": seconds})


def test_nothing_is_due_before_the_interval(project: Path) -> None:
    clock = Clock()
    watcher, _ = start_watcher(project, MANIFEST, {}, config(10), clock=clock)
    write(project / "src/a", "a-v2")
    clock.advance(5)
    watcher.cycle()
    assert (project / "out/a.txt").read_text() == "a-v1"


def test_unchanged_secret_writes_nothing_and_notifies_no_one(project: Path) -> None:
    clock = Clock()
    watcher, changes = start_watcher(project, MANIFEST, {}, config(10), clock=clock)
    out = project / "out"
    before = {p: fingerprint(out / p) for p in ("a.txt", "b.txt", "conf/both.txt", ".initfetch-ready.json")}
    due_before = watcher.schedule.next_at()
    for _ in range(3):
        clock.advance(12)
        watcher.cycle()
    assert watcher.schedule.next_at() > due_before  # the secrets were read again
    assert {p: fingerprint(out / p) for p in before} == before
    assert changes == []


def test_only_the_changed_files_are_rewritten(project: Path) -> None:
    clock = Clock()
    watcher, changes = start_watcher(project, MANIFEST, {}, config(10), clock=clock)
    out = project / "out"
    b_files = {p: fingerprint(out / p) for p in ("b.txt", "conf/both.txt")}
    write(project / "src/a", "a-v2")
    clock.advance(12)
    watcher.cycle()
    assert (out / "a.txt").read_text() == "a-v2"
    assert {p: fingerprint(out / p) for p in b_files} == b_files
    assert len(changes) == 1
    assert (changes[0].secrets, changes[0].files, changes[0].env) == (["a"], ["a.txt"], ["A"])
    assert changes[0].rendered.env["A"] == "a-v2"
    assert health.healthcheck(out)["files"] == ["a.txt", "b.txt", "conf/both.txt"]


def test_a_failed_refresh_keeps_the_last_good_render_and_recovers(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    watcher, changes = start_watcher(project, MANIFEST, {}, config(10), clock=clock)
    out = project / "out"
    files = {p: fingerprint(out / p) for p in ("a.txt", "b.txt", "conf/both.txt")}
    os.rename(project / "src/a", project / "src/a.away")
    caplog.set_level(logging.INFO, "initfetch")
    clock.advance(12)
    watcher.cycle()
    assert {p: fingerprint(out / p) for p in files} == files and changes == []
    assert any(
        "keeping the last good render" in r.getMessage() and "not-found" in r.getMessage()
        for r in caplog.records
    )
    marker = health.healthcheck(out)
    health.check(out, marker, max_stale=60)  # failing, but not for long yet
    wall = time.time()
    with pytest.raises(NotReady, match="stale"):
        health.check(out, marker, max_stale=60, now=wall + 120)
    # Retried with backoff, not at the next interval; healthy again once it succeeds (until the
    # next refresh falls due and is not made: the staleness is counted from the clock).
    os.rename(project / "src/a.away", project / "src/a")
    clock.advance(2)
    watcher.cycle()
    health.check(out, marker, max_stale=60, now=wall + 60)
    assert {p: fingerprint(out / p) for p in files} == files and changes == []


def test_a_template_that_stops_rendering_keeps_the_last_good_render(project: Path) -> None:
    clock = Clock()
    manifest = MANIFEST.replace("file://src/b", "file://src/b.json#key").replace("both.j2", "key.j2")
    write(project / "src/b.json", '{"key": "k1"}')
    write(project / "key.j2", "{{ secrets.b }}")
    watcher, changes = start_watcher(project, manifest, {}, config(10), clock=clock)
    write(project / "src/b.json", '{"other": "k2"}')  # the key is gone: missing-key
    clock.advance(12)
    watcher.cycle()
    assert (project / "out/b.txt").read_text() == "k1" and changes == []


def test_values_never_reach_the_log(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(project / "src/a", CANARY)
    clock = Clock()
    caplog.set_level(logging.DEBUG, logger="initfetch")  # whatever an in-process CLI run left
    watcher, changes = start_watcher(project, MANIFEST, {}, config(10), clock=clock)
    write(project / "src/a", CANARY2)
    clock.advance(12)
    watcher.cycle()
    assert changes and (project / "out/a.txt").read_text() == CANARY2
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "secret a changed: file://src/a" in text
    assert_no_canary(text, (project / "out/.initfetch-ready.json").read_text())
    assert_no_canary((project / "out" / names.STATUS_NAME).read_text())


def test_the_loop_rerenders_within_one_interval(project: Path) -> None:
    watcher, changes = start_watcher(project, MANIFEST, {}, config(0.2))
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        write(project / "src/b", "b-v2")
        wait_until(lambda: (project / "out/conf/both.txt").read_text() == "b-v2\n", what="the re-render")
        wait_until(lambda: len(changes) == 1, what="the notification")
    finally:
        watcher.request_stop()
        thread.join(10)
    assert not thread.is_alive()


def test_env_provider_is_not_polled(tmp_path: Path) -> None:
    watcher, _ = start_watcher(tmp_path, "version: 1\nsecrets:\n  s: env://S\n", {"S": "x"})
    assert watcher.schedule.next_at() is None


def test_threads_and_memory_stay_flat_over_a_thousand_cycles(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Audit records kept by pytest's log capture are the test's memory, not the watcher's.
    caplog.set_level(logging.WARNING, "initfetch")
    caplog.set_level(logging.WARNING, "initfetch.audit")
    clock = Clock()
    watcher, changes = start_watcher(project, MANIFEST, {}, config(1), clock=clock)

    def run(n: int) -> None:
        for _ in range(n):
            clock.advance(2)
            watcher.cycle()

    tracemalloc.start()
    try:
        run(200)  # warm up under tracing: caches (Jinja, the allocator's own tables), the fetch pool
        gc.collect()
        threads = threading.active_count()
        base = tracemalloc.take_snapshot()
        run(1000)
        gc.collect()
        others = [tracemalloc.Filter(False, "*/logging/*"), tracemalloc.Filter(False, "*/_pytest/*")]
        after = tracemalloc.take_snapshot().filter_traces(others)
        grown = sum(s.size_diff for s in after.compare_to(base.filter_traces(others), "filename"))
    finally:
        tracemalloc.stop()
    assert watcher.cycles == 1200 and changes == []
    assert threading.active_count() <= threads  # a thread left by an earlier test may end meanwhile
    assert grown < 256 * 1024, f"memory grew by {grown} bytes over 1000 refresh cycles"


def test_the_redactor_keeps_the_current_and_previous_values_only(project: Path) -> None:
    clock = Clock()
    watcher, changes = start_watcher(project, MANIFEST, {}, config(1), clock=clock)
    seen = []
    for i in range(50):
        value = f"rotated-value-{i:04d}-{CANARY}"
        seen.append(value)
        write(project / "src/a", value)
        clock.advance(2)
        watcher.cycle()
    assert len(changes) == 50
    scrub = watcher.redactor.scrub
    assert scrub(seen[-1]) != seen[-1] and scrub(seen[-2]) != seen[-2]  # current and in flight: masked
    assert scrub("b-v1") != "b-v1"  # an unchanged secret stays masked
    assert all(scrub(v) == v for v in seen[:-2])  # older generations forgotten: memory stays bounded


def test_max_stale_without_a_watcher_counts_from_the_render(tmp_path: Path) -> None:
    marker = {"completed_at": "2026-01-01T00:00:00Z"}
    rendered_at = 1767225600.0  # that moment, in epoch seconds
    health.check(tmp_path, marker, max_stale=60, now=rendered_at + 30)
    with pytest.raises(NotReady, match="rendered and never refreshed 120s ago"):
        health.check(tmp_path, marker, max_stale=60, now=rendered_at + 120)
    health.check(tmp_path, marker, max_stale=None, now=rendered_at + 10**6)  # no limit asked


def test_derived_forms_of_unchanged_secrets_stay_masked_across_refreshes(tmp_path: Path) -> None:
    write(tmp_path / "src/a", "a-value-1")
    write(tmp_path / "src/cfg.json", '{"obj": {"k": "leaf-value-' + CANARY + '"}}')
    write(tmp_path / "t.j2", "{{ secrets.cfg | b64encode }}")  # a form no value lookup recognises
    manifest = (
        "version: 1\nsecrets:\n  a: file://src/a\n  cfg: file://src/cfg.json#obj\n"
        "templates:\n  - {src: t.j2, dest: t}\nfiles:\n  - {secret: a, dest: a}\n"
    )
    clock = Clock()
    watcher, changes = start_watcher(tmp_path, manifest, {}, config(1), clock=clock)
    derived = (tmp_path / "out/t").read_text()
    for i in range(2, 6):
        write(tmp_path / "src/a", f"a-value-{i}")
        clock.advance(2)
        watcher.cycle()
        assert watcher.redactor.scrub(derived) != derived, f"unmasked after refresh {i - 1}"
    assert len(changes) == 4


def test_templates_are_compiled_once_and_reused_by_every_refresh(project: Path) -> None:
    """One template Jinja renders: one compilation in all, whatever the number of refreshes
    (the env value, `{{ secrets.a }}`, is simple.py's and never compiled)."""
    from initfetch.templating.sandbox import Sandbox

    write(project / "both.j2", "{{ secrets.b | string }}\n")  # a filter: Jinja's (not simple.py's)

    compiled: list[str] = []
    real = Sandbox._compile

    def counting(self: Sandbox, source: str, filename: str) -> object:
        compiled.append(filename)
        return real(self, source, filename)

    Sandbox._compile = counting  # type: ignore[method-assign]
    try:
        clock = Clock()
        watcher, changes = start_watcher(project, MANIFEST, {}, config(1), clock=clock)
        first = len(compiled)
        for i in range(20):
            write(project / "src/b", f"b-v{i + 2}")
            clock.advance(2)
            watcher.cycle()
    finally:
        Sandbox._compile = real  # type: ignore[method-assign]
    assert len(changes) == 20 and first == 1
    assert len(compiled) == first, compiled


def test_a_secret_without_versions_changes_without_a_version_line(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    caplog.set_level(logging.INFO, logger="initfetch")
    watcher, _ = start_watcher(project, MANIFEST, {}, config(1), clock=clock)
    write(project / "src/a", "a-v2")
    clock.advance(2)
    watcher.cycle()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "secret a changed: file://src/a\n" in text + "\n" and "version -" not in text


def test_secrets_polled_at_one_interval_are_read_in_one_batch(tmp_path: Path) -> None:
    """The jitter spreads their due times; the first one due brings the others within its
    width along: one refresh per interval, not one per secret."""
    names_ = [f"s{i}" for i in range(30)]
    for n in names_:
        write(tmp_path / f"src/{n}", f"{n}-v1")
    secrets = "".join(f"  {n}: file://src/{n}\n" for n in names_)
    files = "".join(f"  - {{secret: {n}, dest: {n}.txt}}\n" for n in names_)
    clock = Clock()
    watcher, _ = start_watcher(
        tmp_path, f"version: 1\nsecrets:\n{secrets}files:\n{files}", {}, config(10), clock=clock
    )
    refreshed: list[int] = []
    real = watcher.pipeline.resolve

    def counting(names: object = None) -> object:
        refreshed.append(len(names or []))  # type: ignore[arg-type]
        return real(names)  # type: ignore[arg-type]

    watcher.pipeline.resolve = counting  # type: ignore[method-assign]
    for _ in range(5):  # five intervals, waking when the schedule says
        clock.now = watcher.schedule.next_at()
        watcher.cycle()
    assert refreshed == [30] * 5


def test_a_refresh_that_changes_nothing_renders_nothing(project: Path) -> None:
    clock = Clock()
    watcher, changes = start_watcher(project, MANIFEST, {}, config(1), clock=clock)
    renders: list[int] = []
    real = watcher.pipeline.render

    def counting(*args: object, **kwargs: object) -> object:
        renders.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    watcher.pipeline.render = counting  # type: ignore[method-assign]
    for _ in range(5):
        clock.advance(2)
        watcher.cycle()
    assert renders == [] and changes == []
    write(project / "src/b", "b-v2")  # a change still renders and writes
    clock.advance(2)
    watcher.cycle()
    assert renders == [1] and len(changes) == 1
    assert (project / "out/conf/both.txt").read_text() == "b-v2\n"
