"""One Vault / OpenBao connection: the HTTP session, the login, and each call's
deadline and error mapping.

Calls go through lean.py's VaultAPI (http.client, no hvac or requests); hvac is
imported only to log in with a method other than a ready token, and requests only
for that or when a proxy is set. The login happens once, lazily, under a lock; a
refused login is remembered (it will not succeed for the next document either), an unavailable one is retried
by the core. Each successful login starts a new login generation. Reads
(reads.py) and lease calls (leases.py) go through `run`, token calls through
`call`, so every request is bounded by the caller's deadline and every failure
becomes the same SecretErrors. A call Vault rejects (401/403) under `run` is
checked against the token once per generation (relogin.py): a dead token is
replaced by a new login and the call retried once, or named as expired.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from initfetch.errors import LoginExpired, SecretError, Unavailable
from initfetch.providers.base import FetchContext
from initfetch.providers.vault.auth import AuthMethod, make_auth
from initfetch.providers.vault.http import Connection, Rejected, call_timeout, mapped_errors
from initfetch.providers.vault.relogin import Rejections

log = logging.getLogger("initfetch.providers.vault")

T = TypeVar("T")


class VaultClient:
    def __init__(self, name: str, options: Mapping[str, Any], environ: Mapping[str, str], pool_size: int):
        self.name = name
        self.conn = Connection.from_options(options, environ)
        self.auth: AuthMethod = make_auth(options.get("auth"), environ)
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._setup = threading.Lock()  # making the transport and the session (never under _lock's wait)
        self.local = threading.local()  # each thread's call deadline; the last status it saw
        # The logged-in VaultAPI and its login generation, replaced as one tuple so that
        # relogin.py can read it without the lock (a login holds the lock while it talks to Vault).
        self._current: tuple[Any, int] | None = None
        self._generation = 0  # successful logins so far
        self._dead_token: str | None = None  # the last token Vault stopped accepting (never logged)
        self._session: Any = None
        self._transport: Any = None
        self._login_error: SecretError | None = None
        self.rejections = Rejections(self)
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
        """The requests session hvac logs in through (and every call goes through, behind a proxy)."""
        if self._session is None:
            with self._setup:
                if self._session is None:
                    from initfetch.providers.vault.session import make_session

                    session = make_session(self.conn, self.pool_size)
                    session.local = self.local  # one deadline per thread, whichever transport
                    self._session = session
        return self._session

    @property
    def transport(self) -> Any:
        """What VaultAPI sends with: our own connection pool, or requests behind a proxy."""
        if self._transport is None:
            from initfetch.providers.vault import lean

            if lean.proxied():
                transport: Any = lean.SessionTransport(self.session)
            else:
                from initfetch.providers.vault.http import resolved_verify

                transport = lean.DirectTransport(self.conn, resolved_verify(self.conn), self.pool_size)
            with self._setup:
                if self._transport is None:
                    self._transport = transport
        return self._transport

    @contextmanager
    def bound(self, ctx: FetchContext) -> Iterator[Any]:
        """The logged-in VaultAPI, every request this thread makes bounded by `ctx`'s deadline."""
        with call_timeout(self, ctx.timeout):
            yield self.login()

    @contextmanager
    def call(self, ctx: FetchContext, what: str) -> Iterator[Any]:
        """`bound`, with failures of the block mapped to SecretErrors that name `what`."""
        with self.bound(ctx) as client, self.errors(what):
            yield client

    def run(self, ctx: FetchContext, fn: Callable[[Any], T]) -> T:
        """`fn(api)` with the logged-in client, every request bounded by `ctx`'s deadline.

        When Vault rejects a call (401/403), relogin.py finds out whether the token is still
        alive: if it is, the denial is real and raised as it is; if not, a method that can log
        in again does so and `fn` runs once more with the new token, and a token given as is
        raises LoginExpired (for this call and every later one)."""
        with call_timeout(self, ctx.timeout):
            api, generation = self.logged_in()
            try:
                return fn(api)
            except Rejected as e:
                self.rejections.handle(ctx, generation, time.monotonic(), e)
            api, _ = self.logged_in()  # a newer login than the rejected one
            return fn(api)

    def login(self) -> Any:
        """The logged-in VaultAPI; logs in once, on first use, under a lock."""
        return self.logged_in()[0]

    def logged_in(self) -> tuple[Any, int]:
        """The logged-in VaultAPI and its login generation; logs in when there is none."""
        with self._lock:
            return self._current or self._use(self._new_login())

    def _use(self, client: Any) -> tuple[Any, int]:
        """Make `client` the login in place: a new generation. Under the lock."""
        self._generation += 1
        self._current = (client, self._generation)
        return self._current

    def _new_login(self) -> Any:
        """A newly logged-in VaultAPI; a refused login is remembered. Under the lock."""
        if self._login_error is not None:
            raise self._login_error
        from initfetch.providers.vault.lean import VaultAPI

        client = VaultAPI(self.conn, self.transport, self.local)
        try:
            with mapped_errors(
                self,
                what=self.auth.describe(),
                address=self.conn.address,
                scrub=self.auth.secrets(),
                login=True,
            ):
                if self.auth.method == "token":
                    self.auth.login(client)  # a ready token: no request, no hvac
                else:
                    client.token = self._hvac_login()
        except Unavailable:
            raise  # retried by the core: log in again next time
        except SecretError as e:
            self._login_error = e  # a refused login will not succeed on the next document
            raise
        if self._dead_token is not None and getattr(client, "token", None) == self._dead_token:
            # A token file not rotated yet still holds the token Vault refused: each call fails
            # at once, without a request, until the file holds a new one (it is read each time).
            raise LoginExpired(self.auth.expired_message())
        return client

    def _hvac_login(self) -> str | None:
        """Log in through hvac (its login methods), on the requests session; the token it got."""
        import hvac

        session = self.session
        client = hvac.Client(
            url=self.conn.address,
            namespace=self.conn.namespace,
            session=session,
            verify=session.verify,  # the CA variables resolved once (session.py)
            cert=self.conn.cert,
        )
        self.auth.login(client)
        return getattr(client, "token", None)

    @property
    def generation(self) -> int:
        """How many times this client logged in (VaultProvider.login_generation)."""
        return self._generation

    def current(self) -> tuple[Any, int] | None:
        """The login in place and its generation, or None; never logs in, takes no lock."""
        return self._current

    def forget_login(self) -> None:
        """Drop the token: the next call logs in again."""
        with self._lock:
            self._current = None
            self._login_error = None

    def replace_login(self, generation: int) -> None:
        """Vault no longer accepts the token of `generation`: log in again. A token given as is
        raises LoginExpired, remembered for every later call; a token file that still holds the
        same token raises it until the file changes. Nothing to do when that login was replaced
        already."""
        with self._lock:
            if self._current is None or self._current[1] != generation:
                return
            self._dead_token = getattr(self._current[0], "token", None)
            self._current = None
            if not self.auth.can_login_again:  # VAULT_TOKEN cannot change: no call will succeed
                self._login_error = LoginExpired(self.auth.expired_message())
                raise self._login_error
            self._use(self._new_login())
        log.info("logged in to Vault again for %s after the token was rejected", self.name)

    def token_alive(self, client: Any) -> bool:
        """Whether Vault still accepts the token `client` holds.

        `sys/internal/ui/mounts` checks any token it is given and needs no policy: 403 means the
        token itself is refused. (lookup-self would not do: it needs the default policy, and a
        token made without it would be taken for a dead one.)"""
        try:
            with self.errors("checking whether Vault still accepts the token"):
                client.adapter.get("/v1/sys/internal/ui/mounts")
        except Rejected:
            return False
        except Unavailable:
            raise  # retried by the core, like the call it was asked for
        except SecretError:
            return True  # no clear answer (a proxy in the way?): the denial stands as Vault gave it
        return True

    @property
    def token(self) -> str | None:
        """The token in use (tests and lease calls only; never logged)."""
        current = self._current
        return getattr(current[0], "token", None) if current is not None else None

    def errors(self, what: str, scrub: list[str] | None = None) -> Any:
        """Failures of the block as SecretErrors naming `what`; Vault's message has the login's
        secrets and `scrub` (a write's parameter values) taken out."""
        return mapped_errors(
            self,
            what=what,
            address=self.conn.address,
            scrub=[*self.auth.secrets(), *(scrub or [])],
            hint=self.conn.unreachable_hint(),
        )

    def deadline_left(self) -> float:
        """What is left of the current call's deadline in this thread."""
        timeout = getattr(self.local, "timeout", None)
        return timeout() if timeout is not None else 10.0

    def close(self) -> None:
        with self._lock:
            if self._transport is not None:
                self._transport.close()
            if self._session is not None:
                self._session.close()
            self._current = None
            self._transport = None
            self._session = None
