"""Start-up of the image against the development venv: `docker run` wall time, start to exit.

Two runs a user makes on every pod start, each timed as a whole process, interleaved, median of
--runs:

* hello: the README's hello world (file:// and env:// references, one template), no backend;
* vault-20: 20 Vault secrets from a local OpenBao (no added latency: this is start-up).

Beside them the floors: `python3 -c pass` in the venv and in the image (`docker run --rm
--entrypoint python3 IMAGE -c pass`), so that what Docker itself costs (namespaces, the
container's start and removal) is told apart from what initfetch costs inside it.

The image is built from this tree with the test suite's engine (tests/docker/engine.py: our own
dockerd, the debootstrap base, host networking). Usage (as root, like the Docker tests):

    .venv/bin/python bench/docker_startup.py [--runs 7] [--out bench/results/issue22-docker.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.workloads import initfetch_files, vault_workload  # noqa: E402
from tests.backends.openbao import start_openbao  # noqa: E402
from tests.docker import engine as eng  # noqa: E402

TAG = "localhost/initfetch:bench-startup"
HELLO_TEMPLATE = '{"api_token": "{{ secrets.api_token }}", "greeting": "{{ secrets.greeting }}"}\n'
HELLO_MANIFEST = """version: 1
secrets:
  api_token: env://API_TOKEN
  greeting: file:///etc/initfetch/greeting.txt
templates:
  - src: config.json.j2
    dest: config.json
"""


def timed(argv: Sequence[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "issue22-docker.md")
    args = p.parse_args()

    engine = eng.Engine()
    engine.start()
    base = engine.base_image()
    engine.build_initfetch(TAG, base, "all")
    work = Path(tempfile.mkdtemp(prefix="initfetch-startup-"))
    os.chmod(work, 0o755)
    bao = start_openbao(work / "openbao")
    try:
        rows = measure(engine, bao, work, args.runs)
    finally:
        bao.stop()
    report(rows, inside(engine), args)


def measure(engine: eng.Engine, bao: object, work: Path, runs: int) -> list[tuple[str, list[float]]]:
    venv_bin = Path(sys.executable).parent
    hello = work / "hello"
    hello.mkdir()
    (hello / "initfetch.yaml").write_text(HELLO_MANIFEST.replace("/etc/initfetch/", f"{hello}/"))
    (hello / "config.json.j2").write_text(HELLO_TEMPLATE)
    (hello / "greeting.txt").write_text("hello\n")
    image_hello = work / "image-hello"
    image_hello.mkdir()
    (image_hello / "initfetch.yaml").write_text(HELLO_MANIFEST)
    (image_hello / "config.json.j2").write_text(HELLO_TEMPLATE)
    (image_hello / "greeting.txt").write_text("hello\n")

    w = vault_workload(20)
    client = bao.client()  # type: ignore[attr-defined]
    for item in w.items:
        client.secrets.kv.v2.create_or_update_secret(item.path, item.value)
    vault_dir = work / "vault"
    vault_dir.mkdir()
    initfetch_files(w, vault_dir, None)
    for f in vault_dir.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)

    shm = Path(tempfile.mkdtemp(prefix="initfetch-startup-", dir="/dev/shm"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8"}
    vault_env = {"VAULT_ADDR": bao.url, "VAULT_TOKEN": bao.root_token}  # type: ignore[attr-defined]
    docker = [engine.docker, "run", "--rm", "--network", "host", "--tmpfs", "/out:uid=65532,gid=65532"]

    def venv(directory: Path, extra: dict[str, str]) -> Callable[[], float]:
        out = shm / directory.name  # a tmpfs, as in the README: no --allow-disk

        def run() -> float:
            return timed(
                [
                    str(venv_bin / "initfetch"),
                    "render",
                    "-m",
                    str(directory / "initfetch.yaml"),
                    "-o",
                    str(out),
                ],
                {**env, **extra},
            )

        return run

    def image(directory: Path, extra: dict[str, str]) -> Callable[[], float]:
        flags = [f"-e{k}={v}" for k, v in extra.items()]
        argv = [*docker, "-v", f"{directory}:/etc/initfetch:ro", *flags, TAG, "render", "-o", "/out"]
        return lambda: timed(argv, {**engine.env})

    floor = ["--entrypoint", "python3", TAG, "-c", "pass"]
    scenarios: list[tuple[str, Callable[[], float]]] = [
        ("python -c pass, venv", lambda: timed([sys.executable, "-c", "pass"], env)),
        (
            "python -c pass, docker run",
            lambda: timed(
                [*docker, "-v", f"{image_hello}:/etc/initfetch:ro", "-eAPI_TOKEN=x", *floor],
                engine.env,
            ),
        ),
        ("hello world, venv", venv(hello, {"API_TOKEN": "s3cret"})),
        ("hello world, docker run", image(image_hello, {"API_TOKEN": "s3cret"})),
        ("vault-20, venv", venv(vault_dir, vault_env)),
        ("vault-20, docker run", image(vault_dir, vault_env)),
    ]
    try:
        for _, run in scenarios:  # warm the page cache and the image's layers once
            run()
        times: dict[str, list[float]] = {name: [] for name, _ in scenarios}
        for _ in range(runs):
            for name, run in scenarios:
                times[name].append(run())
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    return [(name, times[name]) for name, _ in scenarios]


INSIDE = """
import statistics, subprocess, sys, tempfile, time
def median(argv, cwd=None):
    runs = []
    for _ in range(15):
        began = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, cwd=cwd)
        runs.append(time.perf_counter() - began)
    return statistics.median(runs)
starter = tempfile.mkdtemp()
subprocess.run([sys.argv[1], "init"], check=True, capture_output=True, cwd=starter)
print(
    median([sys.executable, "-c", "pass"]),
    median([sys.argv[1], "--version"]),
    median([sys.argv[1], "check"], starter),
)
"""


def inside(engine: eng.Engine) -> list[tuple[str, float]]:
    """`python -c pass`, `initfetch --version` and `check` of the starter `init` writes, timed
    inside one container and in the venv: the image's own start-up, without what Docker costs
    per container."""
    venv = subprocess.run(
        [sys.executable, "-c", INSIDE, str(Path(sys.executable).parent / "initfetch")],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    tmp = ["--tmpfs", "/tmp:uid=65532,gid=65532"]  # where the starter is written
    image = engine.run(
        ["run", "--rm", "--network", "none", *tmp, "--entrypoint", "python3", TAG, "-c", INSIDE, "initfetch"]
    ).stdout.split()
    return [
        ("python -c pass, venv", float(venv[0])),
        ("python -c pass, inside the image", float(image[0])),
        ("initfetch --version, venv", float(venv[1])),
        ("initfetch --version, inside the image", float(image[1])),
        ("initfetch check of the starter, venv", float(venv[2])),
        ("initfetch check of the starter, inside the image", float(image[2])),
    ]


def report(
    rows: list[tuple[str, list[float]]], within: list[tuple[str, float]], args: argparse.Namespace
) -> None:
    med = {name: statistics.median(t) for name, t in rows}
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Start-up in the image against the venv",
        "",
        f"Generated by bench/docker_startup.py on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"initfetch at {commit or '?'}, {os.cpu_count()} cores, Python {platform.python_version()} "
        f"(venv); the image is the Dockerfile's (EXTRAS=all) on the CI's debootstrap bookworm base. "
        f"Median of {args.runs} whole-process runs, interleaved (min-max in brackets); no added latency.",
        "",
        "| run | wall s, median (min-max) | minus its python -c pass floor |",
        "|---|---|---|",
    ]
    for name, t in rows:
        floor = med["python -c pass, docker run" if "docker" in name else "python -c pass, venv"]
        over = "" if name.startswith("python") else f"{med[name] - floor:.3f}"
        lines.append(f"| {name} | {med[name]:.3f} ({min(t):.3f}-{max(t):.3f}) | {over} |")
    lines += [
        "",
        "The docker run rows include what Docker costs to create, start and remove a container "
        "(the `python -c pass` floor: the same mounts and variables, the image's interpreter); the "
        "last column is initfetch's own time.",
        "",
        "Inside one container (15 runs each, median), against the venv: without Docker's cost per container.",
        "",
        "| run | wall s, median |",
        "|---|---|",
        *(f"| {name} | {value:.3f} |" for name, value in within),
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
