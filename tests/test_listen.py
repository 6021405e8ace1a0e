"""`--listen`: the probes and metrics of the long-running modes, from the outside, as a
kubelet, Prometheus or a hostile client sees them: real `initfetch` processes, real sockets.

- /readyz follows healthcheck's rule (one implementation): stale past --max-stale, ready
  again after a successful refresh; /healthz follows the watcher's loop;
- /metrics names only secrets, provider instances and classes; no endpoint shows a value;
- slow, half-open, oversized and flooding clients block neither the probes nor the watcher,
  do not grow its memory, and a stop is still within 2 s;
- usage errors are one line, exit 2; without --listen nothing of it is imported.
"""

from __future__ import annotations

import re
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import tests.watch_helpers as watch_helpers
from tests.backends.local_http import free_port
from tests.helpers import REPO, assert_no_canary, clean_env, run_cli, write
from tests.watch_helpers import Proc, start, wait_until

procs = watch_helpers.procs

CANARY_LISTEN = "CANARY-listen-2b9f-value"
CANARY_LISTEN2 = "CANARY-listen-e71c-value"
STOP_WITHIN = 2.0  # seconds: the contract (DESIGN.md, "Watch mode under faults")

# Every metric docs/watch.md lists, and what a watcher of a file secret exports.
METRICS = (
    "initfetch_backend_request_duration_seconds",
    "initfetch_backend_up",
    "initfetch_refresh_attempts_total",
    "initfetch_refresh_failures_total",
    "initfetch_files_written_total",
    "initfetch_notifications_total",
    "initfetch_application_restarts_total",
    "initfetch_secret_last_refresh_timestamp_seconds",
    "initfetch_secret_next_refresh_timestamp_seconds",
    "initfetch_lease_expiry_timestamp_seconds",
    "initfetch_login_expiry_timestamp_seconds",
    "initfetch_ready",
    "initfetch_build_info",
)


def get(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` as it is and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def file_watcher(
    procs: list[Proc], tmp_path: Path, *flags: str, refresh: str = "200ms"
) -> tuple[Proc, int, Path]:
    write(tmp_path / "src/pw", CANARY_LISTEN)
    write(
        tmp_path / "initfetch.yaml",
        f"version: 1\nproviders:\n  files: {{type: file, refresh: {refresh}}}\n"
        "secrets:\n  pw: files://src/pw\nfiles:\n  - {secret: pw, dest: pw}\n",
    )
    port = free_port()
    out = tmp_path / "out"
    args = ["render", "--watch", "-o", str(out), "--allow-disk", "--listen", f"127.0.0.1:{port}", *flags]
    p = start(procs, args, clean_env(), tmp_path)
    wait_until(lambda: (out / ".initfetch-ready.json").exists(), what="the first render")
    wait_until(lambda: _answers(port), what="the listener")
    return p, port, out


def _answers(port: int) -> bool:
    try:
        return get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    except OSError:
        return False


def metric(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


# --- probes follow healthcheck; metrics name names ----------------------------------------------


def test_readyz_follows_healthchecks_rule_and_metrics_count_the_failures(
    tmp_path: Path, procs: list[Proc]
) -> None:
    p, port, out = file_watcher(procs, tmp_path, "--max-stale", "2s")
    base = f"http://127.0.0.1:{port}"
    assert get(f"{base}/healthz") == (200, b"ok\n")
    assert get(f"{base}/readyz") == (200, b"ready\n")
    status, body = get(f"{base}/metrics")
    text = body.decode()
    assert status == 200
    for name in METRICS:
        assert f"# TYPE {name} " in text, name
    assert metric(text, "initfetch_files_written_total") == 1
    assert metric(text, "initfetch_backend_up", '{provider="files"}') == 1
    assert metric(text, "initfetch_secret_next_refresh_timestamp_seconds", '{secret="pw"}') > time.time() - 5  # type: ignore[operator]

    (tmp_path / "src/pw").unlink()  # every refresh fails from now on: not-found
    wait_until(lambda: get(f"{base}/readyz")[0] == 503, what="/readyz to turn 503 past --max-stale")
    status, body = get(f"{base}/readyz")
    assert b"the render is stale" in body and b"over --max-stale 2s" in body
    cli = run_cli(["healthcheck", "-o", str(out), "--max-stale", "2s"])
    assert cli.returncode == 1 and "the render is stale" in cli.stderr  # the same rule, the same verdict
    text = get(f"{base}/metrics")[1].decode()
    assert metric(text, "initfetch_refresh_failures_total", '{class="not-found",provider="files"}')
    assert metric(text, "initfetch_ready") == 0
    assert get(f"{base}/healthz")[0] == 200  # the loop is alive: it is the backend that fails

    write(tmp_path / "src/pw", CANARY_LISTEN2)
    wait_until(lambda: get(f"{base}/readyz")[0] == 200, what="/readyz to be ready again")
    text = get(f"{base}/metrics")[1].decode()
    assert metric(text, "initfetch_files_written_total") == 2
    bodies = [
        get(f"{base}{path}")[1] for path in ("/metrics", "/readyz", "/healthz", "/nope", "/metrics?x=1")
    ]
    for body in bodies:
        assert_no_canary(body, canaries=[CANARY_LISTEN, CANARY_LISTEN2])
        assert b"src/pw" not in body  # the reference's path is never a label
    assert p.stop() == 0
    assert_no_canary(p.log(), canaries=[CANARY_LISTEN, CANARY_LISTEN2])


def test_only_get_and_head_fixed_paths_and_bounded_heads(tmp_path: Path, procs: list[Proc]) -> None:
    p, port, _ = file_watcher(procs, tmp_path)
    assert raw(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw(port, b"HEAD /readyz HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\n")  # no body
    assert raw(port, b"GET /../etc/passwd HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert raw(port, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET /metrics HTTP/1.1\r\nX-Fill: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw(port, huge).startswith(b"HTTP/1.1 431 ")
    assert p.stop() == 0


# --- bad clients ---------------------------------------------------------------------------------


def test_half_open_slow_and_flooding_clients_block_neither_probes_nor_the_watcher(
    tmp_path: Path, procs: list[Proc]
) -> None:
    p, port, out = file_watcher(procs, tmp_path)
    base = f"http://127.0.0.1:{port}"
    # Half-open clients: more than the server holds, each sent part of a request and went quiet.
    idle = []
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metr")
        idle.append(s)
    assert get(f"{base}/healthz") == (200, b"ok\n")  # a probe still gets in (the oldest is evicted)
    before = rss_kib(p.proc.pid)
    # A flood: thousands of connections, most never reading their answer.
    for n in range(3000):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n" if n % 2 else b"GET / HTTP/1.1\r\nX: " + b"b" * 4000)
            s.close()
        except OSError:
            pass  # the backlog was full for a moment: that is the point
    write(tmp_path / "src/pw", CANARY_LISTEN2)  # the watcher keeps refreshing meanwhile
    wait_until(lambda: (out / "pw").read_text() == CANARY_LISTEN2, what="the refresh during the flood")
    assert get(f"{base}/readyz")[0] == 200
    grown = rss_kib(p.proc.pid) - before
    assert grown < 20 * 1024, f"memory grew by {grown} KiB under a flood"  # bounded, not per request
    # A stop with half-open clients still connected is as prompt as ever.
    for _ in range(64):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"G")
        idle.append(s)
    begun = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0
    took = time.monotonic() - begun
    assert took < STOP_WITHIN, f"stopped after {took:.2f}s"
    for s in idle:
        s.close()
    p.reader.join(10)
    assert_no_canary(p.log(), canaries=[CANARY_LISTEN, CANARY_LISTEN2])


def test_a_silent_client_is_closed_after_the_deadline_and_head_has_no_body() -> None:
    from initfetch.listen import server

    srv = server.Server(("127.0.0.1", 0), {"/x": lambda: server.Response(200, b"body\n")})
    srv.start()
    try:
        port = srv.address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            begun = time.monotonic()
            assert s.recv(1) == b""  # closed by the server, not by this test's timeout
            assert time.monotonic() - begun < server.DEADLINE + 10
        assert raw(port, b"HEAD /x HTTP/1.1\r\n\r\n").endswith(
            b"Content-Length: 5\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        )
        assert raw(port, b"GET /x HTTP/1.0\n\n").endswith(b"\r\n\r\nbody\n")
    finally:
        begun = time.monotonic()
        srv.close()
        assert time.monotonic() - begun < 1.0
    assert srv.sock.fileno() == -1  # the listening socket is closed


def test_healthz_follows_the_watch_loop(tmp_path: Path) -> None:
    import threading

    from initfetch.listen import Listener
    from initfetch.redact import Redactor
    from tests.watch_helpers import start_watcher

    write(tmp_path / "src", CANARY_LISTEN)
    manifest = (
        f"version: 1\nsecrets:\n  pw: file://{tmp_path / 'src'}\nfiles:\n  - {{secret: pw, dest: pw}}\n"
    )
    listener = Listener(("127.0.0.1", 0), tmp_path / "out", None, Redactor())
    watcher, _ = start_watcher(tmp_path, manifest, {})
    listener.metrics.watching(watcher)
    assert listener.healthz().status == 503  # a watcher whose loop does not run
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    wait_until(lambda: listener.healthz().status == 200, what="the loop to count as alive")
    assert listener.readyz().status == 200
    watcher.request_stop()
    thread.join(10)
    assert listener.healthz().status == 200  # stopping: not a failure
    watcher.finish(revoke=False, wipe=False)
    listener.server.close()


# --- the other long-running modes ----------------------------------------------------------------


def test_render_hold_serves_probes_and_stops_on_sigterm(tmp_path: Path, procs: list[Proc]) -> None:
    write(
        tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  a: env://A\nfiles:\n  - {secret: a, dest: a}\n"
    )
    port = free_port()
    out = tmp_path / "out"
    env = clean_env(A=CANARY_LISTEN)
    p = start(
        procs, ["render", "--hold", "-o", str(out), "--allow-disk", "--listen", str(port)], env, tmp_path
    )
    p.wait_log("holding until SIGTERM")
    assert get(f"http://127.0.0.1:{port}/readyz") == (200, b"ready\n")
    text = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    assert metric(text, "initfetch_files_written_total") == 1
    assert_no_canary(text, canaries=[CANARY_LISTEN])
    begun = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0 and time.monotonic() - begun < STOP_WITHIN


def test_exec_with_listen_supervises_and_is_ready_once_the_application_runs(
    tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    env = clean_env(DB_PASSWORD="initfetch+env://SRC", SRC=CANARY_LISTEN)
    app = ["sh", "-c", "echo started > started; exec sleep 60"]
    p = start(procs, ["exec", "--listen", f"127.0.0.1:{port}", "--", *app], env, tmp_path)
    wait_until(lambda: (tmp_path / "started").exists(), what="the application")
    wait_until(lambda: _answers(port), what="the listener")  # initfetch stayed: it supervises
    assert get(f"http://127.0.0.1:{port}/readyz") == (200, b"ready\n")
    text = get(f"http://127.0.0.1:{port}/metrics")[1].decode()
    assert metric(text, "initfetch_backend_up", '{provider="env"}') == 1
    assert_no_canary(text, canaries=[CANARY_LISTEN])
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 128 + signal.SIGTERM  # the application's status, mirrored


def test_notifications_and_restarts_are_counted(tmp_path: Path, procs: list[Proc]) -> None:
    write(tmp_path / "src/v", CANARY_LISTEN)
    done = tmp_path / "done"
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  v: {ref: 'file://src/v', refresh: 200ms}\nenv:\n  VAL: '{{ secrets.v }}'\n"
        f"on_change: {{grace: 5s, command: [sh, -c, 'echo x >> {done}; exit 3']}}\n",
    )
    port = free_port()
    app = ["sh", "-c", "echo started >> started; exec sleep 60"]
    args = ["exec", "--watch", "--listen", str(port), "--", *app]
    p = start(procs, args, clean_env(), tmp_path)
    wait_until(lambda: _answers(port), what="the listener")
    write(tmp_path / "src/v", CANARY_LISTEN2)  # VAL changes: a restart, then the command (exit 3)
    wait_until(lambda: done.exists(), what="the on_change command")
    base = f"http://127.0.0.1:{port}/metrics"

    def counted() -> bool:
        text = get(base)[1].decode()
        return metric(text, "initfetch_notifications_total", '{action="command",result="failed"}') == 1

    wait_until(counted, what="the command's result counted")
    text = get(base)[1].decode()
    assert metric(text, "initfetch_notifications_total", '{action="restart",result="ok"}') == 1
    assert metric(text, "initfetch_application_restarts_total") == 1
    assert_no_canary(text, canaries=[CANARY_LISTEN, CANARY_LISTEN2])
    p.stop()


# --- usage ------------------------------------------------------------------------------------------


def test_listen_usage_errors_are_one_line(tmp_path: Path) -> None:
    write(
        tmp_path / "initfetch.yaml", "version: 1\nsecrets:\n  a: env://A\nfiles:\n  - {secret: a, dest: a}\n"
    )
    env = clean_env(A=CANARY_LISTEN)
    base = ["render", "-o", str(tmp_path / "out"), "--allow-disk"]
    r = run_cli([*base, "--listen", "9090"], env=env, cwd=tmp_path)
    assert r.returncode == 2 and "needs render --watch or --hold" in r.stderr
    for bad, why in (("x:y", "is not PORT"), ("70000", "not between 1 and 65535"), ("host:80", "is not")):
        r = run_cli([*base, "--hold", "--listen", bad], env=env, cwd=tmp_path)
        assert r.returncode == 2 and why in r.stderr, r.stderr
        assert len([x for x in r.stderr.splitlines() if "error" in x]) <= 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        r = run_cli([*base, "--hold", "--listen", str(busy)], env=env, cwd=tmp_path)
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{busy}" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was resolved or written
    env_twin = clean_env(A=CANARY_LISTEN, INITFETCH_LISTEN="nope")
    r = run_cli([*base, "--hold"], env=env_twin, cwd=tmp_path)
    assert r.returncode == 2 and "INITFETCH_LISTEN" in r.stderr


def test_docs_list_every_metric() -> None:
    doc = (REPO / "docs/watch.md").read_text()
    missing = [name for name in METRICS if name not in doc]
    assert not missing, f"docs/watch.md does not list {missing}"
