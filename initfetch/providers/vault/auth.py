"""Vault / OpenBao login methods, one small class each behind one interface.

The manifest's `auth:` block picks a method and its mount:

    auth: {method: approle, mount: approle, role_id_file: ..., secret_id_env: ...}

Methods: token (VAULT_TOKEN, a token file, ~/.vault-token), approle, kubernetes, jwt,
oidc, userpass and cert. LDAP and AWS IAM are not here: OpenBao no longer builds them in,
so they cannot be tested against a real server (docs/vault.md).

Each credential can come from a literal value, a file or an environment
variable (`X`, `X_file`, `X_env`). Values read here are secrets: they never go
into messages; `secrets()` lists them so error texts from Vault can be scrubbed.
hvac is imported lazily by the caller; these classes only call methods on the
client they are given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote

from initfetch.errors import AccessDenied

OptionProblem = tuple[tuple[str, ...], str]

K8S_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path


KEEP_SECRETS = 8  # credentials remembered for scrubbing: the current ones and a few before


class LoginError(AccessDenied):
    """Credentials could not be read or were refused (permanent)."""


def _read_file(path: str, what: str) -> str:
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as e:
        raise LoginError(f"cannot read {what} file {path}: {e.strerror or e.__class__.__name__}") from None
    if not value:
        raise LoginError(f"{what} file {path} is empty")
    return value


class AuthMethod:
    """One login method. `login(client)` leaves a token on the hvac client."""

    method: ClassVar[str] = ""
    default_mount: ClassVar[str] = ""
    # option -> type; every method also takes `method` and `mount`.
    KEYS: ClassVar[dict[str, type]] = {}
    # credentials given as X / X_file / X_env: name -> required
    CREDENTIALS: ClassVar[dict[str, bool]] = {}
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self.options = dict(options)
        self.environ = environ
        self.mount = str(options.get("mount") or self.default_mount).strip("/")
        self._secrets: dict[str, None] = {}  # credentials to scrub from messages, newest last
        self._env_used: set[str] = set()

    # --- offline validation ---

    @classmethod
    def all_keys(cls) -> dict[str, type]:
        keys: dict[str, type] = {"method": str, "mount": str}
        for name in cls.CREDENTIALS:
            keys.update({name: str, f"{name}_file": str, f"{name}_env": str})
        keys.update(cls.KEYS)
        return keys

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Iterable[OptionProblem]:
        known = cls.all_keys()
        for key, value in options.items():
            if key not in known:
                names = ", ".join(sorted(known))
                yield ("auth", key), f"unknown option '{key}' for auth method {cls.method} (known: {names})"
            elif not isinstance(value, known[key]) or (known[key] is str and not value):
                what = "true or false" if known[key] is bool else "a non-empty string"
                yield ("auth", key), f"'{key}' must be {what}"
        for name, required in cls.CREDENTIALS.items():
            given = [k for k in (name, f"{name}_file", f"{name}_env") if k in options]
            if len(given) > 1:
                yield ("auth", given[1]), f"give only one of {', '.join(given)}"
            elif required and not given:
                yield ("auth",), f"auth method {cls.method} needs one of {name}, {name}_file or {name}_env"
        for key in cls.REQUIRED:
            if key not in options:
                yield ("auth",), f"auth method {cls.method} needs '{key}'"

    # --- credentials ---

    def credential(self, name: str, secret: bool = True) -> str | None:
        """A credential from its value, file or environment variable, or None if not configured.

        A `secret` one is remembered for scrubbing. A user name is not: it is no secret, and
        scrubbing a short word ("app") out of Vault's messages would garble them."""
        if name in self.options:
            value = str(self.options[name])
        elif f"{name}_file" in self.options:
            value = _read_file(str(self.options[f"{name}_file"]), name.replace("_", " "))
        elif f"{name}_env" in self.options:
            var = str(self.options[f"{name}_env"])
            value = self.environ.get(var, "").strip()
            if not value:
                raise LoginError(f"environment variable {var} (auth {name}_env) is not set or empty")
            self._env_used.add(var)
        else:
            return None
        if secret:
            self._remember(value)
        return value

    def configured_env(self) -> set[str]:
        """Environment variables this method reads that are set (credential_env)."""
        names = {str(self.options[f"{n}_env"]) for n in self.CREDENTIALS if f"{n}_env" in self.options}
        return {n for n in names if n in self.environ} | self._env_used

    def _remember(self, value: str) -> None:
        """Keep a credential to scrub from Vault's messages. Bounded: a watcher logs in again for
        months (a rotated JWT each time), and only the recent ones can still appear."""
        self._secrets.pop(value, None)
        self._secrets[value] = None
        while len(self._secrets) > KEEP_SECRETS:
            del self._secrets[next(iter(self._secrets))]

    def secrets(self) -> list[str]:
        return list(self._secrets)

    def describe(self) -> str:
        return f"{self.method} login at auth/{self.mount}"

    @property
    def can_login_again(self) -> bool:
        """Whether a new login can replace a token Vault stopped accepting: a login method
        presents its credentials again (files are read anew: a rotated one is picked up)."""
        return True

    def expired_message(self) -> str:
        """LoginExpired's message when the token is dead and no new one can be had; never the token."""
        return f"the Vault token from the {self.describe()} is no longer valid: revoked or expired"

    def login(self, client: Any) -> None:
        raise NotImplementedError


class TokenAuth(AuthMethod):
    """A ready token: `token_file`, else VAULT_TOKEN (or OpenBao's BAO_TOKEN), else
    ~/.vault-token (as the Vault CLI does)."""

    method = "token"
    KEYS: ClassVar[dict[str, type]] = {"token_file": str, "token_env": str}
    source: str | None = None  # where the token came from, for messages (never the token)

    def _variables(self) -> tuple[str, ...]:
        if "token_env" in self.options:
            return (str(self.options["token_env"]),)
        return ("VAULT_TOKEN", "BAO_TOKEN")  # the VAULT_ name wins when both are set

    def _token(self) -> str:
        if "token_file" in self.options:
            return _read_file(str(self.options["token_file"]), "token")
        for var in self._variables():
            value = self.environ.get(var, "").strip()
            if value:
                self._env_used.add(var)
                self.source = var
                return value
        if "token_env" in self.options:
            var = self._variables()[0]
            raise LoginError(f"environment variable {var} (auth token_env) is not set or empty")
        home = self.environ.get("HOME")
        if home and os.path.exists(os.path.join(home, ".vault-token")):
            self.source = "~/.vault-token"
            return _read_file(os.path.join(home, ".vault-token"), "token")
        raise LoginError(
            "no Vault token: set VAULT_TOKEN (or BAO_TOKEN), auth.token_file, or write ~/.vault-token"
        )

    def configured_env(self) -> set[str]:
        if "token_file" in self.options:
            return set()
        return {v for v in self._variables() if self.environ.get(v)} | self._env_used

    def describe(self) -> str:
        return f"token login ({self.source})" if self.source else "token login"

    @property
    def can_login_again(self) -> bool:
        """A token file is read again (something outside rotates it); a token from a variable
        or ~/.vault-token would only be the same token again."""
        return "token_file" in self.options

    def expired_message(self) -> str:
        if "token_file" in self.options:
            return (
                f"the Vault token in auth.token_file {self.options['token_file']} is no longer valid: "
                "revoked or expired, and the file holds no new one yet"
            )
        source = f" (from {self.source})" if self.source else ""
        return f"the Vault token{source} is no longer valid: revoked or expired; give initfetch a new one"

    def login(self, client: Any) -> None:
        token = self._token()
        self._remember(token)
        client.token = token


class AppRoleAuth(AuthMethod):
    method = "approle"
    default_mount = "approle"
    CREDENTIALS: ClassVar[dict[str, bool]] = {"role_id": True, "secret_id": False}
    KEYS: ClassVar[dict[str, type]] = {"secret_id_wrapped": bool}

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Iterable[OptionProblem]:
        yield from super().check(options)
        if options.get("secret_id_wrapped") is True and not any(
            k in options for k in ("secret_id", "secret_id_file", "secret_id_env")
        ):
            yield (
                ("auth", "secret_id_wrapped"),
                "secret_id_wrapped needs secret_id, secret_id_file or secret_id_env",
            )

    def __init__(self, options: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        super().__init__(options, environ)
        # (role id, secret id) once a wrapped secret id is unwrapped. The wrapping token
        # works once, so a retried login (Vault still starting) must reuse what it gave.
        # In memory only; the secret id is also in secrets(), so messages are scrubbed of it.
        self._unwrapped: tuple[str | None, str] | None = None

    def login(self, client: Any) -> None:
        # The provider calls login under its lock, so the cache needs no lock of its own.
        role_id: str | None
        secret_id: str | None
        if self._unwrapped is not None:
            role_id, secret_id = self._unwrapped
        else:
            role_id = self.credential("role_id")
            secret_id = self.credential("secret_id")
            if secret_id is not None and self.options.get("secret_id_wrapped") is True:
                secret_id = self._unwrap(client, secret_id)
                self._unwrapped = (role_id, secret_id)
        client.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=self.mount)

    def _unwrap(self, client: Any, wrapping_token: str) -> str:
        """A response-wrapped secret id: unwrap with the wrapping token as the client token."""
        import hvac

        wrapped = hvac.Client(
            url=client.url,
            token=wrapping_token,
            namespace=client.adapter.namespace,
            session=client.session,
            verify=client.session.verify,
            cert=client.session.cert,
        )
        try:
            response = wrapped.sys.unwrap()
        except hvac.exceptions.InvalidRequest as e:
            # A used or expired wrapping token: someone else may have unwrapped it first.
            raise LoginError(
                "unwrapping the AppRole secret id failed (wrapping token invalid, expired or already used)"
            ) from e
        data = response.get("data") if isinstance(response, dict) else None
        secret_id = data.get("secret_id") if isinstance(data, dict) else None
        if not isinstance(secret_id, str) or not secret_id:
            raise LoginError("the unwrapped response holds no secret_id")
        self._remember(secret_id)
        return secret_id


class KubernetesAuth(AuthMethod):
    """Service-account token login; the token file is the projected one by default."""

    method = "kubernetes"
    default_mount = "kubernetes"
    KEYS: ClassVar[dict[str, type]] = {"role": str, "token_file": str}
    REQUIRED = ("role",)

    def login(self, client: Any) -> None:
        jwt = _read_file(str(self.options.get("token_file", K8S_TOKEN_FILE)), "service-account token")
        self._remember(jwt)
        client.auth.kubernetes.login(role=self.options["role"], jwt=jwt, mount_point=self.mount)


class JwtAuth(AuthMethod):
    """A JWT from CI or workload identity, from `token_file` or `token_env`."""

    method = "jwt"
    default_mount = "jwt"
    KEYS: ClassVar[dict[str, type]] = {"role": str}
    CREDENTIALS: ClassVar[dict[str, bool]] = {"token": True}
    REQUIRED = ("role",)

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Iterable[OptionProblem]:
        for problem in super().check(options):
            # A literal JWT in a manifest is a mistake: it expires and it is a secret.
            if problem[0] == ("auth", "token"):
                continue
            yield problem
        if "token" in options:
            yield ("auth", "token"), "give the JWT as token_file or token_env, not inline"

    def login(self, client: Any) -> None:
        jwt = self.credential("token")
        client.auth.jwt.jwt_login(role=self.options["role"], jwt=jwt, path=self.mount)


class OidcAuth(JwtAuth):
    """The same JWT login on a mount of type oidc (default mount `oidc`)."""

    method = "oidc"
    default_mount = "oidc"


class UserpassAuth(AuthMethod):
    """A user name and password (`vault login -method=userpass`). The password is never inline."""

    method = "userpass"
    default_mount = "userpass"
    CREDENTIALS: ClassVar[dict[str, bool]] = {"username": True, "password": True}

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Iterable[OptionProblem]:
        for problem in super().check(options):
            if problem[0] == ("auth", "password"):
                continue
            yield problem
        if "password" in options:
            # A manifest is committed and shown in reviews: a password there is a leaked one.
            yield ("auth", "password"), "give the password as password_file or password_env, not inline"

    def login(self, client: Any) -> None:
        username = self.credential("username", secret=False)
        password = self.credential("password")
        # The user name is a path segment: quoted, so a '/' in it cannot reach another path.
        client.adapter.login(
            url=f"/v1/auth/{self.mount}/login/{quote(str(username), safe='')}",
            json={"password": password},
        )


class CertAuth(AuthMethod):
    """TLS certificate login (`vault login -method=cert`): the client certificate of the
    connection (`client_cert`/`client_key` beside `address`, or VAULT_CLIENT_CERT and
    VAULT_CLIENT_KEY) is presented in the TLS handshake; `name` picks the certificate role
    (without it Vault tries every role). Nothing secret passes through initfetch: the key
    stays in its file and is read by the TLS layer."""

    method = "cert"
    default_mount = "cert"
    KEYS: ClassVar[dict[str, type]] = {"name": str}

    # Vault Agent takes these in the method's block (key -> the provider option it is here):
    # the certificate is the connection's own, presented in its TLS handshake.
    CONNECTION_KEYS: ClassVar[dict[str, str]] = {
        "client_cert": "client_cert",
        "client_key": "client_key",
        "ca_cert": "ca_file",
        "ca_file": "ca_file",
    }

    @classmethod
    def check(cls, options: Mapping[str, Any]) -> Iterable[OptionProblem]:
        yield from super().check({k: v for k, v in options.items() if k not in cls.CONNECTION_KEYS})
        for key, option in cls.CONNECTION_KEYS.items():
            if key in options:
                yield (
                    ("auth", key),
                    f"give {option} beside address (the provider's TLS options), not under auth",
                )

    def login(self, client: Any) -> None:
        if not str(client.url).startswith("https://"):
            raise LoginError(
                f"{self.describe()} needs an https:// address: the client certificate is presented "
                "in the TLS handshake"
            )
        if not client.session.cert:
            raise LoginError(
                f"{self.describe()} needs a client certificate: set client_cert and client_key "
                "(or VAULT_CLIENT_CERT and VAULT_CLIENT_KEY)"
            )
        name = self.options.get("name")
        client.adapter.login(url=f"/v1/auth/{self.mount}/login", json={"name": name} if name else {})


METHODS: dict[str, type[AuthMethod]] = {
    m.method: m for m in (TokenAuth, AppRoleAuth, KubernetesAuth, JwtAuth, OidcAuth, UserpassAuth, CertAuth)
}


def check_auth(auth: object) -> Iterable[OptionProblem]:
    """Problems with an `auth:` block, with key paths like ("auth", "method")."""
    if auth is None:
        return
    if not isinstance(auth, Mapping):
        yield ("auth",), "'auth' must be a mapping with a 'method'"
        return
    method = auth.get("method", "token")
    if not isinstance(method, str):  # a mapping or list is never quoted: it may hold anything
        yield ("auth", "method"), f"auth method must be one of: {', '.join(sorted(METHODS))}"
        return
    cls = METHODS.get(method)
    if cls is None:
        yield ("auth", "method"), f"unknown auth method {method!r} (known: {', '.join(sorted(METHODS))})"
        return
    yield from cls.check(auth)


def make_auth(auth: Mapping[str, Any] | None, environ: Mapping[str, str]) -> AuthMethod:
    options = dict(auth or {})
    return METHODS[str(options.get("method", "token"))](options, environ)
