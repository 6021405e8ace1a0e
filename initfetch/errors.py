"""The exception hierarchy and the exit codes of the contract.

Two families:
- `InitfetchError`: ends the run; carries the documented exit code and one or
  more one-line problems, each with the place it came from.
- `SecretError`: raised by a provider for one document or key; the resolver
  collects them and turns them into a single `ResolveFailed`.

No message built here may contain a secret value: messages name references,
paths and classes, never what was read.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

EXIT_OK = 0
EXIT_NOT_READY = 1  # healthcheck: no complete render yet
EXIT_BAD_INPUT = 2
EXIT_UNRESOLVED = 3
EXIT_UNAVAILABLE = 4
EXIT_WRITE = 5


# What error text may quote from the manifest: short, printable, identifier-like tokens
# (a key such as `secretz`, a scheme, a variable name). Anything else could be a
# pasted secret or a password hash, and is described by its length only.
_QUOTABLE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")


def shown(text: object) -> str:
    """`'token'` for a short identifier-like token, else `(not shown: N characters)`."""
    s = text if isinstance(text, str) else str(text)
    if _QUOTABLE.match(s):
        return f"'{s}'"
    return f"(not shown: {len(s)} characters)"


@dataclass(frozen=True)
class Loc:
    """Where something came from: a file and a 1-based line and column."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}:{self.col}" if self.col else f"{self.file}:{self.line}"


class ProblemKind(enum.Enum):
    """What sort of problem a line reports, so callers filter by kind, never by message text."""

    GENERAL = "general"
    SYNTAX = "syntax"  # a template does not parse
    UNDEFINED = "undefined"  # a name, key or secret that does not exist
    NOT_ALLOWED = "not-allowed"  # the sandbox refuses an attribute or call
    NESTING = "nesting"  # nested or recursing too deeply
    MISSING_INCLUDE = "missing-include"  # an include or import names no template
    LIMIT = "limit"  # output size, memory or time
    VALUE = "value"  # depends on the values (a decoding, a value no output can hold)


# What a render with placeholders can find whatever the values are (`check`).
STATIC_KINDS = frozenset(
    {
        ProblemKind.SYNTAX,
        ProblemKind.UNDEFINED,
        ProblemKind.NOT_ALLOWED,
        ProblemKind.NESTING,
        ProblemKind.MISSING_INCLUDE,
    }
)


@dataclass(frozen=True)
class Problem:
    """One line of a report: where, and what is wrong there."""

    where: Loc | str | None
    message: str
    kind: ProblemKind = ProblemKind.GENERAL

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class InitfetchError(Exception):
    """Ends the run with `exit_code`; `problems` are reported one per line."""

    exit_code = 1
    headline = "error"

    def __init__(self, problems: list[Problem] | Problem | str, *, headline: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [Problem(None, problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = problems
        if headline:
            self.headline = headline
        super().__init__("\n".join(str(p) for p in problems))


class BadInput(InitfetchError):
    """Usage, manifest, reference or template error (exit 2)."""

    exit_code = EXIT_BAD_INPUT
    headline = "bad input"


class MissingExtra(BadInput):
    """A provider's client library is not installed."""


class WriteFailed(InitfetchError):
    """Output could not be written safely (exit 5)."""

    exit_code = EXIT_WRITE
    headline = "cannot write output"


class NotReady(InitfetchError):
    """healthcheck: no complete render is in place yet (exit 1)."""

    exit_code = EXIT_NOT_READY
    headline = "not ready"


class ResolveFailed(InitfetchError):
    """Some required references did not resolve.

    Exit 2 when any reference or provider setting is unusable (bad input comes
    first: fix it, then see what else fails); else exit 4 when every failure is
    a backend that stayed unavailable; else exit 3 (not found, denied, missing
    key, bad version).
    """

    headline = "secrets could not be resolved"

    def __init__(self, problems: list[Problem], *, failures: dict[str, tuple[str, Problem]]) -> None:
        """`failures`: each failing secret's class and problem line."""
        super().__init__(problems)
        self.failures = failures
        kinds = {kind for kind, _ in failures.values()}
        if BadReference.kind in kinds:
            self.exit_code = EXIT_BAD_INPUT
        elif kinds == {Unavailable.kind}:
            self.exit_code = EXIT_UNAVAILABLE
        else:
            self.exit_code = EXIT_UNRESOLVED


class Terminated(BaseException):
    """A stop signal (SIGTERM; in watch mode also SIGINT, SIGQUIT) arrived while resolving or
    writing: as PID 1 nothing else would stop us. A BaseException, like KeyboardInterrupt, so
    no `except Exception` on the way (a provider, a template, logging) can swallow it."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__(signum)
        self.signum = signum


# --- errors providers raise for one document ------------------------------------


class SecretError(Exception):
    """A provider could not deliver one document or key.

    `kind` is the class shown to the user. `transient` errors are retried
    within the deadline; all others fail at once.
    """

    kind = "error"
    transient = False


class NotFound(SecretError):
    kind = "not-found"


class AccessDenied(SecretError):
    kind = "access-denied"


class MissingKey(SecretError):
    kind = "missing-key"


class BadVersion(SecretError):
    kind = "bad-version"


class BadValue(SecretError):
    """A value that cannot be used as text (a lone surrogate from a JSON escape or from an
    environment variable that is not UTF-8): it could not be taken (exit 3)."""

    kind = "bad-value"


class TooLarge(SecretError):
    """A document over the `secret_size` limit: it could not be taken (exit 3)."""

    kind = "too-large"


class NotRenewable(SecretError):
    """A lease or login that cannot be extended: the secret must be read (or logged in) anew."""

    kind = "not-renewable"


class LeaseRevoked(NotRenewable):
    """The backend no longer knows the lease (revoked, expired, or gone with its login)."""

    kind = "lease-revoked"


class LoginExpired(AccessDenied):
    """The backend no longer accepts the login initfetch was given (a revoked or expired
    token) and the login method cannot log in again: one cause for every secret it denies."""

    kind = "login-expired"


class WriteUncertain(SecretError):
    """A write was sent and no answer says whether it was carried out (a timeout, a reset, a
    5xx): it is not repeated (that could issue two certificates), and it fails the read."""

    kind = "write-uncertain"


class Unavailable(SecretError):
    """Connection refused/reset, timeout, 429, 5xx, sealed or starting server.

    `throttled` marks an answer that says "too many requests" (429, or 503 with
    Retry-After): the instance then lowers its concurrency. `retry_after` is the
    server's Retry-After in seconds, honoured before the next request.
    """

    kind = "unavailable"
    transient = True

    def __init__(self, message: str = "", *, throttled: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.throttled = throttled
        self.retry_after = retry_after


def retry_after_seconds(value: object) -> float | None:
    """A Retry-After header in seconds (delta-seconds or an HTTP date), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - time.time())


class BadReference(SecretError):
    """The reference cannot mean anything to this provider (reported as bad input)."""

    kind = "bad-reference"
