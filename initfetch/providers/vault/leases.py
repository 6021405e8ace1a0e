"""Vault / OpenBao leases and the login token: renew, revoke, look up.

Each call goes through the instance's logged-in client, with the caller's
deadline and the same error mapping as a read (transient -> Unavailable,
refused -> AccessDenied / BadReference), so a failed renewal is handled like a
failed read. A lease Vault no longer knows is LeaseRevoked. Lease calls go
through `run`, so a token Vault stopped accepting is replaced like during a
read; calls about the token itself do not (its own renewal failing is how the
watcher learns it must log in again). Nothing here logs or returns a secret:
lease ids and TTLs only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from initfetch.errors import LeaseRevoked, NotRenewable
from initfetch.providers.base import FetchContext, Lease
from initfetch.providers.vault.client import VaultClient
from initfetch.providers.vault.http import VaultAnswer, call_timeout, vault_message

TOKEN_LEASE_ID = "auth/token/self"  # noqa: S105 - how the token shows up as a Lease; not a real lease id

# What Vault and OpenBao answer (400) for a lease they no longer hold: renew says "lease not
# found" (revoked, expired and removed, or never there) or "lease expired" (not yet removed);
# lookup says "invalid lease". Revoking an unknown lease succeeds (204).
GONE = ("lease not found", "lease expired", "invalid lease")


def renew(client: VaultClient, lease: Lease, ctx: FetchContext) -> Lease:
    """Ask for the lease's first duration again; Vault may grant less (max TTL)."""

    def call(api: Any) -> Any:
        with client.errors(f"renewing lease {lease.id}"), _gone(lease.id):
            return api.put(
                "/v1/sys/leases/renew", json={"lease_id": lease.id, "increment": lease.duration or None}
            )

    response = client.run(ctx, call)
    data = response if isinstance(response, dict) else {}
    return Lease(
        str(data.get("lease_id") or lease.id),
        int(data.get("lease_duration") or 0),
        bool(data.get("renewable")),
    )


def revoke(client: VaultClient, lease_id: str, ctx: FetchContext) -> None:
    def call(api: Any) -> None:
        with client.errors(f"revoking lease {lease_id}"), _gone(lease_id):
            api.put("/v1/sys/leases/revoke", json={"lease_id": lease_id})

    client.run(ctx, call)


def revoke_certificate(client: VaultClient, lease_id: str, ctx: FetchContext) -> None:
    """Revoke an issued certificate by its serial (MOUNT/revoke); `lease_id` is certs.py's."""
    from initfetch.providers.vault.certs import parse_lease_id

    mount, serial = parse_lease_id(lease_id)

    def call(api: Any) -> None:
        with client.errors(f"revoking certificate {serial}"):
            try:
                api.post(f"/v1/{mount}/revoke", json={"serial_number": serial})
            except VaultAnswer as e:
                if e.status != 400:  # 400: expired (nothing to revoke) or unknown to the mount
                    raise
                raise LeaseRevoked(f"the certificate {serial} has expired or is unknown") from None

    client.run(ctx, call)


@contextmanager
def _gone(lease_id: str) -> Iterator[None]:
    """Vault's 400 for a lease it no longer holds -> LeaseRevoked (the secret must be read anew)."""
    try:
        yield
    except VaultAnswer as e:
        if e.status != 400:
            raise
        text = vault_message(e, []).lower()
        if any(gone in text for gone in GONE):
            raise LeaseRevoked(f"the lease {lease_id} was revoked or has expired") from None
        if "not renewable" in text:
            raise NotRenewable(f"the lease {lease_id} is not renewable") from None
        raise


def token(client: VaultClient, ctx: FetchContext) -> Lease | None:
    """The login token as a lease, or None when it never expires (a root or periodic-less token)."""
    with client.call(ctx, "looking up the token") as api:
        response = api.get("/v1/auth/token/lookup-self")
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict) or not int(data.get("ttl") or 0):
        return None
    return Lease(TOKEN_LEASE_ID, int(data["ttl"]), bool(data.get("renewable")))


def renew_token(client: VaultClient, increment: int, ctx: FetchContext) -> Lease:
    """Renew the login token. A token that was given as is (it cannot be replaced) and is refused
    goes through the client's rejection check, so a dead one is named once as LoginExpired; a
    login method's refused token is left to the caller, which logs in again."""

    def call(api: Any) -> Any:
        with client.errors("renewing the token"):
            return api.post(
                "/v1/auth/token/renew-self", json={"increment": f"{increment}s"} if increment else {}
            )

    if client.auth.can_login_again:
        with call_timeout(client, ctx.timeout):
            response = call(client.login())
    else:
        response = client.run(ctx, call)
    auth = response.get("auth") if isinstance(response, dict) else None
    auth = auth if isinstance(auth, dict) else {}
    return Lease(TOKEN_LEASE_ID, int(auth.get("lease_duration") or 0), bool(auth.get("renewable")))


def revoke_token(client: VaultClient, ctx: FetchContext) -> None:
    """Revoke the login token (and with it, in Vault, every lease it created)."""
    with client.call(ctx, "revoking the token") as api:
        api.post("/v1/auth/token/revoke-self")
