"""Azure login for the Key Vault provider: the `auth:` block -> one azure-identity credential.

Methods: `default` (DefaultAzureCredential), `managed_identity`,
`workload_identity`, `client_secret`, `client_certificate`. Secrets never sit
in the manifest: a client secret comes from a file or a named environment
variable, a certificate from a file. azure-identity is imported only when a
credential is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from initfetch.errors import AccessDenied
from initfetch.providers.base import OptionProblem

METHODS = ("default", "managed_identity", "workload_identity", "client_secret", "client_certificate")

# Option -> (type, methods that accept it). Everything also accepts `method`.
AUTH_OPTIONS: dict[str, tuple[type | tuple[type, ...], tuple[str, ...]]] = {
    "method": (str, METHODS),
    "client_id": (str, METHODS),
    "tenant_id": (str, ("default", "workload_identity", "client_secret", "client_certificate")),
    "authority_host": (str, ("default", "workload_identity", "client_secret", "client_certificate")),
    "disable_instance_discovery": (
        bool,
        ("default", "workload_identity", "client_secret", "client_certificate"),
    ),
    "additionally_allowed_tenants": (
        list,
        ("default", "workload_identity", "client_secret", "client_certificate"),
    ),
    "token_file": (str, ("workload_identity",)),
    "client_secret_file": (str, ("client_secret",)),
    "client_secret_env": (str, ("client_secret",)),
    "certificate_file": (str, ("client_certificate",)),
    "certificate_password_file": (str, ("client_certificate",)),
    "certificate_password_env": (str, ("client_certificate",)),
}

# Variables that carry a login secret. `exec` strips the ones an instance used.
DEFAULT_SECRET_ENV = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", "AZURE_PASSWORD")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_auth(auth: Mapping[str, Any]) -> Iterable[OptionProblem]:
    """Offline problems with an `auth:` mapping (key paths are relative to the instance)."""
    method = auth.get("method", "default")
    if not isinstance(method, str):  # a mapping or list is never quoted: it may hold anything
        yield ("auth", "method"), f"auth method must be one of: {', '.join(METHODS)}"
        return
    if method not in METHODS:
        yield ("auth", "method"), f"unknown auth method '{method}' (known: {', '.join(METHODS)})"
        return
    for key, value in auth.items():
        spec = AUTH_OPTIONS.get(key)
        if spec is None:
            if key in ("client_secret", "certificate_password", "password"):
                yield (
                    ("auth", key),
                    (f"'{key}' cannot be written in the manifest; use {key}_file or {key}_env"),
                )
            else:
                yield ("auth", key), f"unknown auth option '{key}'"
            continue
        expected, methods = spec
        if method not in methods:
            yield ("auth", key), f"option '{key}' does not apply to auth method '{method}'"
        elif not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            yield ("auth", key), f"option '{key}' has the wrong type"
        elif key.endswith("_env") and not _ENV_NAME.match(str(value)):
            yield ("auth", key), f"'{value}' is not an environment variable name"
    if method == "client_secret" and "client_secret_file" in auth and "client_secret_env" in auth:
        yield ("auth",), "give client_secret_file or client_secret_env, not both"
    if (
        method == "client_certificate"
        and "certificate_password_file" in auth
        and "certificate_password_env" in auth
    ):
        yield ("auth",), "give certificate_password_file or certificate_password_env, not both"


@dataclass(frozen=True)
class LoginPlan:
    """What an `auth:` block means in this environment, decided without the SDK."""

    method: str
    description: str  # for error messages: which credential, which identity (never a secret)
    secret_env: frozenset[str]  # environment variables holding a login secret that this plan reads


def plan(auth: Mapping[str, Any], environ: Mapping[str, str]) -> LoginPlan:
    method = auth.get("method", "default")
    client_id = auth.get("client_id") or environ.get("AZURE_CLIENT_ID")
    tenant = auth.get("tenant_id") or environ.get("AZURE_TENANT_ID")
    who = f"client_id={client_id}" if client_id else "no client_id"
    if method == "managed_identity":
        kind = f"user-assigned, client_id={auth['client_id']}" if auth.get("client_id") else "system-assigned"
        return LoginPlan(method, f"ManagedIdentityCredential ({kind})", frozenset())
    if method == "workload_identity":
        token_file = auth.get("token_file") or environ.get("AZURE_FEDERATED_TOKEN_FILE")
        return LoginPlan(
            method,
            f"WorkloadIdentityCredential (tenant={tenant}, {who}, token_file={token_file})",
            frozenset(),
        )
    if method == "client_secret":
        if "client_secret_file" in auth:
            source, env = f"file {auth['client_secret_file']}", frozenset[str]()
        else:
            name = auth.get("client_secret_env", "AZURE_CLIENT_SECRET")
            source, env = f"${name}", frozenset({name})
        return LoginPlan(
            method, f"ClientSecretCredential (tenant={tenant}, {who}, secret from {source})", env
        )
    if method == "client_certificate":
        cert = auth.get("certificate_file") or environ.get("AZURE_CLIENT_CERTIFICATE_PATH")
        pw_env: frozenset[str] = frozenset()
        if "certificate_password_file" not in auth:
            name = auth.get("certificate_password_env", "AZURE_CLIENT_CERTIFICATE_PASSWORD")
            pw_env = frozenset({name}) if name in environ else frozenset()
        return LoginPlan(
            method, f"CertificateCredential (tenant={tenant}, {who}, certificate_file={cert})", pw_env
        )
    used = frozenset(n for n in DEFAULT_SECRET_ENV if environ.get(n))
    return LoginPlan(
        method,
        "DefaultAzureCredential (environment, workload identity, managed identity, "
        "developer tools, in that order)",
        used,
    )


def _read_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    except OSError as e:
        raise AccessDenied(f"cannot read {what} {path}: {e.strerror or type(e).__name__}") from None


def _require(value: str | None, what: str, option: str, env: str) -> str:
    if not value:
        raise AccessDenied(f"{what} is not set: give auth.{option} or set {env}")
    return value


@dataclass(frozen=True)
class _Ask:
    """What every credential builder reads: the `auth:` block, the environment, and the keyword
    arguments shared by every credential (transport settings, authority, tenants)."""

    auth: Mapping[str, Any]
    environ: Mapping[str, str]
    kw: dict[str, Any]

    @property
    def client_id(self) -> str:
        value = self.auth.get("client_id") or self.environ.get("AZURE_CLIENT_ID")
        return _require(value, "client id", "client_id", "AZURE_CLIENT_ID")

    @property
    def tenant_id(self) -> str:
        value = self.auth.get("tenant_id") or self.environ.get("AZURE_TENANT_ID")
        return _require(value, "tenant id", "tenant_id", "AZURE_TENANT_ID")


def build_credential(
    auth: Mapping[str, Any], environ: Mapping[str, str], transport: Mapping[str, Any]
) -> Any:
    """A credential for this `auth:` block. `transport` bounds its HTTP calls (retries, timeouts, CA)."""
    method = auth.get("method", "default")
    kw: dict[str, Any] = dict(transport)
    authority = auth.get("authority_host") or environ.get("AZURE_AUTHORITY_HOST")
    if authority and method != "managed_identity":
        kw["authority"] = authority
    # Only when asked: instance discovery guards against a wrong authority host in the public clouds.
    if auth.get("disable_instance_discovery") and method != "managed_identity":
        kw["disable_instance_discovery"] = True
    if auth.get("additionally_allowed_tenants"):
        kw["additionally_allowed_tenants"] = list(auth["additionally_allowed_tenants"])
    return _BUILDERS.get(method, _default)(_Ask(auth, environ, kw))


def _managed_identity(ask: _Ask) -> Any:
    import azure.identity as ai

    # The SDK finds the endpoint itself (IDENTITY_ENDPOINT, MSI_ENDPOINT, IMDS...) in os.environ.
    return ai.ManagedIdentityCredential(client_id=ask.auth.get("client_id"), **ask.kw)


def _workload_identity(ask: _Ask) -> Any:
    import azure.identity as ai

    token_file = ask.auth.get("token_file") or ask.environ.get("AZURE_FEDERATED_TOKEN_FILE")
    return ai.WorkloadIdentityCredential(
        tenant_id=ask.tenant_id,
        client_id=ask.client_id,
        token_file_path=_require(
            token_file, "federated token file", "token_file", "AZURE_FEDERATED_TOKEN_FILE"
        ),
        **ask.kw,
    )


def _client_secret(ask: _Ask) -> Any:
    import azure.identity as ai

    if "client_secret_file" in ask.auth:
        secret = _read_file(ask.auth["client_secret_file"], "client_secret_file")
    else:
        name = ask.auth.get("client_secret_env", "AZURE_CLIENT_SECRET")
        secret = _require(ask.environ.get(name), "client secret", "client_secret_file", name)
    return ai.ClientSecretCredential(ask.tenant_id, ask.client_id, secret, **ask.kw)


def _client_certificate(ask: _Ask) -> Any:
    import azure.identity as ai

    auth, kw = ask.auth, dict(ask.kw)
    cert = auth.get("certificate_file") or ask.environ.get("AZURE_CLIENT_CERTIFICATE_PATH")
    cert = _require(cert, "client certificate", "certificate_file", "AZURE_CLIENT_CERTIFICATE_PATH")
    if "certificate_password_file" in auth:
        kw["password"] = _read_file(auth["certificate_password_file"], "certificate_password_file")
    else:
        password = ask.environ.get(auth.get("certificate_password_env", "AZURE_CLIENT_CERTIFICATE_PASSWORD"))
        if password:
            kw["password"] = password
    try:
        with open(cert, "rb") as f:
            kw["certificate_data"] = f.read()
    except OSError as e:
        raise AccessDenied(f"cannot read certificate_file {cert}: {e.strerror or type(e).__name__}") from None
    tenant, client = ask.tenant_id, ask.client_id
    try:
        return ai.CertificateCredential(tenant, client, **kw)
    except ValueError as e:  # unreadable PEM/PFX or wrong password; the message names no secret
        raise AccessDenied(f"cannot load certificate_file {cert}: {e}") from None


def _default(ask: _Ask) -> Any:
    import azure.identity as ai

    kw = dict(ask.kw)
    if ask.auth.get("client_id"):
        kw["managed_identity_client_id"] = ask.auth["client_id"]
        kw["workload_identity_client_id"] = ask.auth["client_id"]
    if ask.auth.get("tenant_id"):
        kw["workload_identity_tenant_id"] = ask.auth["tenant_id"]
    return ai.DefaultAzureCredential(**kw)


_BUILDERS: dict[str, Callable[[_Ask], Any]] = {
    "managed_identity": _managed_identity,
    "workload_identity": _workload_identity,
    "client_secret": _client_secret,
    "client_certificate": _client_certificate,
}
