"""Vault / OpenBao leases and the login token: lookup, renew, revoke, log in again.

Each call goes through the instance's own logged-in hvac client and HTTP
session, with the caller's deadline and the same error mapping as a read
(transient -> Unavailable, refused -> AccessDenied / BadReference), so the
watcher treats a failed renewal like a failed read. Nothing here logs or
returns a secret: lease ids and TTLs only.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from initfetch.providers.base import FetchContext, Lease
from initfetch.providers.vault.provider import VaultProvider

TOKEN_LEASE_ID = "auth/token/self"  # noqa: S105 - how the token shows up as a Lease; not a real lease id


def _client(provider: VaultProvider, ctx: FetchContext, what: str) -> AbstractContextManager[Any]:
    """The instance's logged-in client for one call, bounded by the deadline, errors mapped."""
    return provider.call(ctx, what)


def renew(provider: VaultProvider, lease: Lease, ctx: FetchContext) -> Lease:
    """Ask for the lease's first duration again; Vault may grant less (max TTL)."""
    with _client(provider, ctx, f"renewing lease {lease.id}") as client:
        response = client.sys.renew_lease(lease_id=lease.id, increment=lease.duration or None)
    data = response if isinstance(response, dict) else {}
    return Lease(
        str(data.get("lease_id") or lease.id),
        int(data.get("lease_duration") or 0),
        bool(data.get("renewable")),
    )


def revoke(provider: VaultProvider, lease_id: str, ctx: FetchContext) -> None:
    with _client(provider, ctx, f"revoking lease {lease_id}") as client:
        client.sys.revoke_lease(lease_id=lease_id)


def lookup(provider: VaultProvider, lease_id: str, ctx: FetchContext) -> dict[str, Any]:
    """`sys/leases/lookup`: ttl, renewable, expire_time, issue_time."""
    with _client(provider, ctx, f"looking up lease {lease_id}") as client:
        response = client.sys.read_lease(lease_id=lease_id)
    data = response.get("data") if isinstance(response, dict) else None
    return dict(data) if isinstance(data, dict) else {}


def token(provider: VaultProvider, ctx: FetchContext) -> Lease | None:
    """The login token as a lease, or None when it never expires (a root or periodic-less token)."""
    with _client(provider, ctx, "looking up the token") as client:
        response = client.auth.token.lookup_self()
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict) or not int(data.get("ttl") or 0):
        return None
    return Lease(TOKEN_LEASE_ID, int(data["ttl"]), bool(data.get("renewable")))


def renew_token(provider: VaultProvider, increment: int, ctx: FetchContext) -> Lease:
    with _client(provider, ctx, "renewing the token") as client:
        response = client.auth.token.renew_self(increment=f"{increment}s" if increment else None)
    auth = response.get("auth") if isinstance(response, dict) else None
    auth = auth if isinstance(auth, dict) else {}
    return Lease(TOKEN_LEASE_ID, int(auth.get("lease_duration") or 0), bool(auth.get("renewable")))


def revoke_token(provider: VaultProvider, ctx: FetchContext) -> None:
    """Revoke the login token (and with it, in Vault, every lease it created)."""
    with _client(provider, ctx, "revoking the token") as client:
        client.auth.token.revoke_self()


def can_login_again(provider: VaultProvider) -> bool:
    """A token from VAULT_TOKEN would only be the same token again; every other method can."""
    return provider.auth.method != "token" or "token_file" in provider.options


def login_again(provider: VaultProvider, ctx: FetchContext) -> Lease | None:
    """Drop the current token and log in afresh (AppRole, Kubernetes, JWT, a rotated token file)."""
    provider.forget_login()
    return token(provider, ctx)
