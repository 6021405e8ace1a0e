"""`exec --mask-output`: the application's stdout and stderr with every value masked.

The masker on its own (any split of the output, binary data, a rotation), then the real
CLI against a real OpenBao with real processes: forms, values split between writes,
line latency, binary data, stdin, signals and the exit code, and a rotation under
`exec --watch` that masks the new value and still the old one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.backends.openbao as openbao_backend
from initfetch.mask import RedactorNeedles, StreamMasker
from initfetch.redact import Redactor
from tests.backends.openbao import OpenBao
from tests.helpers import assert_no_canary, clean_env, write

openbao = openbao_backend.openbao

CANARY_MASK = 'CANARY-mask/3f9e!"x y'  # JSON, URL and base64 forms all differ from it
CANARY_MASK_V2 = "CANARY-mask-rotated-77c1"
CANARY_MASK_OTHER = "CANARY-mask-other-41d0"
CANARIES = (CANARY_MASK, CANARY_MASK_V2, CANARY_MASK_OTHER)


def forms(value: str) -> list[bytes]:
    data = value.encode()
    return [data, json.dumps(value)[1:-1].encode(), base64.b64encode(data), quote(value, safe="").encode()]


# --- the masker ------------------------------------------------------------------------------


def masker_for(*values: str) -> tuple[Redactor, StreamMasker]:
    redactor = Redactor()
    for i, value in enumerate(values):
        redactor.add(value, f"s{i}")
    return redactor, StreamMasker(RedactorNeedles(redactor))


def stream(masker: StreamMasker, data: bytes, cuts: list[int]) -> bytes:
    out, pos = [], 0
    for cut in [*sorted(cuts), len(data)]:
        out.append(masker.feed(data[pos:cut]))
        pos = max(pos, cut)
    out.append(masker.flush())
    return b"".join(out)


pieces = st.lists(
    st.sampled_from([*forms(CANARY_MASK), *forms(CANARY_MASK_OTHER), b"\n", b"CANARY-", b"\x00\xff"])
    | st.binary(max_size=40),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(pieces, st.lists(st.integers(0, 400), max_size=8))
def test_any_split_masks_as_the_whole_does(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    whole = stream(masker_for(CANARY_MASK, CANARY_MASK_OTHER)[1], data, [])
    split = stream(masker_for(CANARY_MASK, CANARY_MASK_OTHER)[1], data, [c for c in cuts if c <= len(data)])
    assert split == whole
    for value in (CANARY_MASK, CANARY_MASK_OTHER):
        for form in forms(value):
            assert form not in split


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=8))
def test_binary_without_values_passes_byte_for_byte(data: bytes, cuts: list[int]) -> None:
    _, masker = masker_for(CANARY_MASK)
    assert stream(masker, data, [c for c in cuts if c <= len(data)]) == data


def test_only_a_possible_start_of_a_value_is_held() -> None:
    _, masker = masker_for(CANARY_MASK)
    assert masker.feed(b"line one\nline two\n") == b"line one\nline two\n"  # nothing held
    assert masker.feed(b"token: CANARY-ma") == b"token: "
    assert masker.held == b"CANARY-ma"
    assert masker.feed(b'sk/3f9e!"x y and more\n') == b"<secret:s0> and more\n"
    assert masker.feed(b"CANARY-nope\n") == b"CANARY-nope\n"


def test_after_a_rotation_new_and_previous_values_are_masked() -> None:
    redactor, masker = masker_for(CANARY_MASK)
    assert masker.feed(f"{CANARY_MASK}\n".encode()) == b"<secret:s0>\n"
    redactor.add(CANARY_MASK_V2, "s0")  # the watcher: the new value, then retire(current + previous)
    redactor.retire([CANARY_MASK_V2, CANARY_MASK])
    assert masker.feed(f"{CANARY_MASK_V2} {CANARY_MASK}\n".encode()) == b"<secret:s0> <secret:s0>\n"
    redactor.add(CANARY_MASK_OTHER, "s0")  # one more rotation: the oldest generation is forgotten
    redactor.retire([CANARY_MASK_OTHER, CANARY_MASK_V2])
    out = masker.feed(f"{CANARY_MASK_OTHER} {CANARY_MASK_V2}\n".encode())
    assert out == b"<secret:s0> <secret:s0>\n"


# --- the command, with real processes and a real OpenBao -----------------------------------


@pytest.fixture(scope="module")
def vault(openbao: OpenBao) -> OpenBao:
    openbao.client().secrets.kv.v2.create_or_update_secret(
        "mask/app", {"password": CANARY_MASK, "other": CANARY_MASK_OTHER}
    )
    return openbao


MANIFEST = """\
version: 1
secrets:
  db: vault://secret/mask/app#password
env:
  DB: "{{ secrets.db }}"
"""

FORMS_CHILD = r"""
import base64, json, os, sys, time, urllib.parse
v = os.environ["DB"]
def w(stream, data):
    stream.buffer.write(data)
    stream.buffer.flush()
w(sys.stdout, b"raw " + v.encode() + b"\n")
w(sys.stdout, b"b64 " + base64.b64encode(v.encode()) + b"\n")
w(sys.stdout, b"json " + json.dumps({"p": v}).encode() + b"\n")
w(sys.stdout, b"url " + urllib.parse.quote(v, safe="").encode() + b"\n")
half = len(v) // 2
w(sys.stdout, b"split " + v[:half].encode()); time.sleep(0.01); w(sys.stdout, v[half:].encode() + b" end\n")
w(sys.stdout, b"slow " + v[:half].encode()); time.sleep(0.3); w(sys.stdout, v[half:].encode() + b" end\n")
w(sys.stdout, bytes(range(256)) * 64 + b"\n")
w(sys.stderr, b"err " + v.encode() + b"\n")
sys.exit(7)
"""


def env_for(server: OpenBao, tmp_path: Path, **extra: str) -> dict[str, str]:
    return clean_env(VAULT_ADDR=server.url, VAULT_TOKEN=server.root_token, HOME=str(tmp_path), **extra)


def initfetch(tmp_path: Path, env: dict[str, str], *args: str, **popen: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "initfetch", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def test_every_form_split_binary_and_the_exit_code(vault: OpenBao, tmp_path: Path) -> None:
    write(tmp_path / "initfetch.yaml", MANIFEST)
    write(tmp_path / "child.py", FORMS_CHILD)
    proc = initfetch(
        tmp_path, env_for(vault, tmp_path), "exec", "--mask-output", "--", sys.executable, "child.py"
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    m = b"<secret:db>"
    binary = bytes(range(256)) * 64 + b"\n"
    assert out == (
        b"raw " + m + b"\nb64 " + m + b'\njson {"p": "' + m + b'"}\nurl ' + m + b"\n"
        b"split " + m + b" end\nslow " + m + b" end\n" + binary
    )
    assert hashlib.sha256(out[-len(binary) :]).digest() == hashlib.sha256(binary).digest()
    assert b"err " + m + b"\n" in err
    assert_no_canary(out, err, canaries=CANARIES)


def test_the_manifest_and_the_variable_turn_it_on_and_it_is_off_by_default(
    vault: OpenBao, tmp_path: Path
) -> None:
    child = [sys.executable, "-c", "import os; print(os.environ['DB'])"]
    other = MANIFEST.replace("#password", "#other")
    write(tmp_path / "initfetch.yaml", other + "mask_output: true\n")
    env = env_for(vault, tmp_path)
    out, _ = initfetch(tmp_path, env, "exec", "--mask-output", "--", *child).communicate(timeout=60)
    assert out == b"<secret:db>\n"
    proc = subprocess.run(  # the manifest alone (the leak check skips this stdout: it is checked here)
        [sys.executable, "-m", "initfetch", "exec", "--", *child], env=env, cwd=tmp_path, capture_output=True
    )
    assert proc.stdout == b"<secret:db>\n", proc.stderr
    write(tmp_path / "initfetch.yaml", other)
    proc = subprocess.run(
        [sys.executable, "-m", "initfetch", "exec", "--", *child],
        env={**env, "INITFETCH_MASK_OUTPUT": "1"},
        cwd=tmp_path,
        capture_output=True,
    )
    assert proc.stdout == b"<secret:db>\n", proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "initfetch", "exec", "--", *child], env=env, cwd=tmp_path, capture_output=True
    )
    assert proc.stdout == CANARY_MASK_OTHER.encode() + b"\n"  # off: the application's output as it is
    write(tmp_path / "initfetch.yaml", other + "mask_output: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "initfetch", "check"], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "mask_output must be true or false" in proc.stderr


def read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    """What the process printed until `needle`, reading as it comes (never waiting for the exit)."""
    assert proc.stdout is not None
    got, end = b"", time.monotonic() + timeout
    while needle not in got:
        left = end - time.monotonic()
        assert left > 0, f"{needle!r} did not come within {timeout}s; got {got!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the output ended before {needle!r}; got {got!r}"
            got += chunk
    return got


INTERACTIVE_CHILD = r"""
import os, pathlib, signal, sys, time
def stop(signum, frame):
    print("stopping on", signal.Signals(signum).name, flush=True)
    sys.exit(42)
signal.signal(signal.SIGTERM, stop)
line = sys.stdin.readline().strip()
print("got", line, flush=True)
print("waiting", flush=True)
time.sleep(60)
"""


def test_lines_come_at_once_stdin_signals_and_exit_code_are_the_applications(
    vault: OpenBao, tmp_path: Path
) -> None:
    write(tmp_path / "initfetch.yaml", MANIFEST)
    write(tmp_path / "child.py", INTERACTIVE_CHILD)
    proc = initfetch(
        tmp_path,
        env_for(vault, tmp_path),
        "exec",
        "--mask-output",
        "--",
        sys.executable,
        "child.py",
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(CANARY_MASK.encode() + b"\n")  # the application's stdin is its own
    proc.stdin.flush()
    # Each line while the application still runs: nothing waits for its exit or a full buffer.
    got = read_until(proc, b"waiting\n", timeout=20)
    assert got == b"got <secret:db>\nwaiting\n"
    proc.send_signal(signal.SIGTERM)  # forwarded, as --supervise does
    rest, err = proc.communicate(timeout=20)
    assert proc.returncode == 42, err
    assert rest == b"stopping on SIGTERM\n"
    assert_no_canary(got, rest, err, canaries=CANARIES)


ROTATING_CHILD = r"""
import pathlib, signal, sys, time
here = pathlib.Path(sys.argv[1])
current = (here / "out/db.txt").read_text()
def rotated(signum, frame):
    global current
    previous, current = current, (here / "out/db.txt").read_text()
    print("now", current, "was", previous, flush=True)
    (here / "rotated").write_text("yes")
signal.signal(signal.SIGHUP, rotated)
print("started", current, flush=True)
(here / "started").write_text("yes")
while True:
    time.sleep(0.1)
"""


def wait_for(path: Path, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path.name} never appeared"
        time.sleep(0.05)


def test_watch_masks_the_new_value_and_still_the_old_one(vault: OpenBao, tmp_path: Path) -> None:
    kv2 = vault.client().secrets.kv.v2
    kv2.create_or_update_secret("mask/rot", {"password": CANARY_MASK})
    write(
        tmp_path / "initfetch.yaml",
        "version: 1\nsecrets:\n  db: {ref: vault://secret/mask/rot#password, refresh: 200ms}\n"
        "files:\n  - {secret: db, dest: db.txt}\non_change: {signal: HUP}\n",
    )
    write(tmp_path / "child.py", ROTATING_CHILD)
    proc = initfetch(
        tmp_path,
        env_for(vault, tmp_path),
        "exec",
        "--watch",
        "--mask-output",
        "-o",
        "out",
        "--allow-disk",
        "--",
        sys.executable,
        "child.py",
        str(tmp_path),
    )
    try:
        wait_for(tmp_path / "started", 30)
        kv2.create_or_update_secret("mask/rot", {"password": CANARY_MASK_V2})
        wait_for(tmp_path / "rotated", 30)
        assert (tmp_path / "out/db.txt").read_text() == CANARY_MASK_V2  # it did rotate
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert out == b"started <secret:db>\nnow <secret:db> was <secret:db>\n", err
    assert proc.returncode == 128 + signal.SIGTERM
    assert_no_canary(out, err, canaries=CANARIES)
