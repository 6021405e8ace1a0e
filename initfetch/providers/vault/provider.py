"""`vault://` — HashiCorp Vault and OpenBao.

`vault://MOUNT/PATH[?version=N][#key]`: KV v1 and v2 are told apart per mount,
and every other readable path (database/creds, rabbitmq/creds, pki/ca/pem, ...)
is read as it is, with its lease (reads.py). A write-style reference (`write:`
in the manifest: pki/issue/ROLE, transit/decrypt/KEY) is one POST, never
repeated when it may have happened (writes.py; certificates: certs.py). Connection settings and the login
method are per instance (client.py, auth.py); leases and the login token are
renewed and revoked through the Provider interface (leases.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from initfetch.errors import BadReference, SecretError
from initfetch.providers.base import (
    Document,
    Endpoint,
    FetchContext,
    Identity,
    Lease,
    OptionProblem,
    Provider,
)
from initfetch.providers.vault import leases
from initfetch.providers.vault.auth import check_auth
from initfetch.providers.vault.client import VaultClient
from initfetch.providers.vault.reads import Mounts, read_kv2, read_plain
from initfetch.reference import DocKey, Reference


class VaultProvider(Provider):
    type_name = "vault"
    backend_name = "Vault"
    login_name = "Vault token"
    OPTIONS: ClassVar = {
        "address": str,
        "namespace": str,
        "ca_file": str,
        "ca_path": str,
        "client_cert": str,
        "client_key": str,
        "tls_server_name": str,
        "tls_skip_verify": bool,
        "auth": dict,
    }
    # One request per secret (Vault has no batch read): enough in flight that 300
    # reads take a handful of round trips, as Vault Agent's parallel reads do.
    default_concurrency = 64
    writes = True  # pki/issue/ROLE, transit/decrypt/KEY, ... (writes.py)

    def __init__(self, name: str, options: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        super().__init__(name, options, environ)
        self.client = VaultClient(name, self.options, environ, self.concurrency)
        self.mounts = Mounts(self.client)
        self.policies: list[str] = []  # the token's, once `identity` looked it up (doctor)
        self.certs: set[str] = set()  # lease ids made for certificates this instance issued

    # --- offline validation ---

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> Iterable[OptionProblem]:
        yield from super().check_options(options)
        if isinstance(options.get("auth"), Mapping):
            yield from check_auth(options["auth"])
        if "client_key" in options and "client_cert" not in options:
            yield ("client_key",), "client_key needs client_cert"
        if options.get("ca_file") is not None and options.get("ca_path") is not None:
            yield ("ca_path",), "give ca_file or ca_path, not both"
        address = options.get("address")
        if isinstance(address, str) and not address.startswith(("http://", "https://")):
            yield ("address",), "address must start with https:// or http://"

    @classmethod
    def check_reference(cls, ref: Reference) -> str | None:
        if ref.doc.write is not None and ref.doc.query:
            return "a write-style reference takes no ?query; give its parameters in write:"
        unknown = {k for k, _ in ref.doc.query} - {"version"}
        if unknown:
            return f"unknown query parameter(s) for vault: {', '.join(sorted(unknown))} (known: version)"
        version = ref.doc.param("version")
        if version is not None and not (version.isdigit() and int(version) > 0):
            return "version must be a positive integer (a KV v2 version number)"
        path = ref.doc.path
        if path.startswith("/") or path.endswith("/") or "//" in path:
            return "a vault path is MOUNT/PATH, without leading, trailing or doubled slashes"
        if "/" not in path:
            return "a vault path is MOUNT/PATH (e.g. secret/myapp/db); a mount alone is not a secret"
        if any(part in (".", "..") for part in path.split("/")):
            return "a vault path cannot contain '.' or '..' segments"
        return None

    # --- reading ---

    def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
        if doc.write is not None:
            from initfetch.providers.vault import writes  # with certs.py: only for write-style secrets

            document = writes.write(self.client, self.mounts, doc, ctx)
            if document.lease is not None and "serial_number" in document.metadata:
                self.certs.add(document.lease.id)
            return document
        # Through `run`: a read rejected for a dead token is made again after a new login.
        return self.client.run(ctx, lambda api: self._read(api, doc))

    def _read(self, api: Any, doc: DocKey) -> Document:
        mount = self.mounts.for_path(api, doc.path)
        version = doc.param("version")
        if mount is not None and mount.type == "kv" and mount.kv_version == 2:
            return read_kv2(self.client, api, mount, doc.path, version)
        if version is not None:
            kind = f"a KV v{mount.kv_version}" if mount and mount.type == "kv" else "not a KV v2"
            where = mount.path if mount else doc.path
            raise BadReference(f"?version needs a KV v2 mount; {where} is {kind} mount")
        return read_plain(self.client, api, mount, doc.path)

    # --- leases and the login token ---

    def renew(self, lease: Lease, ctx: FetchContext) -> Lease:
        return leases.renew(self.client, lease, ctx)

    def revoke(self, lease_id: str, ctx: FetchContext) -> None:
        if lease_id in self.certs:  # a certificate without a Vault lease: revoke its serial
            leases.revoke_certificate(self.client, lease_id, ctx)
            self.certs.discard(lease_id)
            return
        leases.revoke(self.client, lease_id, ctx)

    @property
    def login_generation(self) -> int:
        return self.client.generation

    def login_lease(self, ctx: FetchContext) -> Lease | None:
        return leases.token(self.client, ctx)

    def renew_login(self, lease: Lease, ctx: FetchContext) -> Lease:
        return leases.renew_token(self.client, int(lease.duration), ctx)

    def can_login_again(self) -> bool:
        """Every login method can, and a token method with auth.token_file (read again); a token
        from VAULT_TOKEN, BAO_TOKEN or ~/.vault-token would only be the same token again."""
        return self.client.auth.can_login_again

    def login_again(self, ctx: FetchContext) -> Lease | None:
        """Drop the current token and log in afresh (AppRole, Kubernetes, JWT, a rotated token file)."""
        self.client.forget_login()
        return leases.token(self.client, ctx)

    def owns_login(self) -> bool:
        """A token from a login method, not one it was given (VAULT_TOKEN, a token file). The
        token_file of kubernetes or jwt holds the JWT it logs in with: that token is still ours."""
        return self.client.auth.method != "token"

    def revoke_login(self, ctx: FetchContext) -> None:
        leases.revoke_token(self.client, ctx)

    def unreachable_hint(self) -> str | None:
        return self.client.conn.what_to_check()

    # --- doctor (its module is loaded by `initfetch doctor` only) ---

    def endpoints(self, docs: Sequence[DocKey]) -> list[Endpoint]:
        from initfetch.providers.vault import doctor

        return doctor.endpoints(self)

    def identity(self, docs: Sequence[DocKey], ctx: FetchContext) -> Identity:
        from initfetch.providers.vault import doctor

        return doctor.identity(self, ctx)

    def diagnose(self, doc: DocKey | None, error: SecretError, ctx: FetchContext) -> str:
        from initfetch.providers.vault import doctor

        return doctor.diagnose(self, doc, error, ctx)

    def credential_env(self) -> set[str]:
        return self.client.auth.configured_env()

    def close(self) -> None:
        self.client.close()
