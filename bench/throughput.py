"""Throughput of `initfetch scan` and `exec --mask-output`: the `scan` and `mask` families.

No backend and no proxy: the values come from `env://` secrets, so what is timed is
the search itself, in whole processes (interpreter start included).

- scan-text / scan-base64: `initfetch scan` over SIZE MB (default 100) of files (50 of
  2 MB): English-like text, or random base64 (the worst case for the automaton: every
  position starts a partial match), against N secrets (default 50: some 250 forms),
  with a few values planted. MB/s = bytes scanned / wall time.
- mask-text / mask-base64: `initfetch exec --mask-output -- cat FILE` with FILE of
  SIZE MB and stdout to /dev/null, against 10 and against N of the secrets (the pass
  costs more per byte the more forms there are); beside it the same run
  with `--supervise` (no masking), so the cost of masking shows on its own.
  MB/s = bytes / wall time; "masking only" = bytes / (wall - unmasked wall).

Targets (issue 20): scan 100 MB "in a few seconds"; mask-output at least 100 MB/s.
Run alone: `bench/run.py --only scan,mask` (or `python bench/throughput.py`).
Results: bench/results/throughput.md and throughput.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FAMILIES = frozenset({"scan", "mask"})


def secrets(n: int) -> dict[str, str]:
    rng = random.Random(20)
    alphabet = string.ascii_letters + string.digits + "-_/+!"
    return {f"S{i}": "".join(rng.choices(alphabet, k=rng.randint(16, 40))) for i in range(n)}


def text_block(rng: random.Random, size: int, kind: str) -> bytes:
    if kind == "base64":
        return base64.encodebytes(rng.randbytes(size * 3 // 4))[:size]
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(3000)]
    out, total = [], 0
    while total < size:
        line = (" ".join(rng.choices(words, k=12)) + "\n").encode()
        out.append(line)
        total += len(line)
    return b"".join(out)[:size]


def make_tree(root: Path, size_mb: int, kind: str, values: dict[str, str]) -> int:
    """SIZE MB in 2 MB files, a value planted in every fifth file; returns the bytes."""
    rng = random.Random(kind)
    root.mkdir(parents=True)
    total, files = 0, max(1, size_mb // 2)
    for i in range(files):
        data = bytearray(text_block(rng, 2 * 1000 * 1000, kind))
        if i % 5 == 0:
            name = f"S{i % len(values)}"
            at = rng.randrange(len(data) - 100)
            data[at : at + 1] = b"\n" + values[name].encode() + b"\n"
        (root / f"f{i:03d}.txt").write_bytes(data)
        total += len(data)
    return total


def manifest(work: Path, values: dict[str, str]) -> tuple[Path, dict[str, str]]:
    lines = ["version: 1", "secrets:"] + [f"  {n}: env://{n}" for n in values]
    path = work / "initfetch.yaml"
    path.write_text("\n".join(lines) + "\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), **values}
    env["INITFETCH_LOG_LEVEL"] = "warning"
    if os.environ.get("PYTHONPATH"):  # standalone: `python -m initfetch` from this checkout
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return path, env


def timed(argv: list[str], env: dict[str, str], cwd: Path, stdout: Any) -> tuple[float, float, int]:
    """(wall s, CPU s of the children, exit code) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    rc = subprocess.run(argv, env=env, cwd=cwd, stdout=stdout, stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, rc


def run(
    initfetch: list[str], families: set[str], runs: int, size_mb: int, n: int, work: Path
) -> dict[str, Any]:
    values = secrets(n)
    results: dict[str, Any] = {"size_mb": size_mb, "secrets": n, "runs": runs, "scenarios": {}}
    for kind in ("text", "base64"):
        tree = work / f"tree-{kind}"
        size = make_tree(tree, size_mb, kind, values)
        if "scan" in families:
            path, env = manifest(work, values)
            walls, cpus, rcs = [], [], []
            for _ in range(runs):
                wall, cpu, rc = timed(
                    [*initfetch, "scan", "-m", str(path), str(tree)], env, work, subprocess.DEVNULL
                )
                walls.append(wall)
                cpus.append(cpu)
                rcs.append(rc)
            results["scenarios"][f"scan-{kind}-{n}"] = _figures(
                size, walls, cpus, ok=all(rc == 1 for rc in rcs)
            )
        if "mask" in families:
            big = work / f"out-{kind}.bin"
            with open(big, "wb") as f:
                for file in sorted(tree.iterdir()):
                    f.write(file.read_bytes())
            for count in sorted({min(10, n), n}):  # the cost grows with the number of forms
                path, env = manifest(work, dict(list(values.items())[:count]))
                results["scenarios"][f"mask-{kind}-{count}"] = mask_figures(
                    initfetch, env, work, path, big, runs
                )
            big.unlink()
    return results


def mask_figures(
    initfetch: list[str], env: dict[str, str], work: Path, path: Path, big: Path, runs: int
) -> dict[str, Any]:
    masked: list[float] = []
    plain: list[float] = []
    cpus, rcs = [], []
    with open(os.devnull, "wb") as null:
        for _ in range(runs):
            for flag, sink in (("--mask-output", masked), ("--supervise", plain)):
                argv = [*initfetch, "exec", "-m", str(path), flag, "--", "cat", str(big)]
                wall, cpu, rc = timed(argv, env, work, null)
                sink.append(wall)
                if flag == "--mask-output":
                    cpus.append(cpu)
                    rcs.append(rc)
    fig = _figures(big.stat().st_size, masked, cpus, ok=all(rc == 0 for rc in rcs))
    fig["unmasked_wall"] = statistics.median(plain)
    extra = statistics.median(masked) - statistics.median(plain)
    fig["masking_only_mb_s"] = round(big.stat().st_size / 1e6 / extra, 1) if extra > 0 else None
    return fig


def _figures(size: int, walls: list[float], cpus: list[float], ok: bool) -> dict[str, Any]:
    wall = statistics.median(walls)
    return {
        "bytes": size,
        "wall": {"median": wall, "min": min(walls), "max": max(walls)},
        "cpu": statistics.median(cpus),
        "mb_s": round(size / 1e6 / wall, 1),
        "ok": ok,
    }


def markdown(results: dict[str, Any], source: str) -> str:
    lines = [
        "# Throughput: scan and exec --mask-output",
        "",
        f"initfetch from {source}; {results['size_mb']} MB per scenario; NAME-N: N secrets (env://, 16 to 40 "
        f"characters; about 3.4 forms each); median of {results['runs']} whole-process runs.",
        "",
        "| scenario | wall s (min-max) | CPU s | MB/s | masking only, MB/s | target | met | runs ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, fig in results["scenarios"].items():
        w = fig["wall"]
        only = fig.get("masking_only_mb_s")
        if name.startswith("scan"):
            target, met = "100 MB in 5 s or less", 100 / fig["mb_s"] <= 5
        else:
            target, met = "masking >= 100 MB/s", only is None or only >= 100
        wall = f"{w['median']:.2f} ({w['min']:.2f}-{w['max']:.2f})"
        lines.append(
            f"| {name} | {wall} | {fig['cpu']:.2f} | {fig['mb_s']} | {'' if only is None else only} "
            f"| {target} | {'yes' if met else 'no'} | {'yes' if fig['ok'] else 'NO'} |"
        )
    lines += [
        "",
        "scan-*: exit 1 expected (values are planted). mask-*: `cat` of the file through "
        "`exec --mask-output`, stdout to /dev/null; the unmasked run (`--supervise`) is in throughput.json.",
    ]
    return "\n".join(lines) + "\n"


def main(
    initfetch: list[str] | None = None,
    families: set[str] | None = None,
    runs: int = 3,
    out: Path = RESULTS,
    source: str = "the working tree",
) -> dict[str, Any]:
    if initfetch is None:
        p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        p.add_argument("--only", default="scan,mask")
        p.add_argument("--runs", type=int, default=3)
        p.add_argument("--size-mb", type=int, default=100)
        p.add_argument("--secrets", type=int, default=50)
        p.add_argument("--out", type=Path, default=RESULTS)
        a = p.parse_args()
        out = a.out
        initfetch, families, runs = [sys.executable, "-m", "initfetch"], set(a.only.split(",")), a.runs
        size_mb, n = a.size_mb, a.secrets
    else:
        size_mb, n = 100, 50
    with tempfile.TemporaryDirectory(prefix="initfetch-throughput-") as tmp:
        env_path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + env_path if env_path else "")
        results = run(initfetch, families or set(FAMILIES), runs, size_mb, n, Path(tmp))
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(results, indent=1) + "\n")
    md = markdown(results, source)
    (out / "throughput.md").write_text(md)
    print(md)
    return results


if __name__ == "__main__":
    main()
