"""One Vault / OpenBao connection: the HTTP session, the login, and each call's
deadline and error mapping.

The login happens once, lazily, under a lock; a refused login is remembered (it
will not succeed for the next document either), an unavailable one is retried
by the core. Reads (reads.py) and lease and token calls (leases.py) go through
`bound` / `call`, so every request is bounded by the caller's deadline and every
failure becomes the same SecretErrors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from initfetch.errors import AccessDenied, SecretError, Unavailable
from initfetch.providers.base import FetchContext
from initfetch.providers.vault.auth import AuthMethod, make_auth
from initfetch.providers.vault.http import Connection, call_timeout, mapped_errors

log = logging.getLogger("initfetch.providers.vault")


class VaultClient:
    def __init__(self, name: str, options: Mapping[str, Any], environ: Mapping[str, str], pool_size: int):
        self.name = name
        self.conn = Connection.from_options(options, environ)
        self.auth: AuthMethod = make_auth(options.get("auth"), environ)
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._hvac: Any = None
        self._session: Any = None
        self._login_error: SecretError | None = None
        self._warn_about_settings(environ)

    def _warn_about_settings(self, environ: Mapping[str, str]) -> None:
        name, conn = self.name, self.conn
        if conn.skip_verify:
            log.warning(
                "vault provider %r: TLS certificate verification is OFF (tls_skip_verify: true) for %s",
                name,
                conn.address,
            )
        if conn.address_from == "default":
            log.warning(
                "vault provider %r: VAULT_ADDR (or BAO_ADDR) is not set and the manifest gives no "
                "address; using the Vault CLI's default %s",
                name,
                conn.address,
            )
        elif conn.address_from.startswith("BAO_"):
            log.info("vault provider %r: address from %s", name, conn.address_from)
        if not conn.skip_verify and environ.get("VAULT_SKIP_VERIFY"):
            log.warning(
                "vault provider %r: VAULT_SKIP_VERIFY is ignored; set tls_skip_verify: true in the manifest "
                "to turn verification off",
                name,
            )

    # --- the session and the login ---

    @property
    def session(self) -> Any:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    from initfetch.providers.vault.session import make_session

                    self._session = make_session(self.conn, self.pool_size)
        return self._session

    @contextmanager
    def bound(self, ctx: FetchContext) -> Iterator[Any]:
        """The logged-in hvac client, every request this thread makes bounded by `ctx`'s deadline."""
        with call_timeout(self.session, ctx.timeout):
            yield self.login()

    @contextmanager
    def call(self, ctx: FetchContext, what: str) -> Iterator[Any]:
        """`bound`, with failures of the block mapped to SecretErrors that name `what`."""
        with self.bound(ctx) as client, self.errors(what):
            yield client

    def login(self) -> Any:
        """The logged-in hvac client; logs in once, on first use, under a lock."""
        with self._lock:
            if self._hvac is not None:
                return self._hvac
            if self._login_error is not None:
                raise self._login_error
            import hvac

            session = self._session
            client = hvac.Client(
                url=self.conn.address,
                namespace=self.conn.namespace,
                session=session,
                verify=session.verify,  # the CA variables resolved once (http.py)
                cert=self.conn.cert,
            )
            try:
                with mapped_errors(
                    session,
                    what=self.auth.describe(),
                    address=self.conn.address,
                    scrub=self.auth.secrets(),
                    login=True,
                ):
                    self.auth.login(client)
            except Unavailable:
                raise  # retried by the core: log in again next time
            except SecretError as e:
                self._login_error = e  # a refused login will not succeed on the next document
                raise
            self._hvac = client
            return client

    def forget_login(self) -> None:
        """Drop the token: the next call logs in again."""
        with self._lock:
            self._hvac = None
            self._login_error = None

    @property
    def token(self) -> str | None:
        """The token in use (tests and lease calls only; never logged)."""
        return getattr(self._hvac, "token", None)

    def errors(self, what: str) -> Any:
        return mapped_errors(
            self.session,
            what=what,
            address=self.conn.address,
            scrub=self.auth.secrets(),
            hint=self.conn.unreachable_hint(),
        )

    def deadline_left(self) -> float:
        """What is left of the current call's deadline in this thread."""
        timeout = getattr(self.session.local, "timeout", None)
        return timeout() if timeout is not None else 10.0

    def token_valid(self, client: Any) -> bool:
        """Whether Vault still accepts our token (auth/token/lookup-self needs no policy)."""
        import hvac.exceptions as hx

        try:
            with self.errors("looking up the token"):
                client.adapter.get("/v1/auth/token/lookup-self")
        except AccessDenied:
            return False
        except (SecretError, hx.VaultError):
            pass
        return True

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
            self._hvac = None
            self._session = None
