"""Vault / OpenBao leases and the login token: renew, revoke, look up.

Each call goes through the instance's logged-in client, with the caller's
deadline and the same error mapping as a read (transient -> Unavailable,
refused -> AccessDenied / BadReference), so a failed renewal is handled like a
failed read. Nothing here logs or returns a secret: lease ids and TTLs only.
"""

from __future__ import annotations

from initfetch.providers.base import FetchContext, Lease
from initfetch.providers.vault.client import VaultClient

TOKEN_LEASE_ID = "auth/token/self"  # noqa: S105 - how the token shows up as a Lease; not a real lease id


def renew(client: VaultClient, lease: Lease, ctx: FetchContext) -> Lease:
    """Ask for the lease's first duration again; Vault may grant less (max TTL)."""
    with client.call(ctx, f"renewing lease {lease.id}") as hvac:
        response = hvac.sys.renew_lease(lease_id=lease.id, increment=lease.duration or None)
    data = response if isinstance(response, dict) else {}
    return Lease(
        str(data.get("lease_id") or lease.id),
        int(data.get("lease_duration") or 0),
        bool(data.get("renewable")),
    )


def revoke(client: VaultClient, lease_id: str, ctx: FetchContext) -> None:
    with client.call(ctx, f"revoking lease {lease_id}") as hvac:
        hvac.sys.revoke_lease(lease_id=lease_id)


def token(client: VaultClient, ctx: FetchContext) -> Lease | None:
    """The login token as a lease, or None when it never expires (a root or periodic-less token)."""
    with client.call(ctx, "looking up the token") as hvac:
        response = hvac.auth.token.lookup_self()
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict) or not int(data.get("ttl") or 0):
        return None
    return Lease(TOKEN_LEASE_ID, int(data["ttl"]), bool(data.get("renewable")))


def renew_token(client: VaultClient, increment: int, ctx: FetchContext) -> Lease:
    with client.call(ctx, "renewing the token") as hvac:
        response = hvac.auth.token.renew_self(increment=f"{increment}s" if increment else None)
    auth = response.get("auth") if isinstance(response, dict) else None
    auth = auth if isinstance(auth, dict) else {}
    return Lease(TOKEN_LEASE_ID, int(auth.get("lease_duration") or 0), bool(auth.get("renewable")))


def revoke_token(client: VaultClient, ctx: FetchContext) -> None:
    """Revoke the login token (and with it, in Vault, every lease it created)."""
    with client.call(ctx, "revoking the token") as hvac:
        hvac.auth.token.revoke_self()
