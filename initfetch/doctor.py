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


def run(pipeline: Pipeline) -> Table:
    table = Table()
    deadline = pipeline.settings.deadline
    for name, docs in _documents(pipeline).items():
        ctx = FetchContext(deadline, max_size=pipeline.manifest.limits.secret_size)
        inst = pipeline.resolver.instance(name)
        label = f"{name} ({pipeline.manifest.providers[name].type})"
        for ep in inst.endpoints(list(docs)):
            ok, detail = reach(ep, max(0.5, min(10.0, ctx.remaining())))
            table.add(label, f"endpoint {ep.what}", "ok" if ok else "FAILED", detail)
        login = _login(table, label, inst, list(docs), ctx)
        for doc, specs in docs.items():
            if login is not None:
                for spec in specs:
                    table.add(label, spec.name, "skipped", f"{spec.ref}: the login failed (above)")
                    table.fail(spec, login.kind, str(login))
                continue
            _read(pipeline, table, label, inst, (doc, specs), ctx)
    return table


def _documents(pipeline: Pipeline) -> dict[str, dict[DocKey, list[SecretSpec]]]:
    """instance -> document -> the secrets that reference it, in manifest order."""
    out: dict[str, dict[DocKey, list[SecretSpec]]] = {}
    for spec in pipeline.manifest.secrets.values():
        if spec.ref is not None:
            out.setdefault(spec.ref.scheme, {}).setdefault(spec.ref.doc, []).append(spec)
    return out


def _login(
    table: Table, label: str, inst: Provider, docs: list[DocKey], ctx: FetchContext
) -> SecretError | None:
    """The login row (and identity rows); the login's error when it failed."""
    try:
        who = inst.identity(docs, ctx)
    except SecretError as e:
        table.add(label, "login", "FAILED", inst.diagnose(None, e, ctx))
        return e
    if who:
        table.add(label, "login", "ok", "; ".join(f"{k}: {v}" for k, v in who))
    return None


def _read(
    pipeline: Pipeline,
    table: Table,
    label: str,
    inst: Provider,
    item: tuple[DocKey, list[SecretSpec]],
    ctx: FetchContext,
) -> None:
    """Read one document once; one row per secret that references it."""
    doc, specs = item
    try:
        document = inst.fetch(doc, ctx)
    except SecretError as e:
        sentence = inst.diagnose(doc, e, ctx)
        for spec in specs:
            if spec.optional and e.kind in OPTIONAL_KINDS:
                table.add(
                    label,
                    spec.name,
                    "absent",
                    f"{spec.ref}: optional, {'default used' if spec.default is not None else 'left out'}",
                )
            else:
                table.add(label, spec.name, e.kind, f"{spec.ref}: {sentence}")
                table.fail(spec, e.kind, sentence)
        return
    if document.lease is not None:  # a dynamic secret: doctor must not leave it valid
        try:
            inst.revoke(document.lease.id, ctx)
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
                table.add(label, spec.name, "absent", f"{spec.ref}: optional; {e}")
                continue
            table.add(label, spec.name, e.kind, f"{spec.ref}: the document is readable{version}, but {e}")
            table.fail(spec, e.kind, str(e))
            continue
        pipeline.redactor.add(value, spec.name)
        table.add(label, spec.name, "ok", f"{spec.ref}: readable{version}")


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
        return False, f"{ep.url}: {', '.join(seen)}; TCP to port {port} failed ({_reason(e)})"
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
        return ": the server's certificate is not trusted here; give the provider its CA (ca_file)"
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


def summary(table: Table) -> str:
    failed = sum(1 for r in table.rows if r[2] not in ("ok", "absent"))
    if not failed:
        return f"doctor: every check passed ({len(table.rows)} rows)"
    return f"doctor: {failed} check(s) failed: see the table"
