"""Randomized fault injection: whole `initfetch render` processes through a fault proxy
in front of each real backend (OpenBao, moto, the Key Vault double).

- RANDOM_RUNS runs, each with its own seed and a transient fault rate of at most
  MAX_FAULT_RATE (refused connections for the first seconds, resets, 429 with and
  without Retry-After, 500/502/503, answers slower than the per-request timeout,
  truncated bodies): every run exits 0 within its --timeout and leaves OUT_DIR
  holding exactly the new complete render.
- Permanent faults (403/404 on the secret reads) fail fast with exit 3; a backend
  that stays down or answers 503 past a short deadline fails with exit 4 within
  that deadline plus slack. Either way OUT_DIR is exactly the previous render.

Every OUT_DIR starts as a copy of a complete render of the *old* values (v1);
the backends then hold new values (v2), so a partial or mixed write shows up as
a file set, bytes or a marker that is neither exactly v1 nor exactly v2.

Totals (runs, faults injected by kind, successes, fast failures and their
durations, partial writes) go to `fault-totals.json` in the session's temp
directory and are printed; docs/reliability.md quotes this module's constants.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import tests.backends.openbao as openbao_backend
from tests.backends.fault_proxy import TRANSIENT_KINDS, Answer, FaultPlan, FaultProxy
from tests.backends.keyvault_double import KeyVaultDouble, start_keyvault
from tests.backends.moto_server import REGION, aws_client, shared_moto
from tests.backends.openbao import OpenBao
from tests.helpers import clean_env, register_canary

openbao = openbao_backend.openbao

# --- the figures docs/reliability.md quotes (tests/test_reliability_doc.py checks them) -------
RANDOM_RUNS = 210  # whole-process renders with random transient faults, over the three backends
MIN_FAULT_RATE = 0.05  # the lowest rate a run draws
MAX_FAULT_RATE = 0.30  # the highest expected share of requests with a transient fault in a run
# A drawn 429 brings 0-2 more (a burst): 1 + P(429) * 1 = 1.25 faults per draw on average
# (P(429) = 2 of the 8 kinds' weight when no slow answer is allowed), so runs draw a
# starting rate of at most MAX_FAULT_RATE / BURST_FACTOR.
BURST_FACTOR = 1.25
RUN_TIMEOUT = 30.0  # --timeout of a randomized run (seconds)
POOL = 6  # runs in parallel
SLOW_EVERY = 10  # one run in SLOW_EVERY may hold an answer past the per-request timeout
SHORT_TIMEOUT = 3.0  # --timeout of the runs whose backend stays down
SLACK = 10.0  # start-up and teardown allowance on top of a deadline (process start, imports)
FAST_FAILURE_BOUND = 10.0  # a permanent fault ends a run with a 60 s --timeout within this
BACKENDS = ("vault", "aws", "azure")
PERMANENT_KINDS = ("403", "404")
# Transient kinds left out of the random mix for one backend because initfetch misclassifies
# them (each with a strict xfail test naming the bug). None today: truncated Azure answers
# and token-endpoint error pages are retried since they were found here.
KNOWN_BUGS: dict[str, set[str]] = {}
DOWN_KINDS = ("refused", "503")

# Filled as the tests run; written to fault-totals.json at the end of the module.
TOTALS: dict[str, Any] = {
    "random_runs": 0,
    "random_successes": 0,
    "faults_injected": Counter(),
    "requests_seen": 0,
    "random_requests": 0,
    "random_faulted_requests": 0,
    "random_run_seconds": [],
    "fast_failures": 0,
    "fast_failure_seconds": [],
    "deadline_failures": 0,
    "deadline_failure_seconds": [],
    "partial_writes": 0,
}
_TOTALS_LOCK = threading.Lock()

TAG = uuid.uuid4().hex[:8]
SECRET_PREFIX = f"CANARY-faults-{TAG}"  # every value starts with this: the leak check knows it


def value(name: str, generation: int) -> str:
    return f"{SECRET_PREFIX}-{name}-v{generation}"


TEMPLATE = """\
{% for name, v in secrets | dictsort %}{{ name }}={{ v | tojson }}
{% endfor %}all={{ secrets | dictsort | map('last') | join(',') | b64encode }}
"""


# --- backends, seeded twice (v1 then v2) ---------------------------------------------------------


@dataclass
class Backends:
    bao: OpenBao
    moto_url: str
    kv: KeyVaultDouble
    work: Path
    v1: dict[str, Path] = field(default_factory=dict)  # backend -> complete render of the v1 values
    v2: dict[str, Path] = field(default_factory=dict)


def seed(b: Backends, generation: int) -> None:
    v = lambda name: value(name, generation)  # noqa: E731
    c = b.bao.client()
    c.secrets.kv.v2.create_or_update_secret(f"faults-{TAG}/db", {"user": "app", "password": v("vpass")})
    c.secrets.kv.v2.create_or_update_secret(f"faults-{TAG}/api", {"key": v("vapi")})
    c.secrets.kv.v2.create_or_update_secret(f"faults-{TAG}/cfg", {"nested": {"k": v("vcfg")}})
    sm, ssm = aws_client(b.moto_url, "secretsmanager"), aws_client(b.moto_url, "ssm")
    for name, secret in (
        (f"faults-{TAG}/db", json.dumps({"user": "app", "password": v("smdb")})),
        (f"faults-{TAG}/token", v("smtok")),
    ):
        if generation == 1:
            sm.create_secret(Name=name, SecretString=secret)
        else:
            sm.put_secret_value(SecretId=name, SecretString=secret)
    for name in ("p1", "p2"):
        ssm.put_parameter(
            Name=f"/faults-{TAG}/{name}", Value=v("ssm" + name), Type="SecureString", Overwrite=True
        )
    b.kv.set_secret("fault-a", v("kva"))
    b.kv.set_secret("fault-b", json.dumps({"nested": {"k": v("kvb")}}))
    b.kv.set_secret("fault-c", v("kvc"))
    for name in ("vpass", "vapi", "vcfg", "smdb", "smtok", "ssmp1", "ssmp2", "kva", "kvb", "kvc"):
        register_canary(v(name))


def manifest(backend: str, kv_url: str = "", ca_file: str = "") -> str:
    if backend == "vault":
        secrets = {
            "user": f"vault://secret/faults-{TAG}/db#user",
            "password": f"vault://secret/faults-{TAG}/db#password",
            "api": f"vault://secret/faults-{TAG}/api#key",
            "cfg": f"vault://secret/faults-{TAG}/cfg#/nested/k",
        }
        providers: dict[str, Any] = {}
        files = [("password", "password"), ("api", "keys/api")]
    elif backend == "aws":
        secrets = {
            "user": f"awssm://faults-{TAG}/db#user",
            "db": f"awssm://faults-{TAG}/db#password",
            "token": f"awssm://faults-{TAG}/token",
            "p1": f"ssm:///faults-{TAG}/p1",
            "p2": f"ssm:///faults-{TAG}/p2",
        }
        providers = {}
        files = [("db", "db"), ("p1", "params/p1")]
    else:
        secrets = {"a": "kv://main/fault-a", "b": "kv://main/fault-b#/nested/k", "c": "kv://main/fault-c"}
        providers = {
            "kv": {
                "type": "azure-keyvault",
                "vault_url": kv_url,
                "ca_file": ca_file,
                "auth": {"method": "managed_identity"},
            }
        }
        files = [("a", "a"), ("c", "sub/c")]
    doc = {
        "version": 1,
        "providers": providers,
        "secrets": secrets,
        "templates": [{"src": "config.j2", "dest": "conf/app.conf"}],
        "files": [{"secret": s, "dest": d} for s, d in files],
    }
    return json.dumps(doc, indent=1)  # JSON is YAML


# --- one run ---------------------------------------------------------------------------------


def vault_permanent(kind: str) -> Callable[[str, str, Any, bytes], Answer | None]:
    def answer(method: str, path: str, headers: Any, body: bytes) -> Answer | None:
        if not path.startswith(f"/v1/secret/data/faults-{TAG}/"):
            return None
        if kind == "403":
            return Answer(
                403,
                b'{"errors":["1 error occurred:\\n\\t* permission denied\\n\\n"]}',
                {"Content-Type": "application/json"},
            )
        return Answer(404, b'{"errors":[]}', {"Content-Type": "application/json"})

    return answer


def aws_permanent(kind: str) -> Callable[[str, str, Any, bytes], Answer | None]:
    ctype = {"Content-Type": "application/x-amz-json-1.1"}

    def error(code: str, message: str) -> Answer:
        return Answer(400, json.dumps({"__type": code, "message": message}).encode(), ctype)

    def answer(method: str, path: str, headers: Any, body: bytes) -> Answer | None:
        target = headers.get("X-Amz-Target", "")
        if not target.endswith(("GetSecretValue", "GetParameters", "GetParameter")):
            return None
        if kind == "403":
            return error("AccessDeniedException", "User is not authorized to perform this action")
        request = json.loads(body or b"{}")
        if target.endswith("BatchGetSecretValue"):
            errors = [
                {
                    "SecretId": s,
                    "ErrorCode": "ResourceNotFoundException",
                    "Message": "Secrets Manager can't find the specified secret.",
                }
                for s in request.get("SecretIdList", [])
            ]
            return Answer(200, json.dumps({"SecretValues": [], "Errors": errors}).encode(), ctype)
        if target.endswith("GetSecretValue"):
            return error("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
        if target.endswith("GetParameters"):
            names = request.get("Names", [])
            return Answer(200, json.dumps({"Parameters": [], "InvalidParameters": names}).encode(), ctype)
        return error("ParameterNotFound", "")

    return answer


def azure_permanent(kind: str) -> Callable[[str, str, Any, bytes], Answer | None]:
    ctype = {"Content-Type": "application/json; charset=utf-8"}

    def answer(method: str, path: str, headers: Any, body: bytes) -> Answer | None:
        if not path.startswith("/secrets/fault-") or not headers.get("Authorization"):
            return None  # the unauthenticated first request still gets the double's challenge
        if kind == "403":
            body = {
                "error": {
                    "code": "Forbidden",
                    "message": "Caller is not authorized.",
                    "innererror": {"code": "ForbiddenByRbac"},
                }
            }
            return Answer(403, json.dumps(body).encode(), ctype)
        body = {"error": {"code": "SecretNotFound", "message": "A secret with (name/id) x was not found."}}
        return Answer(404, json.dumps(body).encode(), ctype)

    return answer


PERMANENT = {"vault": vault_permanent, "aws": aws_permanent, "azure": azure_permanent}
FLAVOUR = {"vault": "vault", "aws": "aws", "azure": "azure"}


@dataclass
class Outcome:
    backend: str
    seed: int
    rate: float
    returncode: int
    seconds: float
    faults: Counter[str]
    requests: int
    state: str  # "new" (exactly v2), "old" (exactly v1) or a description of what is wrong
    stderr: str


def snapshot(out: Path) -> dict[str, Any]:
    """Every file under OUT_DIR: bytes, with the marker's timestamp dropped."""
    files: dict[str, Any] = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() or p.is_symlink():
            rel = str(p.relative_to(out))
            data = p.read_bytes()
            if rel == ".initfetch-ready.json":
                marker = json.loads(data)
                marker.pop("completed_at", None)
                files[rel] = marker
            else:
                files[rel] = data
    return files


def compare(out: Path, b: Backends, backend: str) -> str:
    now = snapshot(out)
    if now == snapshot(b.v2[backend]):
        return "new"
    if now == snapshot(b.v1[backend]):
        return "old"
    return f"partial or mixed: files {sorted(now)}"


def run_once(
    b: Backends,
    backend: str,
    run_dir: Path,
    plan: FaultPlan,
    *,
    timeout: float,
    msi_plan: FaultPlan | None = None,
    fresh_out: bool = False,
) -> Outcome:
    """One `initfetch render` through fault proxies; OUT_DIR starts as the v1 render (unless fresh_out)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.j2").write_text(TEMPLATE)
    out = run_dir / "out"
    if not fresh_out:
        shutil.copytree(b.v1[backend], out, symlinks=True)
    with ExitStack() as stack:
        env = clean_env(HOME=str(run_dir))
        if backend == "vault":
            proxy = stack.enter_context(FaultProxy(b.bao.url, plan))
            env.update(VAULT_ADDR=proxy.url, VAULT_TOKEN=b.bao.root_token)
            text = manifest(backend)
            proxies = [proxy]
        elif backend == "aws":
            proxy = stack.enter_context(FaultProxy(b.moto_url, plan))
            env.update(
                AWS_ENDPOINT_URL=proxy.url,
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 - moto does not check
                AWS_DEFAULT_REGION=REGION,
                AWS_CONFIG_FILE=str(run_dir / "none"),
                AWS_SHARED_CREDENTIALS_FILE=str(run_dir / "none"),
                AWS_EC2_METADATA_DISABLED="true",
            )
            text = manifest(backend)
            proxies = [proxy]
        else:
            proxy = stack.enter_context(FaultProxy(b.kv.url, plan, upstream_ca=b.kv.ca_file))
            proxy.map_port(b.kv.port)
            msi = stack.enter_context(FaultProxy(b.kv.msi_endpoint, msi_plan or FaultPlan()))
            msi.map_port(b.kv.port, proxy.port)
            env.update(IDENTITY_ENDPOINT=f"{msi.url}/msi/token", IDENTITY_HEADER=b.kv.identity_header)
            assert proxy.ca_file
            text = manifest(backend, proxy.url, proxy.ca_file)
            proxies = [proxy, msi]
        (run_dir / "initfetch.yaml").write_text(text)
        start = time.monotonic()
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "initfetch",
                "render",
                "-o",
                str(out),
                "--allow-disk",
                "--timeout",
                str(timeout),
            ],
            env=env,
            cwd=run_dir,
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )
        seconds = time.monotonic() - start
    faults: Counter[str] = Counter()
    for p in proxies:
        faults.update(p.injected())
    if fresh_out:
        state = "fresh"
    else:
        state = compare(out, b, backend) if out.exists() else "no OUT_DIR"
    return Outcome(
        backend,
        plan.seed,
        plan.rate,
        r.returncode,
        seconds,
        faults,
        sum(p.counts["requests"] for p in proxies),
        state,
        r.stderr,
    )


def render_clean(b: Backends, backend: str, dest: Path) -> Path:
    o = run_once(b, backend, dest, FaultPlan(), timeout=30, fresh_out=True)
    assert o.returncode == 0, o.stderr
    return dest / "out"


@pytest.fixture(scope="module")
def backends(openbao: OpenBao, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    work = tmp_path_factory.mktemp("faults")
    kv = start_keyvault(work / "kv")
    b = Backends(openbao, shared_moto().url, kv, work)
    try:
        seed(b, 1)
        for backend in BACKENDS:
            b.v1[backend] = render_clean(b, backend, work / "v1" / backend)
        seed(b, 2)
        for backend in BACKENDS:
            b.v2[backend] = render_clean(b, backend, work / "v2" / backend)
            old, new = snapshot(b.v1[backend]), snapshot(b.v2[backend])
            assert old.keys() == new.keys()
            # Every file changes between v1 and v2, so a mixed set cannot pass for either.
            assert all(old[k] != new[k] for k in old), backend
        yield b
    finally:
        kv.stop()
        write_totals(tmp_path_factory)


def write_totals(tmp_path_factory: pytest.TempPathFactory) -> None:
    with _TOTALS_LOCK:
        totals = {**TOTALS, "faults_injected": dict(sorted(TOTALS["faults_injected"].items()))}
    seconds = sorted(totals.pop("random_run_seconds"))
    if seconds:
        totals["random_run_seconds"] = {"median": seconds[len(seconds) // 2], "max": seconds[-1]}
    path = tmp_path_factory.getbasetemp() / "fault-totals.json"
    path.write_text(json.dumps(totals, indent=1))
    print(f"\nfault injection totals ({path}): {json.dumps(totals)}")


def record(o: Outcome, kind: str) -> None:
    with _TOTALS_LOCK:
        TOTALS["faults_injected"].update(o.faults)
        TOTALS["requests_seen"] += o.requests
        if o.state not in ("new", "old"):
            TOTALS["partial_writes"] += 1
        if kind == "random":
            TOTALS["random_runs"] += 1
            TOTALS["random_requests"] += o.requests
            TOTALS["random_faulted_requests"] += sum(n for k, n in o.faults.items() if k != "refuse")
            TOTALS["random_run_seconds"].append(round(o.seconds, 1))
            TOTALS["random_successes"] += o.returncode == 0 and o.state == "new"
        elif kind == "permanent":
            TOTALS["fast_failures"] += o.returncode == 3 and o.state == "old"
            TOTALS["fast_failure_seconds"].append(round(o.seconds, 2))
        else:
            TOTALS["deadline_failures"] += o.returncode == 4 and o.state == "old"
            TOTALS["deadline_failure_seconds"].append(round(o.seconds, 2))


# --- the tests ---------------------------------------------------------------------------------


def random_plan(i: int, master: random.Random, backend: str) -> FaultPlan:
    seed_ = master.randrange(2**32)
    rng = random.Random(seed_)
    plan = FaultPlan(
        rate=rng.uniform(MIN_FAULT_RATE, MAX_FAULT_RATE / BURST_FACTOR),
        seed=seed_,
        refuse_for=rng.choice((0.0, 0.0, rng.uniform(0.5, 2.5))),
        flavour=FLAVOUR[backend],
    )
    for kind in KNOWN_BUGS.get(backend, ()):
        plan.weights[kind] = 0.0
    if i % SLOW_EVERY:
        plan.weights["slow"] = 0.0
    else:
        plan.weights["slow"] = 4.0  # likely drawn once (max_slow=1): held past the per-request timeout
    return plan


def test_random_transient_faults_every_run_succeeds_completely(backends: Backends) -> None:
    master = random.Random(int(os.environ.get("INITFETCH_FAULT_SEED", "20261202")))
    jobs = []
    for i in range(RANDOM_RUNS):
        backend = BACKENDS[i % len(BACKENDS)]
        plan = random_plan(i, master, backend)
        msi_plan = None
        if backend == "azure":  # the token endpoint gets faults too (its own JSON or an HTML page)
            # but never a slow answer: one slow token request and one slow read would not fit.
            msi_plan = FaultPlan(rate=plan.rate, seed=plan.seed + 1, flavour="msi")
            msi_plan.weights["slow"] = 0.0
            for kind in KNOWN_BUGS.get(backend, ()):
                msi_plan.weights[kind] = 0.0
        jobs.append((backend, backends.work / "random" / f"{i:03d}-{backend}", plan, msi_plan))

    def job(args: tuple[str, Path, FaultPlan, FaultPlan | None]) -> Outcome:
        backend, run_dir, plan, msi_plan = args
        o = run_once(backends, backend, run_dir, plan, timeout=RUN_TIMEOUT, msi_plan=msi_plan)
        record(o, "random")
        return o

    with ThreadPoolExecutor(POOL) as pool:
        outcomes = list(pool.map(job, jobs))

    bad = [o for o in outcomes if o.returncode != 0 or o.state != "new" or o.seconds > RUN_TIMEOUT + SLACK]
    report = "\n".join(
        f"{o.backend} seed={o.seed} rate={o.rate:.2f} exit={o.returncode} {o.seconds:.1f}s {o.state} "
        f"faults={dict(o.faults)}\n  " + "\n  ".join(o.stderr.splitlines()[-6:])
        for o in bad
    )
    assert not bad, f"{len(bad)} of {len(outcomes)} runs failed:\n{report}"
    injected = Counter[str]()
    for o in outcomes:
        injected.update(o.faults)
    # The mix really happened: every transient kind was injected, and faults were frequent.
    for kind in ("refuse", *TRANSIENT_KINDS):
        assert injected[kind] > 0, (kind, injected)
    # Over the session the share of faulted requests is between the lowest rate a run
    # draws and the highest stated rate.
    requests = sum(o.requests for o in outcomes)
    faulted = sum(n for o in outcomes for k, n in o.faults.items() if k != "refuse")
    assert MIN_FAULT_RATE * requests <= faulted <= MAX_FAULT_RATE * requests, (faulted, requests)


@pytest.mark.parametrize("kind", PERMANENT_KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_permanent_fault_fails_fast_and_keeps_the_previous_render(
    backends: Backends, backend: str, kind: str
) -> None:
    plan = FaultPlan(permanent=PERMANENT[backend](kind), flavour=FLAVOUR[backend])
    o = run_once(backends, backend, backends.work / "permanent" / f"{backend}-{kind}", plan, timeout=60)
    record(o, "permanent")
    assert o.returncode == 3, o.stderr
    expected = "access-denied" if kind == "403" else "not-found"
    assert expected in o.stderr, o.stderr
    assert o.faults["permanent"] > 0
    assert o.state == "old", o.state
    # Fast: nothing is retried, the 60 s deadline is nowhere near.
    assert o.seconds < FAST_FAILURE_BOUND, o.seconds


@pytest.mark.parametrize("backend", BACKENDS)
def test_permanent_fault_among_transient_ones_is_still_exit_3(backends: Backends, backend: str) -> None:
    plan = FaultPlan(
        rate=MAX_FAULT_RATE,
        seed=zlib.crc32(backend.encode()),
        permanent=PERMANENT[backend]("403"),
        flavour=FLAVOUR[backend],
    )
    plan.weights["slow"] = 0.0
    o = run_once(backends, backend, backends.work / "mixed" / backend, plan, timeout=RUN_TIMEOUT)
    record(o, "permanent")
    assert o.returncode == 3, o.stderr
    assert o.state == "old", o.state


@pytest.mark.parametrize("down", DOWN_KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_down_past_the_deadline_is_exit_4_within_the_deadline(
    backends: Backends, backend: str, down: str
) -> None:
    if down == "refused":
        plan = FaultPlan(refuse_for=3600)
    else:
        plan = FaultPlan(permanent=lambda *a: Answer(503, b"<html>503</html>", {"Content-Type": "text/html"}))
    msi_plan = plan if backend == "azure" and down == "refused" else None
    o = run_once(
        backends,
        backend,
        backends.work / "down" / f"{backend}-{down}",
        plan,
        timeout=SHORT_TIMEOUT,
        msi_plan=msi_plan,
    )
    record(o, "deadline")
    assert o.returncode == 4, o.stderr
    assert "unavailable" in o.stderr
    assert o.state == "old", o.state
    assert o.seconds < SHORT_TIMEOUT + SLACK, o.seconds


@pytest.mark.parametrize("body", ["html", "empty"])
def test_token_endpoint_error_page_is_transient(backends: Backends, body: str) -> None:
    left = [1]

    def once(method: str, path: str, headers: Any, data: bytes) -> Answer | None:
        if left[0]:
            left[0] -= 1
            page = b"<html><body>503 Service Unavailable</body></html>" if body == "html" else b""
            return Answer(503, page, {"Content-Type": "text/html"})
        return None

    o = run_once(
        backends,
        "azure",
        backends.work / "msi-page" / body,
        FaultPlan(flavour="azure"),
        timeout=RUN_TIMEOUT,
        msi_plan=FaultPlan(permanent=once),
    )
    assert o.returncode == 0, o.stderr
    assert o.state == "new", o.state


def _kv_read(method: str, path: str, headers: Any) -> bool:
    return path.startswith("/secrets/fault-") and bool(headers.get("Authorization"))


@pytest.mark.parametrize("endpoint", ["key-vault", "token"])
def test_truncated_azure_answer_is_transient(backends: Backends, endpoint: str) -> None:
    truncate_once = FaultPlan(flavour="azure", eligible=_kv_read, script=["truncated"])
    if endpoint == "token":
        plan, msi_plan = FaultPlan(), FaultPlan(script=["truncated"])
    else:
        plan, msi_plan = truncate_once, None
    o = run_once(
        backends,
        "azure",
        backends.work / "truncated" / endpoint,
        plan,
        timeout=RUN_TIMEOUT,
        msi_plan=msi_plan,
    )
    assert o.faults["truncated"] == 1
    assert o.returncode == 0, o.stderr
    assert o.state == "new", o.state
