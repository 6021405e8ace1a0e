"""Benchmark: initfetch against baselines, side by side in one run, as ratios.

Scenarios (each a whole process, interpreter start included, median of N runs):
1. vault: 40 KV v2 secrets, 80 references (user + password of each), from a real
   OpenBao behind a proxy adding DELAY_MS per request. Baseline: a sequential
   script that reads once per reference with hvac (what a hand-written fetch
   script, or a sequential resolver without a document cache, does).
2. aws: 40 Secrets Manager secrets (80 references) on moto behind the same
   proxy. Baseline: sequential GetSecretValue per reference with boto3.
3. startup: a file/env-only render. Baseline: the same run with every SDK
   imported up front (what an eager provider registry costs).

Run: `make bench` (or `.venv/bin/python bench/run.py [--runs N] [--delay-ms D]`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.latency_proxy import LatencyProxy  # noqa: E402
from tests.backends.moto_server import aws_client, start_moto  # noqa: E402
from tests.backends.openbao import start_openbao  # noqa: E402

N_SECRETS = 40

BASELINE_VAULT = """
import hvac, json, os, sys
client = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])
out = {}
for i in range(int(sys.argv[1])):
    for key in ("username", "password"):
        data = client.secrets.kv.v2.read_secret_version(f"bench/s{i}", mount_point="secret",
                                                        raise_on_deleted_version=True)["data"]["data"]
        out[f"{key}{i}"] = data[key]
open(sys.argv[2], "w").write(json.dumps(out))
"""

BASELINE_AWS = """
import boto3, json, sys
client = boto3.client("secretsmanager")
out = {}
for i in range(int(sys.argv[1])):
    for key in ("username", "password"):
        value = json.loads(client.get_secret_value(SecretId=f"bench/s{i}")["SecretString"])
        out[f"{key}{i}"] = value[key]
open(sys.argv[2], "w").write(json.dumps(out))
"""

EAGER = """
import sys
import hvac, boto3, azure.identity, azure.keyvault.secrets  # noqa: F401
from initfetch.cli import main
sys.exit(main(sys.argv[1:]))
"""


def manifest(scheme: str, path_fmt: str) -> str:
    lines = ["version: 1", "secrets:"]
    for i in range(N_SECRETS):
        for key in ("username", "password"):
            lines.append(f"  {key}{i}: {scheme}://{path_fmt.format(i=i)}#{key}")
    lines += ["templates:", "  - {src: all.j2, dest: all.json}"]
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"benchmark command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return elapsed


def compare(
    name: str, runs: int, contender: list[str], baseline: list[str], env: dict[str, str], cwd: Path
) -> dict:
    a, b = [], []
    for _ in range(runs):  # interleaved, so drift on the machine hits both sides alike
        a.append(timed(contender, env, cwd))
        b.append(timed(baseline, env, cwd))
    ma, mb = statistics.median(a), statistics.median(b)
    return {
        "scenario": name,
        "initfetch_s": round(ma, 3),
        "baseline_s": round(mb, 3),
        "speedup": round(mb / ma, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--delay-ms", type=float, default=5.0, help="added per request, like a network round trip"
    )
    args = parser.parse_args()
    delay = args.delay_ms / 1000
    py = sys.executable
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "all.j2").write_text("{{ secrets | tojson }}\n")
        base_env = {
            "PATH": os.environ["PATH"],
            "HOME": str(work),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO),
            "INITFETCH_LOG_LEVEL": "warning",
        }
        render = [py, "-m", "initfetch", "render", "-o", str(work / "out"), "--allow-disk"]

        bao = start_openbao(work / "bao")
        try:
            client = bao.client()
            for i in range(N_SECRETS):
                client.secrets.kv.v2.create_or_update_secret(
                    f"bench/s{i}", {"username": f"u{i}", "password": f"p{i}"}
                )
            proxy = LatencyProxy("127.0.0.1", int(bao.url.rsplit(":", 1)[1]), delay)
            (work / "vault").mkdir()
            (work / "vault/initfetch.yaml").write_text(manifest("vault", "secret/bench/s{i}"))
            (work / "vault/all.j2").write_text("{{ secrets | tojson }}\n")
            env = {**base_env, "VAULT_ADDR": proxy.url, "VAULT_TOKEN": bao.root_token}
            results.append(
                compare(
                    f"vault: {N_SECRETS} secrets / {2 * N_SECRETS} refs, {args.delay_ms:g} ms per request",
                    args.runs,
                    render,
                    [py, "-c", BASELINE_VAULT, str(N_SECRETS), str(work / "b.json")],
                    env,
                    work / "vault",
                )
            )
            proxy.stop()
        finally:
            bao.stop()

        moto = start_moto()
        try:
            sm = aws_client(moto.url, "secretsmanager")
            for i in range(N_SECRETS):
                sm.create_secret(
                    Name=f"bench/s{i}", SecretString=json.dumps({"username": f"u{i}", "password": f"p{i}"})
                )
            proxy = LatencyProxy("127.0.0.1", int(moto.url.rsplit(":", 1)[1]), delay)
            (work / "aws").mkdir()
            (work / "aws/initfetch.yaml").write_text(manifest("awssm", "bench/s{i}"))
            (work / "aws/all.j2").write_text("{{ secrets | tojson }}\n")
            env = {
                **base_env,
                "AWS_ENDPOINT_URL": proxy.url,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
            results.append(
                compare(
                    f"aws: {N_SECRETS} secrets / {2 * N_SECRETS} refs, {args.delay_ms:g} ms per request",
                    args.runs,
                    render,
                    [py, "-c", BASELINE_AWS, str(N_SECRETS), str(work / "b.json")],
                    env,
                    work / "aws",
                )
            )
            proxy.stop()
        finally:
            moto.stop()

        (work / "local").mkdir()
        (work / "local/initfetch.yaml").write_text(
            "version: 1\nsecrets:\n  a: env://A\ntemplates:\n  - {src: all.j2, dest: all.json}\n"
        )
        (work / "local/all.j2").write_text("{{ secrets | tojson }}\n")
        env = {**base_env, "A": "x"}
        results.append(
            compare(
                "startup: file/env-only render vs all SDKs imported",
                args.runs,
                render,
                [py, "-c", EAGER, *render[3:]],
                env,
                work / "local",
            )
        )

    width = max(len(r["scenario"]) for r in results)
    print(f"{'scenario'.ljust(width)}  initfetch  baseline  baseline/initfetch")
    for r in results:
        name, a, b, ratio = r["scenario"].ljust(width), r["initfetch_s"], r["baseline_s"], r["speedup"]
        print(f"{name}  {a:>8.3f}s {b:>8.3f}s  {ratio:>6.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
