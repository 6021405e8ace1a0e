"""The soak test: a real `render --watch` left to itself under random faults.

A real OpenBao behind the fault proxy answers with random faults (resets, 429s with and
without Retry-After, 500/502/503, truncated bodies, answers slower than the per-request
timeout), goes down and comes back, denies a secret for a while (403), and has the secrets
rotated under the watcher; the test sends SIGHUP at random. Meanwhile a reader checks that
every rendered file always holds one complete version (never a partial write), and the
process's threads, descriptors and memory are sampled. It ends in SIGTERM at a random moment:
the process must be gone within 2 s. Short runs repeat the random stop.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import tests.backends.openbao as openbao_backend
import tests.watch_helpers as watch_helpers
from tests.backends.fault_proxy import Answer, FaultPlan, FaultProxy, fault_proxy
from tests.backends.openbao import OpenBao
from tests.helpers import assert_no_canary, clean_env, write
from tests.watch_helpers import Proc, start, wait_until

openbao = openbao_backend.openbao
procs = watch_helpers.procs

SECRETS = 12
CANARY_SOAK = "CANARY-soak-71c2"
STOP_WITHIN = 2.0
# The log lines of a refresh that ended: unchanged (debug), changed, or failed (debug).
CYCLE_LINES = ("re-read ", "rewrote ", "the refresh of ")


def value(i: int, version: int) -> str:
    return f"{CANARY_SOAK}-{i}-v{version}"


def manifest(tmp_path: Path) -> None:
    # 50 ms: the secrets of one interval are read in one batch (one refresh per interval, not
    # one per secret), so 500 refresh cycles in the soak's time need a short interval.
    secrets = "".join(f"  s{i}: vault://secret/soak/{i}#password\n" for i in range(SECRETS))
    files = "".join(f"  - {{secret: s{i}, dest: s{i}}}\n" for i in range(SECRETS))
    write(tmp_path / "all.j2", "".join(f"{i}={{{{ secrets.s{i} }}}}\n" for i in range(SECRETS)))
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nproviders:\n  vault: {type: vault, refresh: 50ms}\nsecrets:\n"
        + secrets
        + "templates:\n  - {src: all.j2, dest: all.conf}\nfiles:\n"
        + files,
    )


class Soak:
    """The world around the watcher: faults, rotations, signals, and a reader of its output."""

    def __init__(self, bao: OpenBao, proxy: FaultProxy, out: Path, seed: int) -> None:
        self.bao, self.proxy, self.out = bao, proxy, out
        self.rng = random.Random(seed)
        self.versions = dict.fromkeys(range(SECRETS), 1)
        self.seen: dict[int, set[int]] = {i: {1} for i in range(SECRETS)}  # versions ever written
        self.denied: str | None = None
        self.partial: list[str] = []
        self.reads = 0
        self.stop = threading.Event()

    def rotate(self) -> None:
        i = self.rng.randrange(SECRETS)
        self.seen[i].add(self.versions[i] + 1)  # may be read as soon as it is written
        self.versions[i] += 1
        self.bao.client().secrets.kv.v2.create_or_update_secret(
            f"soak/{i}", {"password": value(i, self.versions[i])}
        )

    def permanent(self, method: str, path: str, headers: Any, body: bytes) -> Answer | None:
        if self.denied and self.denied in path:
            return Answer(
                403,
                b'{"errors":["1 error occurred:\\n\\t* permission denied\\n\\n"]}',
                {"Content-Type": "application/json"},
            )
        return None

    def faults(self) -> None:
        """Every 2-4 s: a new random plan (mostly random faults, sometimes down, sometimes a 403)."""
        while not self.stop.wait(self.rng.uniform(2, 4)):
            roll = self.rng.random()
            self.denied = None
            if roll < 0.1:
                self.proxy.down()
            elif roll < 0.2:
                self.denied = f"soak/{self.rng.randrange(SECRETS)}"
                self.proxy.set_plan(FaultPlan(permanent=self.permanent))
            else:
                plan = FaultPlan(rate=0.25, seed=self.rng.randrange(10**6), max_slow=1, slow_hold=3.0)
                plan.permanent = self.permanent
                self.proxy.set_plan(plan)
            if self.rng.random() < 0.5:
                self.rotate()

    def read(self) -> None:
        """Keep reading the rendered files: each must hold one complete version, always."""
        while not self.stop.is_set():
            for i in range(SECRETS):
                try:
                    text = (self.out / f"s{i}").read_text()
                except OSError:
                    continue  # between a rename and the next: never half a file, maybe none for a moment
                if not any(text == value(i, v) for v in self.seen[i]):
                    self.partial.append(f"s{i}: {len(text)} bytes that are no version")
            try:
                lines = (self.out / "all.conf").read_text().splitlines()
            except OSError:
                lines = [f"{i}={value(i, 1)}" for i in range(SECRETS)]
            if len(lines) != SECRETS:
                self.partial.append(f"all.conf: {len(lines)} lines")
            self.reads += 1
            time.sleep(0.005)


def sample(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "threads": int(fields["Threads"].strip()),
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def run_soak(bao: OpenBao, tmp_path: Path, procs: list[Proc], seconds: float, seed: int) -> dict[str, Any]:
    for i in range(SECRETS):
        bao.client().secrets.kv.v2.create_or_update_secret(f"soak/{i}", {"password": value(i, 1)})
    manifest(tmp_path)
    out = tmp_path / "out"
    with fault_proxy(bao.url) as proxy:
        env = clean_env(VAULT_ADDR=proxy.url, VAULT_TOKEN="root", HOME=str(tmp_path))
        args = ["--log-format", "json", "--log-level", "debug", "render", "--watch", "--timeout", "2"]
        p = start(procs, [*args, "-o", str(out), "--allow-disk"], env, tmp_path)
        wait_until(lambda: (out / ".initfetch-ready.json").exists(), what="the first render")
        soak = Soak(bao, proxy, out, seed)
        threads = [
            threading.Thread(target=soak.faults, daemon=True),
            threading.Thread(target=soak.read, daemon=True),
        ]
        for t in threads:
            t.start()
        samples = []
        end = time.monotonic() + seconds * soak.rng.uniform(0.8, 1.0)  # the stop comes at a random moment
        next_sample = time.monotonic() + min(10.0, seconds / 4)
        while time.monotonic() < end:
            time.sleep(soak.rng.uniform(2.0, 6.0) if seconds > 30 else soak.rng.uniform(0.5, 1.5))
            assert p.proc.poll() is None, p.log()
            p.proc.send_signal(signal.SIGHUP)
            if time.monotonic() >= next_sample:
                samples.append(sample(p.proc.pid))
                next_sample += seconds / 5
        requests = sum(proxy.paths[f"/v1/secret/data/soak/{i}"] for i in range(SECRETS))
        begun = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        code = p.proc.wait(30)
        took = time.monotonic() - begun
        soak.stop.set()
        for t in threads:
            t.join(10)
        p.reader.join(10)
    events = [json.loads(line) for line in p.log().splitlines() if line.startswith("{")]
    cycles = sum(1 for e in events if any(m in e.get("msg", "") for m in CYCLE_LINES))
    for_operators = [e for e in events if e["level"] != "debug" and e.get("event") != "resolve"]
    return {
        "code": code,
        "took": took,
        "samples": samples,
        "soak": soak,
        "requests": requests,
        "cycles": cycles,
        "lines": len(for_operators),
        "log": "\n".join(str(e.get("msg", "")) for e in for_operators),
    }


def test_soak_five_hundred_refresh_cycles_under_random_faults(
    openbao: OpenBao, tmp_path: Path, procs: list[Proc]
) -> None:
    result = run_soak(openbao, tmp_path, procs, seconds=100, seed=int(os.environ.get("SOAK_SEED", "2026")))
    soak, log = result["soak"], result["log"]
    report = {k: v for k, v in result.items() if k not in ("soak", "log")}
    report.update(reads=soak.reads, partial=soak.partial[:5], versions=sum(soak.versions.values()))
    (tmp_path / "soak.json").write_text(json.dumps(report, indent=1, default=str))
    assert result["code"] == 0, log[-3000:]
    assert result["took"] < STOP_WITHIN, report
    assert soak.partial == [], report
    assert result["cycles"] >= 500, report  # refreshes that ended, with or without a change, or failed
    first, *_, last = result["samples"]
    assert last["threads"] <= max(s["threads"] for s in result["samples"][:-1]) + 2, report
    assert last["fds"] <= first["fds"] + 4, report
    assert last["rss_kb"] <= first["rss_kb"] + 12 * 1024, report
    # An operator can read the log (debug aside): no line per secret per retry.
    assert result["lines"] < 300, log[-5000:]
    assert_no_canary(log)


def test_a_stop_at_a_random_moment_is_prompt_every_time(
    openbao: OpenBao, tmp_path: Path, procs: list[Proc]
) -> None:
    for run in range(4):
        result = run_soak(openbao, tmp_path / f"run{run}", procs, seconds=6, seed=run)
        assert result["code"] == 0, result["log"][-2000:]
        assert result["took"] < STOP_WITHIN, (run, result["took"])
        assert result["soak"].partial == []
