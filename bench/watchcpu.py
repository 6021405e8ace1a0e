"""The watcher's steady state (family `watch`): what a long-running `render --watch` costs.

- busy: N Vault secrets (one template), `refresh: 1s`, nothing changing: the
  process's CPU time (user + system, /proc/PID/stat) over SECONDS after the first
  render, as a fraction of one core. Target (issue 22): under 0.15.
- idle: the same manifest at `refresh: 5m`: CPU over SECONDS (target under 0.1% of a
  core) and how often its threads wake (voluntary context switches per second,
  summed over /proc/PID/task/*/status; target: no thread more than once a second).
- idle + --listen: the same, serving /healthz, /readyz and /metrics (nobody asking).

The watcher reads through the bench's delay proxy like every other contender.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.workloads import Workload, initfetch_files
from tests.backends.local_http import free_port

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _switches(pid: int) -> dict[str, int]:
    """Voluntary context switches of each thread (a wake-up after a wait)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    out[task.name] = int(line.split()[1])
        except OSError:
            continue
    return out


def _manifest(w: Workload, d: Path, refresh: str) -> Path:
    path = initfetch_files(w, d, None)
    doc = json.loads(path.read_text())
    doc["providers"] = {"vault": {"type": "vault", "refresh": refresh}}
    path.write_text(json.dumps(doc, indent=1))
    return path


def one(
    initfetch: str,
    env: dict[str, str],
    w: Workload,
    d: Path,
    refresh: str,
    seconds: float,
    listen: bool = False,
) -> dict[str, Any]:
    manifest = _manifest(w, d, refresh)
    out = d / "out"
    log = (d / "watch.log").open("w")
    probes = ["--listen", f"127.0.0.1:{free_port()}"] if listen else []
    p = subprocess.Popen(
        [initfetch, "render", "--watch", "-m", str(manifest), "-o", str(out), "--allow-disk", *probes],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        end = time.monotonic() + 60
        while not (out / ".initfetch-ready.json").exists():
            if p.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the watcher did not render: {(d / 'watch.log').read_text()[-1500:]}")
            time.sleep(0.05)
        time.sleep(2.0)  # past the first render and its threads
        cpu0, sw0, t0 = _cpu(p.pid), _switches(p.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, sw1, t1 = _cpu(p.pid), _switches(p.pid), time.monotonic()
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
    span = t1 - t0
    per_thread = {t: (sw1[t] - sw0.get(t, 0)) / span for t in sw1}
    return {
        "refresh": refresh + (" + --listen" if listen else ""),
        "secrets": w.n,
        "seconds": round(span, 1),
        "cpu_s": round(cpu1 - cpu0, 3),
        "core_fraction": round((cpu1 - cpu0) / span, 4),
        "threads": len(sw1),
        "wakeups_per_s": round(sum(per_thread.values()), 2),
        "max_thread_wakeups_per_s": round(max(per_thread.values(), default=0.0), 2),
        "exit": p.returncode,
    }


def run(initfetch: str, env: dict[str, str], w: Workload, work: Path, seconds: float) -> dict[str, Any]:
    busy = one(initfetch, env, w, work / "watch-busy", "1s", seconds)
    idle = one(initfetch, env, w, work / "watch-idle", "5m", seconds)
    listening = one(initfetch, env, w, work / "watch-idle-listen", "5m", seconds, listen=True)
    return {"busy": busy, "idle": idle, "idle_listen": listening}


def markdown(data: dict[str, Any]) -> list[str]:
    b, i = data["busy"], data["idle"]
    return [
        "",
        "## Watch mode, steady state",
        "",
        f"`render --watch` of {b['secrets']} Vault secrets (one template) through the proxy, nothing "
        f"changing; process CPU (/proc/PID/stat) over {b['seconds']:g} s after the first render.",
        "",
        "| refresh | CPU s | of one core | threads | wake-ups/s (all threads) | busiest thread, wake-ups/s |",
        "|---|---|---|---|---|---|",
        *(
            f"| {x['refresh']} | {x['cpu_s']:.2f} | {100 * x['core_fraction']:.2f}% | {x['threads']} | "
            f"{x['wakeups_per_s']:g} | {x['max_thread_wakeups_per_s']:g} |"
            for x in (b, i, *([data["idle_listen"]] if "idle_listen" in data else []))
        ),
    ]


def targets(data: dict[str, Any]) -> list[tuple[str, str, bool]]:
    b, i = data["busy"], data["idle"]
    return [
        (
            f"watch: {b['secrets']} secrets refreshed every second under 0.15 of a core",
            f"{b['core_fraction']:.3f}",
            b["core_fraction"] < 0.15,
        ),
        (
            "watch: idle watcher (refresh 5m) under 0.1% CPU",
            f"{100 * i['core_fraction']:.3f}%",
            i["core_fraction"] < 0.001,
        ),
        (
            "watch: idle watcher, no thread wakes more than once a second",
            f"{i['max_thread_wakeups_per_s']:g}/s",
            i["max_thread_wakeups_per_s"] <= 1.0,
        ),
        *(
            [
                (
                    "watch: idle watcher with --listen, no thread wakes more than once a second",
                    f"{data['idle_listen']['max_thread_wakeups_per_s']:g}/s",
                    data["idle_listen"]["max_thread_wakeups_per_s"] <= 1.0,
                )
            ]
            if "idle_listen" in data
            else []
        ),
    ]
