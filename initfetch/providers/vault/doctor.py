"""What `initfetch doctor` asks Vault / OpenBao: who the token is, and why a read failed.

- identity: `auth/token/lookup-self` (display name, policies, TTL, renewable). A token
  Vault no longer accepts is named as such (the client's rejection check tells a dead
  token from a policy without lookup-self), never as "permission denied".
- a denied read: `sys/capabilities-self` on the API path the read used (KV v2:
  MOUNT/data/PATH) says what the token's policies grant there, and the sentence names
  the policy stanza that is missing.
Nothing here reads or returns a secret: token metadata and capabilities only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from initfetch.errors import AccessDenied, LoginExpired, NotFound, SecretError, Unavailable
from initfetch.providers.base import Endpoint, FetchContext, Identity
from initfetch.providers.vault.http import Rejected
from initfetch.reference import DocKey

if TYPE_CHECKING:
    from initfetch.providers.vault.provider import VaultProvider


def endpoints(provider: VaultProvider) -> list[Endpoint]:
    conn, env = provider.client.conn, provider.environ
    # as requests verifies: the CA given, else its own variables, else certifi
    ca = conn.ca_file or conn.ca_path or env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    # sys/health answers without a token: 200 active, 429 standby, 503 sealed, 501 not initialized
    health = "/v1/sys/health?standbyok=true"
    return [Endpoint(conn.address, "Vault", ca, not conn.skip_verify, health, "ca_file or VAULT_CACERT")]


def identity(provider: VaultProvider, ctx: FetchContext) -> Identity:
    """Log in (if not yet) and look the token up."""
    client = provider.client

    def lookup(api: Any) -> Any:
        with client.errors("looking up the token (auth/token/lookup-self)"):
            return api.get("/v1/auth/token/lookup-self")

    rows: Identity = [("method", client.auth.describe())]
    try:
        response = client.run(ctx, lookup)
    except Rejected:  # the token is alive (run checked): its policies do not allow lookup-self
        return [
            *rows,
            ("token", "valid; its policies do not allow auth/token/lookup-self, so no more is known"),
        ]
    data = response.get("data") if isinstance(response, dict) else None
    data = data if isinstance(data, dict) else {}
    provider.policies = [str(p) for p in data.get("policies") or []]
    ttl = int(data.get("ttl") or 0)
    rows += [
        ("display name", str(data.get("display_name") or "-")),
        ("policies", ", ".join(provider.policies) or "none"),
        ("ttl", f"{ttl}s (expires {data.get('expire_time')})" if ttl else "never expires"),
        ("renewable", "yes" if data.get("renewable") else "no"),
    ]
    if client.conn.namespace:
        rows.append(("namespace", client.conn.namespace))
    return rows


def diagnose(provider: VaultProvider, doc: DocKey | None, error: SecretError, ctx: FetchContext) -> str:
    if isinstance(error, LoginExpired):
        return f"{error} (so every read is refused: not a policy problem)"
    if isinstance(error, Unavailable):
        return f"{error}: {provider.client.conn.what_to_check()}"
    if doc is None or not isinstance(error, AccessDenied):
        if isinstance(error, NotFound) and doc is not None:
            return f"{error}: check the path (and ?version) against what Vault holds"
        return str(error)
    try:
        api, caps, known = provider.client.run(ctx, lambda vault: _capabilities(provider, vault, doc.path))
    except SecretError:
        return f"{error}: sys/capabilities-self could not say which capability is missing"
    policies = ", ".join(provider.policies) if provider.policies else "its policies"
    granted = ", ".join(caps) if caps else "nothing"
    stanza = f'path "{api}" {{ capabilities = ["read"] }}'
    if not known:  # the mount could not be looked up: the token has no access anywhere in it
        mount, _, rest = api.partition("/")
        return (
            f"the token ({policies}) has no access to the {mount}/ mount at all: add {stanza} to one "
            f'of its policies (on a KV v2 mount the path is "{mount}/data/{rest}")'
        )
    granted = f"it grants: {granted}"
    return f"the token ({policies}) may not read {api} ({granted}): add {stanza} to one of its policies"


def _capabilities(provider: VaultProvider, vault: Any, path: str) -> tuple[str, list[str], bool]:
    """The API path a read of `path` uses, what the token's policies grant on it, and whether
    the mount (so the API path) is known."""
    mount = provider.mounts.for_path(vault, path)
    api = path
    if mount is not None and mount.type == "kv" and mount.kv_version == 2:
        api = f"{mount.path}data/{path[len(mount.path) :]}"
    with provider.client.errors(f"asking sys/capabilities-self about {api}"):
        response = vault.post("/v1/sys/capabilities-self", json={"paths": [api]})
    data = response.get("data", response) if isinstance(response, dict) else {}
    caps = data.get(api, data.get("capabilities")) if isinstance(data, dict) else None
    return api, [str(c) for c in caps] if isinstance(caps, list) else [], mount is not None
