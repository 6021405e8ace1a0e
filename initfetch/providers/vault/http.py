"""The HTTP layer under hvac: TLS settings, a per-call deadline, hvac errors -> SecretErrors.

hvac reads VAULT_CACERT & co. when it is imported, so nothing here relies on
that: verify, cert and the TLS server name are set on our own requests session
and handed to hvac explicitly. hvac never retries and our adapters use
`max_retries=0`, so one call is one HTTP attempt; the core does the retrying.
"""

from __future__ import annotations

import re
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


@contextmanager
def call_timeout(session: Any, timeout: Callable[[], float]) -> Iterator[None]:
    """Bound every HTTP call this thread makes inside the block by `timeout()`, asked per call."""
    previous = getattr(session.local, "timeout", None)
    session.local.timeout = timeout
    try:
        yield
    finally:
        session.local.timeout = previous


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


@contextmanager
def mapped_errors(
    session: Any, *, what: str, address: str, scrub: list[str], login: bool = False, hint: str = ""
) -> Iterator[None]:
    """Turn hvac/requests failures of one call into SecretErrors.

    `what` names the call for messages ("reading secret/data/app"). Transient
    ones (connection, timeout, 429, 5xx, sealed) become Unavailable; a refused
    login (400/401/403) is AccessDenied.
    """
    import hvac.exceptions as hx
    import requests

    try:
        yield
    except SecretError:
        raise
    except requests.exceptions.SSLError as e:
        # A trust problem does not fix itself by waiting: fail at once.
        reason = e.args[0].reason if e.args and hasattr(e.args[0], "reason") else e
        raise AccessDenied(f"TLS connection to {address} failed while {what}: {reason}") from None
    except requests.exceptions.Timeout:
        raise Unavailable(f"Vault at {address} timed out while {what}") from None
    except requests.exceptions.ConnectionError:
        raise Unavailable(f"cannot connect to Vault at {address} while {what}{hint}") from None
    except requests.exceptions.RequestException as e:
        raise Unavailable(
            f"HTTP error from Vault at {address} while {what}: {e.__class__.__name__}"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        # hvac choking on a body that is not Vault's (a proxy's page, a JSON string): not a Vault answer.
        status = getattr(session.local, "status", None)
        message = f"unexpected response from {address} ({status or 'no status'}) while {what}"
        if status is not None and 400 <= status < 500 and status not in (408, 412, 429):
            raise BadReference(message) from None
        raise Unavailable(message) from e
    except hx.VaultError as e:
        raise _from_vault(e, session, what=what, address=address, scrub=scrub, login=login) from None


def _from_vault(
    e: Any, session: Any, *, what: str, address: str, scrub: list[str], login: bool
) -> SecretError:
    """The SecretError for an error answer from Vault (hvac's VaultError), by status."""
    import hvac.exceptions as hx

    status = getattr(session.local, "status", None)
    detail = vault_message(e, scrub)
    suffix = f": {detail}" if detail and detail != "permission denied" else ""
    retry_after = retry_after_seconds(getattr(session.local, "retry_after", None))
    if isinstance(e, hx.RateLimitExceeded):
        return Unavailable(
            f"Vault rate limit (429) while {what}{suffix}", throttled=True, retry_after=retry_after
        )
    if isinstance(e, hx.VaultDown):
        return Unavailable(
            f"Vault is sealed or in standby (503) while {what}{suffix}",
            throttled=True,
            retry_after=retry_after,
        )
    if isinstance(e, hx.InternalServerError | hx.BadGateway | hx.VaultNotInitialized) or (
        isinstance(e, hx.UnexpectedError) and status is not None and (status >= 500 or status in (408, 412))
    ):
        return Unavailable(f"Vault answered {status or 'a server error'} while {what}{suffix}")
    if isinstance(e, hx.Forbidden | hx.Unauthorized):
        # A refused login is not a rejected token: there is no token yet to check.
        return (AccessDenied if login else Rejected)(f"permission denied {what}{suffix}")
    if login:
        return AccessDenied(f"{what} was refused{suffix}")
    if isinstance(e, hx.InvalidPath):
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
