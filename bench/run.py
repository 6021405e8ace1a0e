"""`make bench`: initfetch against OpenBao Agent and the sequential SDK script, whole processes.

Every backend is real or faithful and sits behind bench/latency_proxy.py, which
adds DELAY ms (default 20) to every request and counts requests per backend.
Contenders run interleaved, run by run, in rotating order; each figure is the
median of RUNS whole-process runs (interpreter start included) with its min-max.

Scenarios:
- startup: `initfetch --version` and `check` of the starter `initfetch init` writes,
  beside the bare interpreter and the agent binary's `version` (15 runs).
- vault-N (N = 20, 100, 300, 1000): one template over N KV v2 secrets of two
  keys each, one file. initfetch, `bao agent` (token_file auto-auth,
  exit_after_auth, one template stanza: the same file) and the sequential hvac
  script.
- mixed-N (N = 60, 300): a third each on Vault, AWS Secrets Manager and Azure
  Key Vault. initfetch and the sequential hvac/boto3/SecretClient script.
- large: 40 secrets of 32 KB (certificate bundles) on Vault: all three.
- fleet: P (50) initfetch processes started at once against one OpenBao with a
  rate-limit quota; time to the last one, 429s, failures.
- imports: which SDKs a Vault-only and a file-only run import.

For each: wall time, requests per backend, peak RSS, and the floor: interpreter
+ the imports the run needs (yaml, jinja2, the SDKs of its backends) + the
fewest round trips initfetch's concurrency allows, each costing DELAY.

Results: bench/results/results.md, results.json and results.png.
`--quick` (small N, 3 runs) is for development.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report, throughput, watchcpu  # noqa: E402
from bench.backends import ROUTE_BACKEND, Backends, agent_binary  # noqa: E402
from bench.measure import Launcher, Run, summary  # noqa: E402
from bench.workloads import (  # noqa: E402
    Workload,
    agent_files,
    initfetch_files,
    large_workload,
    mixed_workload,
    sequential_spec,
    vault_workload,
)

PY = str(Path(sys.executable))
VENV_BIN = Path(sys.executable).parent
INITFETCH = str(VENV_BIN / "initfetch")  # replaced by a HEAD snapshot's entry point unless --source worktree
SOURCE_PREFIX = ""  # Python run first by the concurrency probe, so it sees the same initfetch
BASELINE: str | None = None  # --baseline REF: that commit's entry point, a contender beside initfetch
RESULTS = REPO / "bench" / "results"
AWS_BATCH = 20  # BatchGetSecretValue takes up to 20 secret ids per call
FLOOR = "floor-imports"  # the pseudo-contender that times the imports a run needs

IMPORT_SETS = {
    "interpreter": [],
    "vault": ["yaml", "jinja2", "http.client"],  # a token run reads over http.client, without hvac
    "mixed": ["yaml", "jinja2", "hvac", "boto3", "azure.identity", "azure.keyvault.secrets"],
}


@dataclass
class Contender:
    name: str
    argv: list[str]
    out: Path | None  # the file it must write (None: nothing to check)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Scenario:
    id: str
    family: str
    n: int
    workload: Workload | None
    contenders: list[Contender]
    import_set: str = ""
    floor_rtts: int = 0
    warmup: int = 0
    runs: dict[str, list[Run]] = field(default_factory=dict)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- which initfetch ---------------------------------------------------------------------------


def snapshot(ref: str, dest: Path) -> tuple[str, str]:
    """Extract initfetch/ at `ref` (git archive) and write an entry point that imports it.

    The working tree is edited while the bench runs; a snapshot measures one commit.
    The venv's editable install would still win over PYTHONPATH (its finder is on
    sys.meta_path), so the entry point drops that finder and puts the snapshot first.
    Returns (entry point path, Python prefix that does the same for `python -c`).
    """
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "initfetch"], cwd=REPO, capture_output=True, check=True)
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest)  # our own git archive (3.11.2 has no filter=)
    return entry_point(dest, dest)


def entry_point(source: Path, dest: Path) -> tuple[str, str]:
    """An entry point in `dest` that imports initfetch from `source`, ahead of the venv's
    editable install (whose finder would otherwise answer for the checkout it was made from)."""
    prefix = (
        f"import sys; sys.path.insert(0, {str(source)!r}); "
        "sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, '__name__', '') != '_EditableFinder']\n"
    )
    entry = dest / "initfetch-entry"
    # What the console script runs: cli.run() where the commit has it (it exits without the
    # interpreter's teardown), sys.exit(main()) before.
    entry.write_text(
        f"#!{PY}\n{prefix}from initfetch import cli\n\n"
        "if __name__ == '__main__':\n"
        "    cli.run() if hasattr(cli, 'run') else sys.exit(cli.main())\n"
    )
    entry.chmod(0o755)
    return str(entry), prefix


# --- facts about initfetch at HEAD -----------------------------------------------------------


def concurrency_info(env: dict[str, str]) -> dict[str, int]:
    """initfetch's concurrency limits: the CLI default and each provider's cap."""
    probe = r"""
import json
out = {}
def cap(type_name):
    # Through the registry, so any layout of the package answers.
    try:
        from initfetch.providers import provider_class
        v = getattr(provider_class(type_name), "default_concurrency", None)
        return v if isinstance(v, int) else None
    except Exception:
        return None
out["vault"] = cap("vault")
out["aws"] = cap("aws-secretsmanager")
out["azkv"] = cap("azure-keyvault")
print(json.dumps(out))
"""
    r = subprocess.run([PY, "-c", SOURCE_PREFIX + probe], env=env, capture_output=True, text=True, timeout=60)
    info = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else {}
    h = subprocess.run([INITFETCH, "render", "--help"], env=env, capture_output=True, text=True, timeout=60)
    m = re.search(r"INITFETCH_CONCURRENCY,\s*(\d+)", h.stdout)
    overall = int(m.group(1)) if m else 16
    out = {"overall": overall}
    for k in ("vault", "aws", "azkv"):
        v = info.get(k)
        out[k] = min(overall, v) if isinstance(v, int) and v > 0 else overall
    return out


def floor_rtts(w: Workload, conc: dict[str, int]) -> int:
    """The fewest sequential round trips initfetch's concurrency allows for this workload.

    Vault: one mount lookup, then the reads. Secrets Manager: BatchGetSecretValue,
    20 per call. Key Vault: the 401 challenge and the token, then the reads. The
    backends run in parallel, all under the overall limit.
    """
    counts = {b: sum(1 for i in w.items if i.backend == b) for b in ("vault", "awssm", "azkv")}
    rounds = []
    requests = 0
    if counts["vault"]:
        rounds.append(1 + math.ceil(counts["vault"] / conc["vault"]))
        requests += counts["vault"]
    if counts["awssm"]:
        calls = math.ceil(counts["awssm"] / AWS_BATCH)
        rounds.append(math.ceil(calls / conc["aws"]))
        requests += calls
    if counts["azkv"]:
        rounds.append(2 + math.ceil(counts["azkv"] / conc["azkv"]))
        requests += counts["azkv"]
    return max([*rounds, math.ceil(requests / conc["overall"]) + 1])


# --- running ---------------------------------------------------------------------------------


def check_output(c: Contender, expected: str | None) -> str:
    if c.out is None or expected is None:
        return ""
    try:
        got = c.out.read_text()
    except OSError:
        return "no output file"
    if got == expected:
        return ""
    if got.rstrip("\n") == expected.rstrip("\n"):
        return ""  # a trailing newline is not a difference worth failing a run for
    return f"output differs ({len(got)} bytes, expected {len(expected)})"


def tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def attach_stats(run: Run, stats: dict[str, Any]) -> None:
    for route, st in stats.items():
        backend = ROUTE_BACKEND.get(route, route)
        if st["requests"]:
            run.requests[backend] = run.requests.get(backend, 0) + st["requests"]
            run.max_connections[backend] = max(run.max_connections.get(backend, 0), st["max_active"])
        for status, count in st["statuses"].items():
            run.statuses[status] = run.statuses.get(status, 0) + count
        for path, count in st["paths"].items():
            key = f"{backend} {path}"
            run.paths[key] = run.paths.get(key, 0) + count


def run_scenario(
    sc: Scenario, b: Backends, launcher: Launcher, env: dict[str, str], runs: int, logs: Path
) -> None:
    expected = sc.workload.expected() if sc.workload else None
    sc.runs = {c.name: [] for c in sc.contenders}
    total = sc.warmup + runs
    for r in range(total):
        k = r % len(sc.contenders)
        order = sc.contenders[k:] + sc.contenders[:k]  # rotate, so no one always goes first
        for c in order:
            if c.out is not None:
                c.out.unlink(missing_ok=True)
            b.proxy.stats(reset=True)
            cpu0 = b.server_cpu()
            logfile = logs / f"{sc.id}-{c.name}-{r}.log"
            run = launcher.run(c.argv, {**env, **c.env}, logfile, timeout=900)
            cpu1 = b.server_cpu()
            attach_stats(run, b.proxy.stats(reset=True)["routes"])
            run.server_cpu = {k: round(cpu1[k] - cpu0[k], 3) for k in cpu1 if k in cpu0}
            problem = check_output(c, expected) if run.rc == 0 else f"exit {run.rc}"
            if problem:
                run.ok = False
                run.note = (run.note + "; " if run.note else "") + problem
                print(f"  ! {sc.id} {c.name} run {r}: {problem}\n{tail(logfile)}", file=sys.stderr)
            if r >= sc.warmup:
                sc.runs[c.name].append(run)
    parts = []
    for c in sc.contenders:
        s = summary([x.wall for x in sc.runs[c.name]])
        parts.append(f"{c.name} {s['median']:.3f}s")
    log(f"{sc.id}: " + ", ".join(parts))


def imports_contender(import_set: str) -> Contender:
    """`python -c 'import ...'` of the modules a run needs: the floor's start-up part, run with the others."""
    code = "; ".join(f"import {m}" for m in IMPORT_SETS[import_set]) or "pass"
    return Contender(FLOOR, [PY, "-c", code], None)


def contenders_for(
    w: Workload,
    b: Backends,
    work: Path,
    with_agent: bool,
    import_set: str,
    with_sequential: bool = True,
    with_expert: bool = False,
) -> list[Contender]:
    d = work / w.name
    manifest = initfetch_files(w, d / "initfetch", b.kv_options)
    out = [
        Contender(
            "initfetch",
            [INITFETCH, "render", "-m", str(manifest), "-o", str(d / "out-initfetch"), "--allow-disk"],
            d / "out-initfetch" / "out.txt",
        )
    ]
    if BASELINE is not None:
        out.append(
            Contender(
                "baseline",
                [BASELINE, "render", "-m", str(manifest), "-o", str(d / "out-baseline"), "--allow-disk"],
                d / "out-baseline" / "out.txt",
            )
        )
    if with_agent:
        token = d / "agent" / "token"
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text(b.vault.root_token)
        dest = d / "out-agent.txt"
        cfg = agent_files(w, d / "agent", b.proxy.url("vault"), token, dest)
        out.append(Contender("agent", [agent_binary(), "agent", f"-config={cfg}"], dest))
    if with_sequential:
        spec = sequential_spec(w, d / "sequential.json", b.kv_options)
        dest = d / "out-sequential.txt"
        out.append(
            Contender("sequential", [PY, str(REPO / "bench" / "sequential.py"), str(spec), str(dest)], dest)
        )
    if with_expert:
        spec = sequential_spec(w, d / "expert.json", b.kv_options)
        dest = d / "out-expert.txt"
        out.append(Contender("expert", [PY, str(REPO / "bench" / "expert.py"), str(spec), str(dest)], dest))
    out.append(imports_contender(import_set))
    return out


def startup_scenarios(work: Path, env: dict[str, str]) -> list[Scenario]:
    """`initfetch --version`, and `check` of the starter `initfetch init` writes (a comment, a
    `| tojson` template and an `env:` value): whole processes, no backend. Beside them the bare
    interpreter (the floor), with --baseline the same commands at that commit, and for
    --version the agent binary's `version`."""
    d = work / "startup"
    d.mkdir()
    subprocess.run([INITFETCH, "init"], cwd=d, env=env, check=True, capture_output=True)
    manifest = str(d / "initfetch.yaml")
    entries = [("initfetch", INITFETCH)] + ([("baseline", BASELINE)] if BASELINE else [])
    version = [Contender(name, [entry, "--version"], None) for name, entry in entries]
    version.append(Contender("agent", [agent_binary(), "version"], None))
    check = [Contender(name, [entry, "check", "-m", manifest], None) for name, entry in entries]
    floor = imports_contender("interpreter")
    return [
        Scenario(f"startup-{what}", "startup", 0, None, [*cs, floor], "interpreter", 0, warmup=1)
        for what, cs in (("version", version), ("check", check))
    ]


def import_floor_scenario(runs: int) -> Scenario:
    cs = [
        Contender(f"imports-{name}", [PY, "-c", "; ".join(f"import {m}" for m in mods) or "pass"], None)
        for name, mods in IMPORT_SETS.items()
    ]
    return Scenario("floor-imports", "floor", 0, None, cs, warmup=1)


# --- fleet -------------------------------------------------------------------------------------


def run_fleet(
    b: Backends,
    launcher: Launcher,
    env: dict[str, str],
    work: Path,
    logs: Path,
    procs: int,
    n: int,
    rate: float,
    runs: int,
    deadline: float,
    with_agent: bool = False,
    warmup: int = 1,
) -> dict[str, Any]:
    """P processes at once against the rate-limited OpenBao, per contender, interleaved run by run."""
    w = vault_workload(n)
    b.seed(w, server="fleet")
    b.fleet_quota(rate)
    d = work / "fleet"
    manifest = initfetch_files(w, d / "initfetch", None)
    fenv = {**env, "VAULT_ADDR": b.proxy.url("fleet"), "VAULT_TOKEN": b.fleet.root_token}
    expected = w.expected()
    names = ["initfetch", "agent"] if with_agent else ["initfetch"]
    commands: dict[str, list[tuple[list[str], Path]]] = {"initfetch": []}
    for i in range(procs):
        out = d / f"initfetch-{i}"
        argv = [
            INITFETCH,
            "render",
            "-m",
            str(manifest),
            "-o",
            str(out),
            "--allow-disk",
            "--timeout",
            str(deadline),
        ]
        commands["initfetch"].append((argv, out / "out.txt"))
    if with_agent:
        token = d / "agent-token"
        token.write_text(b.fleet.root_token)
        commands["agent"] = []
        for i in range(procs):
            dest = d / f"agent-{i}" / "out.txt"
            cfg = agent_files(w, d / f"agent-{i}", b.proxy.url("fleet"), token, dest)
            commands["agent"].append(([agent_binary(), "agent", f"-config={cfg}"], dest))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(warmup + runs):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            time.sleep(2.0)  # let the quota's bucket refill between runs
            for _, out in commands[name]:
                out.unlink(missing_ok=True)
            b.proxy.stats(reset=True)
            # The agent has no overall deadline of its own: the launcher kills it at the deadline.
            limit = deadline + 60 if name == "initfetch" else deadline
            ids = [
                launcher.start(argv, fenv, logs / f"fleet-{name}-{r}-{i}.log", timeout=limit)
                for i, (argv, _) in enumerate(commands[name])
            ]
            done = [launcher.wait(i) for i in ids]
            t0 = min(x.start for x in done)
            ends = [x.end - t0 for x in done]
            stats = b.proxy.stats(reset=True)["routes"]["fleet"]
            failed = 0
            for i, (run, (_, out)) in enumerate(zip(done, commands[name], strict=True)):
                good = run.rc == 0 and out.exists() and out.read_text().rstrip("\n") == expected.rstrip("\n")
                if not good:
                    failed += 1
                    if failed <= 2:
                        text = tail(logs / f"fleet-{name}-{r}-{i}.log")
                        print(
                            f"  ! fleet {name} run {r} process {i}: exit {run.rc} {run.note}\n{text}",
                            file=sys.stderr,
                        )
            rec = {
                "last_s": max(ends),
                "median_exit_s": sorted(ends)[len(ends) // 2],
                "spawn_s": max(x.start for x in done) - t0,
                "failed": failed,
                "requests": stats["requests"],
                "429s": stats["statuses"].get("429", 0),
                "statuses": stats["statuses"],
                "max_connections": stats["max_active"],
                "peak_rss_mb": max(x.rss_mb for x in done),
                "cpu_s": sum(x.cpu for x in done),
            }
            if r >= warmup:
                results[name].append(rec)
            log(
                f"fleet {name} run {r}{' (warm-up)' if r < warmup else ''}: last {rec['last_s']:.2f}s, "
                f"{rec['429s']} x 429, {rec['requests']} requests, {failed} failed"
            )
    return {
        "procs": procs,
        "n": n,
        "rate": rate,
        "deadline_s": deadline,
        "workload": w.name,
        "contenders": results,
    }


# --- imports -----------------------------------------------------------------------------------

WATCHED = ("hvac", "requests", "boto3", "botocore", "azure", "msal", "jinja2", "yaml")


def imports_of(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    r = subprocess.run([PY, "-X", "importtime", *argv], env=env, capture_output=True, text=True, timeout=120)
    mods = set()
    top: dict[str, int] = {}  # top-level package -> cumulative microseconds of its first import
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, raw = line.split("|", 2)
            name = raw.strip()
            mods.add(name.split(".")[0])
            if raw.startswith(" ") and not raw.startswith("  ") and cumulative.strip().isdigit():
                top[name] = int(cumulative)  # not indented: imported by the program itself
    slowest = sorted(top.items(), key=lambda kv: -kv[1])[:10]
    return {
        "rc": r.returncode,
        "imported": sorted(m for m in WATCHED if m in mods),
        "slowest_top_level_ms": {k: round(v / 1000, 1) for k, v in slowest},
    }


def import_checks(b: Backends, env: dict[str, str], work: Path) -> dict[str, Any]:
    d = work / "imports"
    d.mkdir(parents=True, exist_ok=True)
    w = vault_workload(20)
    b.seed(w)
    manifest = initfetch_files(w, d / "vault", None)
    vault_only = imports_of(
        [INITFETCH, "render", "-m", str(manifest), "-o", str(d / "out-vault"), "--allow-disk"], env
    )
    (d / "file").mkdir(exist_ok=True)
    (d / "file" / "value").write_text("v")
    (d / "file" / "initfetch.yaml").write_text(
        json.dumps(
            {
                "version": 1,
                "secrets": {"a": f"file://{d / 'file' / 'value'}"},
                "files": [{"secret": "a", "dest": "a"}],
            }
        )
    )
    file_only = imports_of(
        [
            INITFETCH,
            "render",
            "-m",
            str(d / "file" / "initfetch.yaml"),
            "-o",
            str(d / "out-file"),
            "--allow-disk",
        ],
        env,
    )
    return {"vault_only": vault_only, "file_only_no_templates": file_only}


# --- main ----------------------------------------------------------------------------------------


def git(*args: str) -> str:
    r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return r.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description="initfetch benchmark (issue 9): see the module docstring")
    p.add_argument("--quick", action="store_true", help="small N and 3 runs, for development")
    p.add_argument("--runs", type=int, help="whole-process runs per contender [5; --quick 3]")
    p.add_argument("--delay-ms", type=float, default=20.0, help="added to every request [20]")
    p.add_argument(
        "--connect-delay-ms",
        type=float,
        default=0.0,
        help="also added once per new connection, for the TCP/TLS handshakes [0: connections are free]",
    )
    p.add_argument("--vault-n", type=lambda s: [int(x) for x in s.split(",")], help="[5,20,100,300,1000]")
    p.add_argument("--mixed-n", type=lambda s: [int(x) for x in s.split(",")], help="[60,300]")
    p.add_argument("--large", default="40x32768", help="COUNTxBYTES [40x32768]")
    p.add_argument("--fleet-procs", type=int, help="[50; --quick 10]")
    p.add_argument("--fleet-n", type=int, default=20, help="secrets per fleet process [20]")
    p.add_argument("--fleet-rate", type=float, default=100.0, help="quota, requests per second [100]")
    p.add_argument("--fleet-deadline", type=float, default=60.0, help="each process's --timeout [60]")
    p.add_argument(
        "--no-fleet-agent",
        action="store_true",
        help="fleet: skip the P OpenBao Agents started for comparison",
    )
    p.add_argument(
        "--only",
        default="startup,vault,mixed,large,fleet,imports,watch,scan,mask",
        help="families to run [startup,vault,mixed,large,fleet,imports,watch,scan,mask]; scan and mask: "
        "bench/throughput.py, results in throughput.md",
    )
    p.add_argument("--watch-n", type=int, default=300, help="secrets of the watch family [300]")
    p.add_argument("--watch-seconds", type=float, help="seconds each watcher is measured [60; --quick 15]")
    p.add_argument("--no-sequential-vault", action="store_true", help="skip the sequential script on vault-N")
    p.add_argument(
        "--source",
        default="HEAD",
        help="the initfetch to measure: a git ref (snapshot by git archive) or 'worktree' [HEAD]",
    )
    p.add_argument(
        "--baseline",
        help="a git ref measured beside --source in the startup, vault and mixed scenarios, as contender "
        "'baseline' (before/after in one run)",
    )
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory [bench/results]")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    a = p.parse_args()

    runs = a.runs or (3 if a.quick else 5)
    vault_ns = a.vault_n or ([5, 20] if a.quick else [5, 20, 100, 300, 1000])
    mixed_ns = a.mixed_n or ([15, 30] if a.quick else [60, 300])
    count, size = (int(x) for x in a.large.lower().split("x"))
    fleet_procs = a.fleet_procs or (10 if a.quick else 50)
    only = set(a.only.split(","))
    t_start = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="initfetch-bench-"))
    logs = work / "logs"
    logs.mkdir()
    log(f"work directory {work}; {runs} runs; delay {a.delay_ms:g} ms per request")
    global INITFETCH, SOURCE_PREFIX, BASELINE
    if a.source == "worktree":
        commit = git("rev-parse", "--short", "HEAD")
        source = f"the working tree (HEAD {commit})"
        (work / "src").mkdir()
        INITFETCH, SOURCE_PREFIX = entry_point(REPO, work / "src")
    else:
        commit = git("rev-parse", "--short", a.source)
        INITFETCH, SOURCE_PREFIX = snapshot(commit, work / "src")
        source = f"{a.source} = {commit} (git archive snapshot of initfetch/)"
    if a.baseline:
        base_commit = git("rev-parse", "--short", a.baseline)
        BASELINE, _ = snapshot(base_commit, work / "baseline")
        source += f"; baseline {a.baseline} = {base_commit}"
    log(f"measuring initfetch from {source}")
    if only & throughput.FAMILIES:  # no backend: the values are env:// secrets
        log(f"throughput: {', '.join(sorted(only & throughput.FAMILIES))}")
        throughput.main([INITFETCH], only & throughput.FAMILIES, runs, a.out, source)
        if only <= throughput.FAMILIES:
            shutil.rmtree(work, ignore_errors=True)
            return
    errors: list[str] = []
    b = Backends.start(work / "backends", a.delay_ms, a.connect_delay_ms)
    launcher = Launcher()
    try:
        home = work / "home"
        home.mkdir()
        env = {**b.env(home), "INITFETCH_LOG_LEVEL": "warning"}
        conc = concurrency_info(env)
        log(f"initfetch concurrency (for the floor): {conc}")

        scenarios: list[Scenario] = []
        fl = import_floor_scenario(runs)
        scenarios.append(fl)
        if "startup" in only:
            scenarios += startup_scenarios(work, env)
        if "vault" in only:
            for i, n in enumerate(vault_ns):
                w = vault_workload(n)
                cs = contenders_for(
                    w, b, work, with_agent=True, import_set="vault", with_sequential=not a.no_sequential_vault
                )
                scenarios.append(
                    Scenario(
                        f"vault-{n}",
                        "vault",
                        n,
                        w,
                        cs,
                        "vault",
                        floor_rtts(w, conc),
                        warmup=1 if i == 0 else 0,
                    )
                )
        if "mixed" in only:
            for i, n in enumerate(mixed_ns):
                w = mixed_workload(n)
                cs = contenders_for(w, b, work, with_agent=False, import_set="mixed", with_expert=True)
                scenarios.append(
                    Scenario(
                        f"mixed-{n}",
                        "mixed",
                        n,
                        w,
                        cs,
                        "mixed",
                        floor_rtts(w, conc),
                        warmup=1 if i == 0 else 0,
                    )
                )
        if "large" in only:
            w = large_workload(count, size)
            cs = contenders_for(w, b, work, with_agent=True, import_set="vault")
            scenarios.append(Scenario(w.name, "large", count, w, cs, "vault", floor_rtts(w, conc), warmup=1))

        for sc in scenarios:
            if sc.workload is not None:
                log(f"seeding {sc.id}")
                b.seed(sc.workload)
        for sc in scenarios:
            log(f"running {sc.id} ({', '.join(c.name for c in sc.contenders)})")
            try:
                # start-up figures are a few ms apart: more runs for their medians
                n_runs = max(runs, 15) if sc.family == "startup" else runs
                run_scenario(sc, b, launcher, env, n_runs, logs)
            except Exception:  # keep what was measured; the report says what broke
                errors.append(f"{sc.id}: {traceback.format_exc()}")
                log(f"{sc.id} broke:\n{traceback.format_exc()}")

        fleet = None
        if "fleet" in only:
            log(f"fleet: {fleet_procs} processes x {a.fleet_n} secrets, quota {a.fleet_rate:g}/s")
            try:
                fleet = run_fleet(
                    b,
                    launcher,
                    env,
                    work,
                    logs,
                    fleet_procs,
                    a.fleet_n,
                    a.fleet_rate,
                    runs,
                    a.fleet_deadline,
                    with_agent=not a.no_fleet_agent,
                    warmup=0 if len(scenarios) > 1 else 1,  # the scenarios before warmed everything up
                )
            except Exception:
                errors.append(f"fleet: {traceback.format_exc()}")
                log(f"fleet broke:\n{traceback.format_exc()}")
        watch = None
        if "watch" in only:
            w = vault_workload(a.watch_n)
            b.seed(w)
            seconds = a.watch_seconds or (15.0 if a.quick else 60.0)
            log(f"watch: {a.watch_n} secrets, refresh 1s then 5m, {seconds:g} s each")
            try:
                watch = watchcpu.run(INITFETCH, env, w, work, seconds)
                log(f"watch: {watch}")
            except Exception:
                errors.append(f"watch: {traceback.format_exc()}")
                log(f"watch broke:\n{traceback.format_exc()}")
        imports = None
        if "imports" in only:
            try:
                imports = import_checks(b, env, work)
            except Exception:
                errors.append(f"imports: {traceback.format_exc()}")
                log(f"imports broke:\n{traceback.format_exc()}")
    finally:
        launcher.stop()
        b.stop()

    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "source": source,
        "dirty": a.source == "worktree" and bool(git("status", "--porcelain", "--", "initfetch")),
        "delay_ms": a.delay_ms,
        "connect_delay_ms": a.connect_delay_ms,
        "runs": runs,
        "quick": a.quick,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "agent": subprocess.run([agent_binary(), "version"], capture_output=True, text=True).stdout.strip(),
        "concurrency": conc,
        "errors": errors,
        "duration_s": round(time.perf_counter() - t_start, 1),
    }
    data = report.build(meta, scenarios, fleet, imports, watch)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    md = report.markdown(data)
    (a.out / "results.md").write_text(md)
    try:
        report.plot(data, a.out / "results.png")
    except ImportError:
        log("matplotlib is not installed (pip install -r requirements-bench.txt): no plot")
    print()
    print(md)
    log(f"results in {a.out} ({meta['duration_s']} s)")
    if a.keep:
        log(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
