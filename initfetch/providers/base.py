"""The one small interface every provider implements.

A provider instance is one configured backend (a Vault cluster, an AWS account
and region, a Key Vault credential). It reads *documents*: a `DocKey` (path +
version query) maps to one `Document`. Key selection (`#key`, `#/a/b`),
optional/default, retries and the deadline are the resolver's job, so a
provider only has to turn one read into a `Document` or a `SecretError`.

Provider modules must not import their SDK at module level: `check` and
`preview --offline` load provider classes to validate options and references
without paying for (or requiring) hvac, boto3 or azure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from initfetch.errors import NotRenewable, SecretError
from initfetch.limits import Limits
from initfetch.reference import DocKey, Reference


@dataclass(frozen=True)
class Lease:
    """A dynamic secret's lease (Vault); never contains the secret itself."""

    id: str
    duration: int  # seconds left
    renewable: bool
    # The whole validity, when the secret says it (a certificate: notAfter - notBefore). The
    # watcher then replaces it at about two thirds of that, counted from its start, not from
    # when it was read.
    validity: int = 0
    # Whether a replaced one is revoked after on_change.revoke_grace (a certificate: only when
    # the manifest asks). A preview and --revoke-on-exit revoke it regardless.
    retire: bool = True
    # Whether it stays valid when the login that made it ends (a certificate without a Vault
    # lease): a new login then does not make the watcher read it again.
    outlives_login: bool = False


@dataclass
class Document:
    """What one read returned.

    `value` is str, bytes, or a JSON-like structure (dict/list/scalars).
    `version` and `metadata` are non-secret facts that end up in the audit log,
    the completion marker and the template `meta` object.
    """

    value: Any
    version: str | None = None
    lease: Lease | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Top-level keys of a mapping value that are not secret (a certificate, its serial): the
    # redactor leaves them out, so logs can name a serial. Selected with #key, a value is
    # masked like any other.
    public: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FetchContext:
    """Per-run limits a provider must respect: no single call may outlive the deadline, and
    nothing waits on once `stop` is set (a watcher told to stop)."""

    deadline: float  # time.monotonic() value
    max_size: int = Limits().secret_size  # bytes one document may have (limits.secret_size)
    stop: threading.Event | None = None

    def remaining(self) -> float:
        if self.stop is not None and self.stop.is_set():
            return 0.0
        return self.deadline - time.monotonic()

    @property
    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def timeout(self, cap: float = 10.0) -> float:
        """A per-request timeout: at most `cap`, never past the deadline."""
        return max(0.05, min(cap, self.remaining()))


@dataclass(frozen=True)
class Endpoint:
    """A URL an instance talks to, for `doctor`'s reachability check (DNS, TCP, TLS, HTTP)."""

    url: str
    what: str  # how the table names it: "Vault", "Secrets Manager", "Key Vault myvault"
    ca_file: str | None = None  # a private CA (None: the system's)
    verify: bool = True  # TLS verification (off only where the manifest turned it off)
    path: str = "/"  # what to GET for an HTTP status: a health endpoint where there is one
    ca_setting: str = "ca_file"  # how the user gives this instance a private CA, for the hint


Identity = list[tuple[str, str]]  # who an instance is logged in as: (what, value), never a credential


# Options every provider instance takes, besides its type's own (`type` and
# `keep_credentials` are the manifest loader's): the ceiling of requests in flight.
COMMON_OPTIONS: Mapping[str, type] = {"concurrency": int}
MAX_CONCURRENCY = 1024

# What a provider's `check_options` returns: the key path inside the provider's
# options (e.g. ("auth", "method")) and a one-line message.
OptionProblem = tuple[tuple[str, ...], str]


class Provider:
    """Base class; subclasses set the class attributes and implement `fetch`."""

    type_name: ClassVar[str] = ""
    # Top-level option name -> accepted Python type(s). `type` and `keep_credentials`
    # are handled by the manifest loader and need not be listed.
    OPTIONS: ClassVar[Mapping[str, type | tuple[type, ...]]] = {}
    # Requests in flight to one instance unless the manifest sets `concurrency:`. The
    # resolver lowers it on throttling (initfetch.pacing) and never exceeds it.
    default_concurrency: ClassVar[int] = 16
    # >1: the resolver hands `fetch_many` up to this many documents at once.
    batch_size: ClassVar[int] = 1
    # How log lines name the backend and the login it holds ("Vault", "Vault token").
    backend_name: ClassVar[str] = ""
    login_name: ClassVar[str] = "login"
    # Whether references may be write-style (`write:` in the manifest): the document is
    # produced by a write (a PKI certificate), which `fetch` must never repeat blindly.
    writes: ClassVar[bool] = False

    def __init__(self, name: str, options: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self.name = name
        self.options = {k: v for k, v in options.items() if k not in COMMON_OPTIONS}
        self.environ = environ
        self.concurrency = int(options.get("concurrency") or self.default_concurrency)

    # --- offline validation (used by `check`; must not touch the network) ---

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> Iterable[OptionProblem]:
        """Problems with this instance's manifest options. The default checks names and types."""
        for key, value in options.items():
            expected = cls.OPTIONS.get(key) or COMMON_OPTIONS.get(key)
            if key == "concurrency" and type(value) is int and not 1 <= value <= MAX_CONCURRENCY:
                yield (key,), f"concurrency must be between 1 and {MAX_CONCURRENCY}"
            if expected is None:
                known = ", ".join(sorted(cls.OPTIONS)) or "none"
                yield (key,), f"unknown option '{key}' for a {cls.type_name} provider (known: {known})"
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                yield (key,), f"option '{key}' must be {_type_names(expected)}"

    @classmethod
    def check_reference(cls, ref: Reference) -> str | None:
        """A one-line problem with this reference's path or query, or None."""
        return None

    # --- fetching ---

    def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
        """Read one document or raise a `SecretError` subclass."""
        raise NotImplementedError

    def fetch_many(self, docs: Sequence[DocKey], ctx: FetchContext) -> dict[DocKey, Document | SecretError]:
        """Read several documents. Per-document failures are returned, not raised;
        raise only for a failure of the whole call (it is then retried as a whole
        if transient). The default reads one at a time."""
        out: dict[DocKey, Document | SecretError] = {}
        for doc in docs:
            try:
                out[doc] = self.fetch(doc, ctx)
            except SecretError as e:
                out[doc] = e
        return out

    # --- leases and the login (watch mode, preview): a backend without leases keeps the defaults ---

    def renew(self, lease: Lease, ctx: FetchContext) -> Lease:
        """Extend a lease a read returned, asking for its first duration again; the grant may be
        shorter (a max TTL). Raises a SecretError; a permanent one means: replace the secret."""
        raise NotRenewable(f"a {self.type_name} provider has no leases to renew")

    def revoke(self, lease_id: str, ctx: FetchContext) -> None:
        """End a lease a read returned, before its TTL."""

    @property
    def login_generation(self) -> int:
        """Counts the logins this instance made. When it changes, every lease the old login
        held may be gone with it (a revoked Vault token revokes its leases): a watcher reads
        those secrets again."""
        return 0

    def login_lease(self, ctx: FetchContext) -> Lease | None:
        """The login this instance holds, as a lease to keep alive; None: nothing expires."""
        return None

    def renew_login(self, lease: Lease, ctx: FetchContext) -> Lease:
        raise NotRenewable(f"a {self.type_name} provider has no login to renew")

    def can_login_again(self) -> bool:
        """Whether a new login can replace one that ends (a token given as is cannot)."""
        return False

    def login_again(self, ctx: FetchContext) -> Lease | None:
        """Drop the current login and log in afresh; the new login's lease."""
        return None

    def owns_login(self) -> bool:
        """Whether this instance made its login itself (it may then revoke it on exit)."""
        return False

    def revoke_login(self, ctx: FetchContext) -> None:
        """Revoke the login this instance made (and, in Vault, every lease it created)."""

    def unreachable_hint(self) -> str | None:
        """What to check when this instance did not answer until the deadline, as one clause that
        starts with a verb ("check VAULT_ADDR=..."): where its address came from, whether the
        server is up, TLS.
        None: nothing to add (a local file, an environment variable)."""
        return None

    # --- doctor: where it connects, who it is, what a failure means ---

    def endpoints(self, docs: Sequence[DocKey]) -> list[Endpoint]:
        """The URLs this instance would talk to for `docs`; [] for a local source."""
        return []

    def identity(self, docs: Sequence[DocKey], ctx: FetchContext) -> Identity:
        """Log in and say as whom, without a secret (a token's name and policies, an ARN, a
        tenant and object id). Raises a SecretError when the login fails."""
        return []

    def diagnose(self, doc: DocKey | None, error: SecretError, ctx: FetchContext) -> str:
        """One sentence the user can act on for `error` (reading `doc`, or logging in when None):
        which policy, permission or setting is missing. May ask the backend (never for a value)."""
        return str(error)

    def credential_env(self) -> set[str]:
        """Names of environment variables this instance used to log in.

        `exec` removes them from the application's environment unless the
        instance sets `keep_credentials: true`.
        """
        return set()

    def close(self) -> None:
        """Release clients and connections."""


def _type_names(expected: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", dict: "a mapping", list: "a list"}
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(names.get(t, t.__name__) for t in types)
