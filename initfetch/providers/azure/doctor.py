"""What `initfetch doctor` asks Azure: who the credential logs in as, and what a failed read
means.

Identity: the vault's own login challenge (an unauthenticated request answers 401 with
the tenant and the resource, as the SDK's first request does), then a token for that
resource from the instance's credential, whose claims (tid, oid, appid) are decoded
without verifying them: doctor only reports them, nothing trusts them. The token itself
is never shown. A 403 names the object id and the role it needs.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from initfetch.errors import AccessDenied, NotFound, SecretError, Unavailable
from initfetch.providers.base import Endpoint, FetchContext, Identity
from initfetch.reference import DocKey

if TYPE_CHECKING:
    from initfetch.providers.azure.keyvault import KeyVaultProvider

API_VERSION = "7.5"
PUBLIC_AUTHORITY = "https://login.microsoftonline.com"
_PARAM = re.compile(r'(\w+)="([^"]*)"')


def endpoints(provider: KeyVaultProvider, docs: Sequence[DocKey]) -> list[Endpoint]:
    env = provider.environ
    ca = provider.options.get("ca_file") or env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    out: list[Endpoint] = []
    for vault in dict.fromkeys(d.path.split("/")[0] for d in docs):
        url = provider.vault_url(vault)
        if all(e.url != url for e in out):
            out.append(Endpoint(url, f"Key Vault {vault}", ca))
    login = _login_endpoint(provider)
    if login is not None:
        out.append(Endpoint(login, "login", ca if login.startswith("https://") else None))
    return out


def _login_endpoint(provider: KeyVaultProvider) -> str | None:
    """Where the credential asks for tokens: the authority, or a managed identity endpoint."""
    env = provider.environ
    if provider.login_method == "managed_identity" or (
        provider.login_method == "default" and not env.get("AZURE_CLIENT_SECRET")
    ):
        endpoint = env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT")
        if endpoint:
            return endpoint
        if provider.login_method == "managed_identity":
            return None  # IMDS on a link-local address: reachable only in Azure
    host = provider.auth.get("authority_host") or env.get("AZURE_AUTHORITY_HOST") or PUBLIC_AUTHORITY
    return str(host).rstrip("/")


def identity(provider: KeyVaultProvider, docs: Sequence[DocKey], ctx: FetchContext) -> Identity:
    vault, name = docs[0].path.split("/")[:2]
    url = provider.vault_url(vault)
    tenant, scope = challenge(provider, f"{url}/secrets/{name}/", ctx)
    try:
        token = provider.credential().get_token(scope, tenant_id=tenant)
    except Exception as e:
        mapped = provider.map_error(e, f"a token for {scope}")
        if mapped is None:
            raise
        raise mapped from None
    claims = _claims(token.token)
    provider.who = str(claims.get("oid") or "")
    rows: Identity = [("credential", provider.login_description)]
    if not claims:
        return [*rows, ("token", "not a JWT: its claims cannot be shown")]
    return [
        *rows,
        ("tenant", str(claims.get("tid") or tenant or "-")),
        ("object id", str(claims.get("oid") or "-")),
        ("client id", str(claims.get("appid") or claims.get("azp") or "-")),
        *([("user", str(claims["upn"]))] if claims.get("upn") else []),
    ]


def challenge(provider: KeyVaultProvider, url: str, ctx: FetchContext) -> tuple[str | None, str]:
    """The tenant and the token scope the vault asks for (its 401 WWW-Authenticate)."""
    import requests

    verify = provider.options.get("ca_file") or True
    try:
        response = requests.get(
            url, params={"api-version": API_VERSION}, timeout=ctx.timeout(), verify=verify
        )
    except requests.exceptions.SSLError as e:
        raise AccessDenied(f"TLS to {url} failed: {type(e).__name__}: set ca_file for a private CA") from None
    except requests.exceptions.RequestException as e:
        raise Unavailable(f"cannot reach {url} ({type(e).__name__})") from None
    params = dict(_PARAM.findall(response.headers.get("WWW-Authenticate", "")))
    authority = params.get("authorization") or params.get("authorization_uri")
    resource = params.get("resource") or params.get("scope", "").removesuffix("/.default")
    if response.status_code != 401 or not resource:
        raise AccessDenied(
            f"{url} answered {response.status_code} without a Bearer login challenge: is it a Key Vault URL?"
        )
    tenant = urlsplit(authority).path.strip("/").split("/")[0] if authority else None
    return tenant or None, resource.rstrip("/") + "/.default"


def _claims(token: str) -> dict[str, Any]:
    """A JWT's payload, not verified (only shown); {} when the token is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def diagnose(provider: KeyVaultProvider, doc: DocKey | None, error: SecretError, ctx: FetchContext) -> str:
    if isinstance(error, Unavailable):
        return f"{error}: {provider.unreachable_hint()}"
    if doc is None:
        return str(error)
    vault = doc.path.split("/")[0]
    text = str(error)
    if isinstance(error, AccessDenied) and "SecretDisabled" in text:
        return f"{error}: enable the secret (or pin an enabled version)"
    if isinstance(error, AccessDenied) and "access denied" in text:
        who = f"the identity (object id {provider.who})" if provider.who else "the identity"
        return (
            f"{who} needs the Key Vault Secrets User role on vault {vault} (RBAC), "
            "or an access policy with Get secret permission"
        )
    if isinstance(error, NotFound):
        return f"{error}: check the secret name (and version) in vault {vault}"
    return text
