"""Resolver behaviour with scripted providers behind the real provider interface:
one read per document, batching, retries within the deadline, hangs, aggregation.
(Real SDKs over real HTTP are tested in the provider suites.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from initfetch import providers
from initfetch.errors import (
    EXIT_UNAVAILABLE,
    EXIT_UNRESOLVED,
    NotFound,
    ResolveFailed,
    SecretError,
    Unavailable,
)
from initfetch.manifest import load_manifest
from initfetch.providers.base import Document, FetchContext, Provider
from initfetch.redact import Redactor
from initfetch.reference import DocKey
from initfetch.resolve.resolver import Resolver
from initfetch.resolve.values import select_key
from tests.helpers import write


class Scripted(Provider):
    """Serves documents from a class-level script; counts reads."""

    type_name = "scripted"
    OPTIONS: ClassVar = {"fail_times": int, "hang": bool}
    reads: ClassVar[list[str]] = []
    batches: ClassVar[list[int]] = []
    attempts: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()
    in_flight = 0
    max_in_flight = 0
    default_concurrency = 2

    def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
        with self.lock:
            Scripted.in_flight += 1
            Scripted.max_in_flight = max(Scripted.max_in_flight, Scripted.in_flight)
            Scripted.reads.append(str(doc))
            n = Scripted.attempts[str(doc)] = Scripted.attempts.get(str(doc), 0) + 1
        try:
            time.sleep(0.02)
            if self.options.get("hang"):
                time.sleep(3600)
            if n <= self.options.get("fail_times", 0):
                raise Unavailable("connection refused")
            if doc.path.startswith("missing"):
                raise NotFound(f"no secret at {doc.path}")
            return Document(
                {"user": "u-" + doc.path, "password": "p-" + doc.path}, version=doc.param("version", "1")
            )
        finally:
            with self.lock:
                Scripted.in_flight -= 1


class Batched(Scripted):
    type_name = "batched"
    batch_size = 3

    def fetch_many(self, docs: Sequence[DocKey], ctx: FetchContext) -> dict[DocKey, Document | SecretError]:
        Scripted.batches.append(len(docs))
        return super().fetch_many(docs, ctx)


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(providers.TYPES, "scripted", providers.ProviderType(f"{__name__}:Scripted"))
    monkeypatch.setitem(providers.TYPES, "batched", providers.ProviderType(f"{__name__}:Batched"))
    Scripted.reads, Scripted.batches, Scripted.attempts = [], [], {}
    Scripted.in_flight = Scripted.max_in_flight = 0


def resolve(tmp_path: Path, body: str, timeout: float = 10) -> Any:
    write(tmp_path / "m.yaml", "version: 1\n" + body)
    manifest = load_manifest(tmp_path / "m.yaml", {})
    return Resolver(manifest, {}, Redactor(), timeout=timeout).resolve()


def test_one_read_per_document(tmp_path: Path) -> None:
    res = resolve(
        tmp_path,
        """\
providers:
  s: {type: scripted}
secrets:
  user: s://db/creds#user
  pass: s://db/creds#password
  whole: s://db/creds
  other: s://db/creds?version=2#user
""",
    )
    assert sorted(Scripted.reads) == ["db/creds", "db/creds?version=2"]
    assert res.values["user"] == "u-db/creds" and res.values["pass"] == "p-db/creds"
    assert res.values["whole"] == {"user": "u-db/creds", "password": "p-db/creds"}
    assert res.info["user"].shared_read and not res.info["other"].shared_read
    assert res.info["other"].version == "2"


def test_concurrency_is_bounded_per_instance(tmp_path: Path) -> None:
    body = "providers:\n  s: {type: scripted}\nsecrets:\n" + "".join(
        f"  x{i}: s://doc{i}#user\n" for i in range(10)
    )
    resolve(tmp_path, body)
    assert len(Scripted.reads) == 10
    assert 1 < Scripted.max_in_flight <= Scripted.default_concurrency


def test_batches(tmp_path: Path) -> None:
    body = "providers:\n  b: {type: batched}\nsecrets:\n" + "".join(
        f"  x{i}: b://doc{i}#user\n" for i in range(7)
    )
    res = resolve(tmp_path, body)
    assert sorted(Scripted.batches) == [1, 3, 3]
    assert res.values["x6"] == "u-doc6"


def test_transient_errors_are_retried_until_success(tmp_path: Path) -> None:
    res = resolve(tmp_path, "providers:\n  s: {type: scripted, fail_times: 3}\nsecrets:\n  a: s://doc#user\n")
    assert res.values["a"] == "u-doc"
    assert Scripted.attempts["doc"] == 4


def test_transient_errors_until_deadline_is_exit_4(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ResolveFailed) as e:
        resolve(
            tmp_path,
            "providers:\n  s: {type: scripted, fail_times: 1000}\nsecrets:\n  a: s://doc#user\n",
            timeout=1.5,
        )
    assert e.value.exit_code == EXIT_UNAVAILABLE
    assert time.monotonic() - start < 4
    assert "a: unavailable" in str(e.value) and Scripted.attempts["doc"] > 2


def test_hang_ends_at_the_deadline(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ResolveFailed) as e:
        resolve(
            tmp_path,
            "providers:\n  s: {type: scripted, hang: true}\nsecrets:\n  a: s://doc#user\n",
            timeout=1,
        )
    assert time.monotonic() - start < 3
    assert e.value.exit_code == EXIT_UNAVAILABLE and "deadline" in str(e.value)


def test_permanent_errors_fail_at_once_and_all_are_reported(tmp_path: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ResolveFailed) as e:
        resolve(
            tmp_path,
            """\
providers:
  s: {type: scripted}
secrets:
  ok: s://doc#user
  gone: s://missing/one#user
  nokey: s://doc#nope
""",
        )
    assert time.monotonic() - start < 2
    assert e.value.exit_code == EXIT_UNRESOLVED
    text = str(e.value)
    assert "m.yaml:6:3: gone: not-found" in text and "m.yaml:7:3: nokey: missing-key" in text
    assert Scripted.attempts["missing/one"] == 1  # not retried


def test_select_key_messages() -> None:
    assert select_key('{"a": {"b": [1, 2]}}', ("a", "b", "1"), "r") == 2
    with pytest.raises(SecretError, match="not JSON"):
        select_key("plain", ("a",), "r")
    with pytest.raises(SecretError, match=r"no key 'c' under 'a' \(keys there: b\)"):
        select_key({"a": {"b": 1}}, ("a", "c"), "r")
    with pytest.raises(SecretError, match="binary"):
        select_key(b"\xff\xfe", ("a",), "r")
