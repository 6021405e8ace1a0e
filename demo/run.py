"""`make demo`: the main job end to end, against local backends.

Starts a real OpenBao dev server, moto's AWS server and the HTTPS Key Vault
double, seeds them, then runs the real CLI on the repository's example
manifest (initfetch.yaml): check, masked preview, render into a tmpfs
directory, healthcheck, and exec of a small "application" that shows what it
received without printing a value. Everything is stopped and removed at the end.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from initfetch.outdir.target import filesystem_type  # noqa: E402
from tests.backends import keyvault_double, moto_server, openbao  # noqa: E402

APP = r"""
echo "app: DB_USER=$DB_USER, DB_PASSWORD has ${#DB_PASSWORD} characters"
echo "app: variables from ssm:///demo/prod/: $(env | grep -o '^APP_[A-Z_]*' | sort | tr '\n' ' ')"
if [ -z "${VAULT_TOKEN:-}" ]; then echo "app: VAULT_TOKEN was removed (initfetch used it to log in)"; fi
echo "app: files: $(cd "$OUT" && find . -type f ! -name '.*' | sort | tr '\n' ' ')"
"""


def step(title: str, args: list[str], env: dict[str, str], expect: int = 0) -> None:
    print(f"\n\033[1m$ initfetch {shlex.join(args)}\033[0m   # {title}", flush=True)
    r = subprocess.run([sys.executable, "-m", "initfetch", *args], env=env, cwd=REPO)
    if r.returncode != expect:
        raise SystemExit(f"demo failed: exit {r.returncode}, expected {expect}")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="initfetch-demo-"))
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs on most Linux hosts; mkdtemp makes a private dir in it
    out_parent = shm if shm.is_dir() and filesystem_type(shm) == "tmpfs" else work
    out = Path(tempfile.mkdtemp(prefix="initfetch-demo-out-", dir=out_parent))
    handles: list = []
    try:
        print("starting local backends: OpenBao (real), moto (AWS), Key Vault double (HTTPS) ...", flush=True)
        bao = openbao.start_openbao(work / "bao")
        handles.append(bao)
        openbao.seed_demo(bao)
        moto = moto_server.start_moto()
        handles.append(moto)
        moto_server.seed_demo(moto.url)
        kv = keyvault_double.start_keyvault(work / "kv")
        handles.append(kv)
        keyvault_double.seed_demo(kv)

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO),
            "VAULT_ADDR": bao.url,
            "VAULT_TOKEN": bao.root_token,
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_DEFAULT_REGION": "us-east-1",
            "DEMO_KEYVAULT_URL": kv.url,
            "DEMO_KEYVAULT_CA": kv.ca_file,
            "INITFETCH_LOG_LEVEL": "warning",
            **kv.env,
        }
        step("validate the manifest and templates; no network", ["check"], env)
        step("what would be written, values masked", ["preview"], env)
        render = ["render", "-o", str(out)] + ([] if out_parent == shm else ["--allow-disk"])
        step(f"write into {out} ({filesystem_type(out)})", [*render, "--log-level", "info"], env)
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            st = path.stat()
            print(f"  {st.st_mode & 0o777:04o}  {st.st_size:>5} bytes  {path.relative_to(out)}")
        step("a compose healthcheck would run this", ["healthcheck", "-o", str(out)], env)
        env_exec = {**env, "OUT": str(out)}
        exec_args = ["exec", *render[1:], "--", "sh", "-c", APP]
        step("exec the application with secrets in its environment", exec_args, env_exec)
        print("\ndemo complete: every secret resolved from three local backends; no value was printed.")
    finally:
        for handle in reversed(handles):
            handle.stop()
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
