"""`doctor`: for each provider instance the manifest uses, is its endpoint reachable (DNS,
TCP, TLS, HTTP status), does the login work and as whom, and can each referenced document
be read, with the one sentence to act on when it cannot.

Built from the pipeline in PREVIEW mode (nothing written; a lease a read creates is
revoked at once). Each document is read once, without the resolver's retries: doctor
says what happens now. Everything backend-specific is behind the Provider interface
(`endpoints`, `identity`, `diagnose`); reachability is generic over the endpoint URL.
A value is never printed: a read's value is only checked for the reference's `#key`
and registered with the redactor, which scrubs every line of the table too.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit

from initfetch.errors import EXIT_OK, Problem, ResolveFailed, SecretError
from initfetch.manifest import SecretSpec
from initfetch.pipeline import Pipeline
from initfetch.providers.base import Endpoint, FetchContext, Provider
from initfetch.redact import FIELD_MIN_LEN, Redactor
from initfetch.reference import DocKey
from initfetch.resolve.resolver import OPTIONAL_KINDS
from initfetch.resolve.values import select_key

log = logging.getLogger("initfetch")

HEADER = ("PROVIDER", "CHECK", "RESULT", "DETAIL")


@dataclass
class Table:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    failures: dict[str, tuple[str, Problem]] = field(default_factory=dict)  # as ResolveFailed takes them

    def add(self, provider: str, check: str, result: str, detail: str) -> None:
        self.rows.append((provider, check, result, detail))

    def fail(self, spec: SecretSpec, kind: str, line: str) -> None:
        self.failures[spec.name] = (kind, Problem(spec.loc, f"{spec.name}: {kind}: {spec.ref}: {line}"))

    @property
    def exit_code(self) -> int:
        """What `render` would exit with for these failures (errors.ResolveFailed)."""
        if not self.failures:
            return EXIT_OK
        problems = [p for _, p in self.failures.values()]
        return ResolveFailed(problems, failures=self.failures).exit_code


@dataclass(frozen=True)
class _Checking:
    """One provider instance being checked: where its rows go and its deadline."""

    table: Table
    label: str  # "vault (vault)": the instance and its type
    inst: Provider
    ctx: FetchContext
    redactor: Redactor

    def add(self, check: str, result: str, detail: str) -> None:
        self.table.add(self.label, check, result, detail)


def run(pipeline: Pipeline) -> Table:
    table = Table()
    manifest = pipeline.manifest
    for name, docs in _documents(pipeline).items():
        ctx = FetchContext(pipeline.settings.deadline, max_size=manifest.limits.secret_size)
        label = f"{name} ({manifest.providers[name].type})"
        c = _Checking(table, label, pipeline.resolver.instance(name), ctx, pipeline.redactor)
        for ep in c.inst.endpoints(list(docs)):
            ok, detail = reach(ep, max(0.5, min(10.0, ctx.remaining())))
            c.add(f"endpoint {ep.what}", "ok" if ok else "FAILED", detail)
        login = _login(c, list(docs))
        for doc, specs in docs.items():
            if login is None and doc.write is not None:  # a write acts (issues a certificate)
                for spec in specs:
                    c.add(spec.name, "skipped", f"{spec.ref}: a write-style secret; doctor never writes")
                continue
            if login is None:
                _read(c, doc, specs)
                continue
            for spec in specs:
                c.add(spec.name, "skipped", f"{spec.ref}: the login failed (above)")
                table.fail(spec, login.kind, str(login))
    return table


def _documents(pipeline: Pipeline) -> dict[str, dict[DocKey, list[SecretSpec]]]:
    """instance -> document -> the secrets that reference it, in manifest order."""
    out: dict[str, dict[DocKey, list[SecretSpec]]] = {}
    for spec in pipeline.manifest.secrets.values():
        if spec.ref is not None:
            out.setdefault(spec.ref.scheme, {}).setdefault(spec.ref.doc, []).append(spec)
    return out


def _login(c: _Checking, docs: list[DocKey]) -> SecretError | None:
    """The login row, with who it is; the login's error when it failed."""
    try:
        who = c.inst.identity(docs, c.ctx)
    except SecretError as e:
        c.add("login", "FAILED", c.inst.diagnose(None, e, c.ctx))
        return e
    if who:
        c.add("login", "ok", "; ".join(f"{k}: {v}" for k, v in who))
    return None


def _read(c: _Checking, doc: DocKey, specs: list[SecretSpec]) -> None:
    """Read one document once; one row per secret that references it."""
    try:
        document = c.inst.fetch(doc, c.ctx)
    except SecretError as e:
        _unread(c, doc, specs, e)
        return
    if document.lease is not None:  # a dynamic secret: doctor must not leave it valid
        try:
            c.inst.revoke(document.lease.id, c.ctx)
        except SecretError as e:
            log.warning("could not revoke lease %s (%s); it ends at its TTL", document.lease.id, e.kind)
    version = f" (version {document.version})" if document.version else ""
    for spec in specs:
        assert spec.ref is not None
        try:
            value = (
                select_key(document.value, spec.ref.key, str(spec.ref)) if spec.ref.key else document.value
            )
        except SecretError as e:
            if spec.optional and e.kind in OPTIONAL_KINDS:
                c.add(spec.name, "absent", f"{spec.ref}: optional; {e}")
            else:
                c.add(spec.name, e.kind, f"{spec.ref}: the document is readable{version}, but {e}")
                c.table.fail(spec, e.kind, str(e))
            continue
        c.redactor.add(value, spec.name)  # never printed; masked should any message quote it
        c.add(spec.name, "ok", f"{spec.ref}: readable{version}")


def _unread(c: _Checking, doc: DocKey, specs: list[SecretSpec], e: SecretError) -> None:
    """The rows of a document that could not be read: the sentence to act on, once."""
    sentence = c.inst.diagnose(doc, e, c.ctx)
    for spec in specs:
        if spec.optional and e.kind in OPTIONAL_KINDS:
            used = "default used" if spec.default is not None else "left out"
            c.add(spec.name, "absent", f"{spec.ref}: optional, {used}")
        else:
            c.add(spec.name, e.kind, f"{spec.ref}: {sentence}")
            c.table.fail(spec, e.kind, sentence)


# --- reachability ----------------------------------------------------------------------------


def reach(ep: Endpoint, timeout: float) -> tuple[bool, str]:
    """DNS, TCP, TLS and an HTTP status for one endpoint; (reachable, what was seen), one line."""
    u = urlsplit(ep.url)
    host, https = u.hostname or "", u.scheme == "https"
    port = u.port or (443 if https else 80)
    seen: list[str] = []
    try:
        addrs = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        return False, f"{ep.url}: DNS: {host} does not resolve ({_reason(e)})"
    seen.append(f"DNS {addrs[0][4][0]}")
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return (
            False,
            f"{ep.url}: {', '.join(seen)}; TCP to port {port} failed ({_reason(e)}){_proxied(https)}",
        )
    seen.append("TCP ok")
    with sock:
        if https:
            try:
                sock = _tls(ep, host).wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, OSError) as e:
                return False, f"{ep.url}: {', '.join(seen)}; TLS failed ({_reason(e)}){_ca_hint(ep, e)}"
            seen.append("TLS ok" if ep.verify else "TLS (not verified)")
        status = _status(sock, host, ep.path, timeout)
    seen.append(status)
    return not status.startswith("no HTTP"), f"{ep.url}: {', '.join(seen)}"


def _proxied(https: bool) -> str:
    """A note when the client libraries would go through a proxy: this check connects directly."""
    names = ("HTTPS_PROXY", "https_proxy") if https else ("HTTP_PROXY", "http_proxy")
    proxy = next((n for n in names if os.environ.get(n)), None)
    return f"; checked directly, but {proxy} is set: the clients go through that proxy" if proxy else ""


def _tls(ep: Endpoint, host: str) -> ssl.SSLContext:
    if not ep.verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ep.ca_file:
        if os.path.isdir(ep.ca_file):
            return ssl.create_default_context(capath=ep.ca_file)
        return ssl.create_default_context(cafile=ep.ca_file)
    try:
        import certifi  # what requests (hvac, azure-core) verifies against by default
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _ca_hint(ep: Endpoint, e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return f": the server's certificate is not trusted here; give initfetch its CA ({ep.ca_setting})"
    return ""


def _status(sock: socket.socket, host: str, path: str, timeout: float) -> str:
    """The HTTP status of a GET of `path` over the open connection."""
    conn = http.client.HTTPConnection(host, timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", path, headers={"User-Agent": "initfetch-doctor"})
        response = conn.getresponse()
        return f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as e:
        return f"no HTTP answer ({_reason(e)})"
    finally:
        conn.sock = None


def _reason(e: BaseException) -> str:
    text = getattr(e, "reason", None) or getattr(e, "strerror", None) or type(e).__name__
    return " ".join(str(text).split())[:200]


# --- the table -------------------------------------------------------------------------------


def show(out: TextIO, table: Table, scrub: Redactor) -> None:
    """The table: columns padded to their widest cell, the last one as it is; every line
    through the redactor (`scrub`)."""
    rows = [HEADER, *table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for line in _lines(rows, widths):
        out.write(scrub.scrub(line, FIELD_MIN_LEN) + "\n")


def _lines(rows: Sequence[tuple[str, ...]], widths: Sequence[int]) -> Iterator[str]:
    for row in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]


def failed(table: Table) -> int:
    """Rows that did not pass (an endpoint check can fail while every read works: a proxy)."""
    return sum(1 for r in table.rows if r[2] not in ("ok", "absent"))


def summary(table: Table) -> str:
    if not failed(table):
        return f"doctor: every check passed ({len(table.rows)} rows)"
    return f"doctor: {failed(table)} check(s) failed: see the table"
