"""What every Vault call shares: where and how to connect, a per-call deadline, and
failures -> SecretErrors (lean.py's, and hvac's and requests' for a login through hvac).

hvac reads VAULT_CACERT & co. when it is imported, so nothing here relies on
that: verify, cert and the TLS server name are resolved here and handed to our
transports and to hvac explicitly. Nothing retries below the core: one call is
one HTTP attempt (lean.py replaces a kept connection the server had closed).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from initfetch.errors import (
    AccessDenied,
    BadReference,
    NotFound,
    SecretError,
    Unavailable,
    retry_after_seconds,
)

DEFAULT_ADDRESS = "https://127.0.0.1:8200"  # the Vault CLI's default


class Rejected(AccessDenied):
    """Vault answered 401/403 to a call made with our token: a policy that does not allow it, or
    a token Vault no longer accepts (revoked, expired, forgotten by a restart). The client tells
    the two apart (client.py); the user sees an access-denied either way."""


# What lean.py raises, here so that reads.py and leases.py catch them without importing
# http.client and ssl (10 ms) when only a provider class is loaded (check, offline preview).


class VaultAnswer(Exception):
    """Vault answered with an error status. `errors`: its JSON `errors` list (None when the
    body was not Vault's JSON), `json`: the decoded body, as hvac's VaultError has them."""

    def __init__(self, status: int, errors: list[Any] | None, json: Any, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.errors = errors
        self.json = json
        self.retry_after = retry_after


class TransportError(Exception):
    """No answer: the connection failed, or the answer was not HTTP. `sent`: whether the
    request may have reached the server (False when no connection or TLS session was made)."""

    def __init__(self, message: str, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class Unreachable(TransportError):
    pass


class TimedOut(TransportError):
    pass


class TLSFailed(TransportError):
    """The TLS handshake failed (an untrusted certificate, a wrong name): waiting will not help."""


def env_var(environ: Mapping[str, str], name: str) -> tuple[str | None, str]:
    """`VAULT_<name>`, else OpenBao's `BAO_<name>` (its CLI and dev server use those):
    the value and the variable it came from. The VAULT_ name wins when both are set."""
    for var in (f"VAULT_{name}", f"BAO_{name}"):
        value = environ.get(var)
        if value:
            return value, var
    return None, f"VAULT_{name}"


@dataclass(frozen=True)
class Connection:
    """Where and how to connect; manifest options first, then VAULT_* (or BAO_*) variables."""

    address: str
    namespace: str | None
    ca_file: str | None
    ca_path: str | None
    client_cert: str | None
    client_key: str | None
    tls_server_name: str | None
    skip_verify: bool
    address_from: str = "address"  # where the address came from: the option, a variable, the default

    @classmethod
    def from_options(cls, options: Mapping[str, Any], environ: Mapping[str, str]) -> Connection:
        def pick(option: str, name: str) -> str | None:
            value = options.get(option)
            if value is None:
                value = env_var(environ, name)[0]
            return str(value) if value is not None else None

        if options.get("address"):
            address, address_from = str(options["address"]), "the manifest's address"
        else:
            value, var = env_var(environ, "ADDR")
            address, address_from = (value, var) if value else (DEFAULT_ADDRESS, "default")
        return cls(
            address=address.rstrip("/"),
            namespace=pick("namespace", "NAMESPACE"),
            ca_file=pick("ca_file", "CACERT"),
            ca_path=pick("ca_path", "CAPATH"),
            client_cert=pick("client_cert", "CLIENT_CERT"),
            client_key=pick("client_key", "CLIENT_KEY"),
            tls_server_name=pick("tls_server_name", "TLS_SERVER_NAME"),
            skip_verify=options.get("tls_skip_verify") is True,
            address_from=address_from,
        )

    def unreachable_hint(self) -> str:
        """What to check when nothing answers: an unset VAULT_ADDR is the usual cause."""
        if self.address_from == "default":
            return (
                f" (VAULT_ADDR and BAO_ADDR are not set and the manifest gives no address, "
                f"so the Vault CLI's default {DEFAULT_ADDRESS} was used)"
            )
        return ""

    def what_to_check(self) -> str:
        """For the final error when Vault never answered: the address, where it came from, and
        what to look at (the server, the network, http against https)."""
        if self.address_from == "default":
            where = (
                f"set VAULT_ADDR (or BAO_ADDR): neither is set, so the default {self.address} was tried; "
                "then check"
            )
        elif self.address_from == "the manifest's address":
            where = (
                f"check the provider's address in the manifest ({self.address}: the right host and port?),"
            )
        else:
            where = f"check {self.address_from}={self.address} (the right host and port?),"
        if self.address.startswith("https://"):
            tls = "that it serves TLS on that port (a dev server without TLS needs http://)"
        else:
            tls = (
                "that it serves plain http (a server with TLS needs https://, "
                "and VAULT_CACERT if its CA is private)"
            )
        return f"{where} that the server is up and reachable from here, and {tls}"

    @property
    def verify(self) -> bool | str:
        if self.skip_verify:
            return False
        # Like the Vault CLI, a CA file wins over a CA directory; requests takes either.
        return self.ca_file or self.ca_path or True

    @property
    def cert(self) -> tuple[str, str] | str | None:
        if self.client_cert and self.client_key:
            return (self.client_cert, self.client_key)
        return self.client_cert


def resolved_verify(conn: Connection) -> bool | str:
    """What to verify Vault's certificate with: the connection's CA, else the CA bundle variables
    requests honours (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE), else requests' default."""
    verify = conn.verify
    if verify is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return verify


@contextmanager
def call_timeout(holder: Any, timeout: Callable[[], float]) -> Iterator[None]:
    """Bound every HTTP call this thread makes inside the block by `timeout()`, asked per call.
    `holder.local` is the thread-local the transports read it from."""
    previous = getattr(holder.local, "timeout", None)
    holder.local.timeout = timeout
    try:
        yield
    finally:
        holder.local.timeout = previous


_NOISE = re.compile(r"\d+ errors? occurred:|\s*\*\s*")


def vault_message(e: BaseException, scrub: list[str]) -> str:
    """Vault's own error text, one short line, with known credentials removed."""
    # Only Vault's JSON `errors` list: a proxy's HTML error page is noise, and could echo anything.
    errors = getattr(e, "errors", None)
    text = "; ".join(str(x) for x in errors) if isinstance(errors, list) else ""
    text = " ".join(_NOISE.sub(" ", text).split())
    for value in scrub:
        if value:
            text = text.replace(value, "[redacted]")
    return text[:300]


@dataclass(frozen=True)
class Call:
    """What one mapped call is, for its messages: `what` names it ("reading secret/data/app")."""

    what: str
    address: str
    scrub: list[str]
    login: bool = False
    hint: str = ""


@contextmanager
def mapped_errors(
    holder: Any, *, what: str, address: str, scrub: list[str], login: bool = False, hint: str = ""
) -> Iterator[None]:
    """Turn failures of one call (lean.py's, hvac's and requests') into SecretErrors.

    Transient ones (connection, timeout, 429, 5xx, sealed) become Unavailable; a refused
    login (400/401/403) is AccessDenied. `holder.local` holds the call's HTTP status.
    """
    try:
        yield
    except SecretError:
        raise
    except Exception as e:
        call = Call(what, address, scrub, login, hint)
        mapped = _mapped(
            e, getattr(holder.local, "status", None), getattr(holder.local, "retry_after", None), call
        )
        if mapped is None:
            raise
        raise mapped from (e if isinstance(mapped, Unavailable) and _unexpected(e) else None)


def _unexpected(e: Exception) -> bool:
    return isinstance(e, ValueError | KeyError | TypeError | AttributeError)


def _mapped(e: Exception, status: int | None, retry_after: str | None, call: Call) -> SecretError | None:
    """The SecretError for `e`, or None for an exception that is not a failed call."""
    if isinstance(e, VaultAnswer):
        return _from_status(e, e.status, e.retry_after, call)
    if isinstance(e, TransportError):
        return _from_transport(e, call)
    # hvac and requests are loaded only when a login used them: if not, e is not theirs.
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(e, requests.exceptions.RequestException):
        return _from_requests(e, requests, call)
    if _unexpected(e):
        # hvac choking on a body that is not Vault's (a proxy's page, a JSON string): not a Vault answer.
        message = f"unexpected response from {call.address} ({status or 'no status'}) while {call.what}"
        if status is not None and 400 <= status < 500 and status not in (408, 412, 429):
            return BadReference(message)
        return Unavailable(message)
    hvac_exceptions = sys.modules.get("hvac.exceptions")
    if hvac_exceptions is not None and isinstance(e, hvac_exceptions.VaultError):
        return _from_status(e, _hvac_status(e, hvac_exceptions, status), retry_after, call)
    return None


def _from_transport(e: Exception, call: Call) -> SecretError:
    if isinstance(e, TLSFailed):  # a trust problem does not fix itself by waiting
        return AccessDenied(f"TLS connection to {call.address} failed while {call.what}: {e}")
    if isinstance(e, TimedOut):
        return Unavailable(f"Vault at {call.address} timed out while {call.what}")
    return Unavailable(f"cannot connect to Vault at {call.address} while {call.what}{call.hint}")


def _from_requests(e: Exception, requests: Any, call: Call) -> SecretError:
    if isinstance(e, requests.exceptions.SSLError):
        reason = e.args[0].reason if e.args and hasattr(e.args[0], "reason") else e
        return AccessDenied(f"TLS connection to {call.address} failed while {call.what}: {reason}")
    if isinstance(e, requests.exceptions.Timeout):
        return Unavailable(f"Vault at {call.address} timed out while {call.what}")
    if isinstance(e, requests.exceptions.ConnectionError):
        return Unavailable(f"cannot connect to Vault at {call.address} while {call.what}{call.hint}")
    return Unavailable(f"HTTP error from Vault at {call.address} while {call.what}: {e.__class__.__name__}")


# hvac's exception classes by the status they stand for (UnexpectedError: any other).
_HVAC_STATUS = {
    "InvalidRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "InvalidPath": 404,
    "RateLimitExceeded": 429,
    "InternalServerError": 500,
    "VaultNotInitialized": 501,
    "BadGateway": 502,
    "VaultDown": 503,
}


def _hvac_status(e: Exception, hx: Any, status: int | None) -> int | None:
    for name, code in _HVAC_STATUS.items():
        if isinstance(e, getattr(hx, name)):
            return code
    return status


def _from_status(e: Any, status: int | None, retry_after: str | None, call: Call) -> SecretError:
    """The SecretError for an error answer from Vault, by its status."""
    what, address = call.what, call.address
    detail = vault_message(e, call.scrub)
    suffix = f": {detail}" if detail and detail != "permission denied" else ""
    after = retry_after_seconds(retry_after)
    if status == 429:
        return Unavailable(f"Vault rate limit (429) while {what}{suffix}", throttled=True, retry_after=after)
    if status == 503:
        return Unavailable(
            f"Vault is sealed or in standby (503) while {what}{suffix}", throttled=True, retry_after=after
        )
    if status is not None and (status >= 500 or status in (408, 412)):
        return Unavailable(f"Vault answered {status} while {what}{suffix}")
    if status in (401, 403):
        # A refused login is not a rejected token: there is no token yet to check.
        return (AccessDenied if call.login else Rejected)(f"permission denied {what}{suffix}")
    if call.login:
        return AccessDenied(f"{what} was refused{suffix}")
    if status == 404:
        if not_vault(e):
            return BadReference(not_vault_message(address, status))
        return NotFound(f"nothing found {what}{suffix}")
    if status == 405:
        return BadReference(
            f"Vault does not allow reading this path (405) while {what}: an endpoint that issues on "
            "write (pki/issue/ROLE, transit/decrypt/KEY) needs the long form with write: parameters"
        )
    return BadReference(f"Vault rejected the request {what} ({status or 400}){suffix}")


def not_vault(e: Any) -> bool:
    """A 404 without Vault's JSON error body (`{"errors": [...]}`): some other web server answered."""
    return getattr(e, "errors", None) is None and getattr(e, "json", None) is None


def not_vault_message(address: str, status: int | None) -> str:
    return (
        f"the server at {address} does not look like Vault or OpenBao (HTTP {status or 404} without "
        "Vault's JSON error body): check VAULT_ADDR or the manifest's address"
    )
