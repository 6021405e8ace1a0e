"""`vault://` — HashiCorp Vault and OpenBao.

`vault://MOUNT/PATH[?version=N][#key]`. The secrets engine behind a path is
found the way the Vault CLI finds it, through `sys/internal/ui/mounts/<path>`,
and cached per mount:
- KV v2: reads `MOUNT/data/PATH` (optionally `?version=N`); a deleted or
  destroyed version is a not-found error that says so.
- KV v1 and every other engine (database/creds, rabbitmq/creds, PKI, ...): the
  path is read as it is; a lease (id, duration, renewable) comes back on the
  Document, and all keys of one dynamic secret come from that one read.

Connection settings and the login method are per instance (see
http.Connection and auth.py); login happens once, lazily, under a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from initfetch.errors import AccessDenied, BadReference, NotFound, SecretError, Unavailable
from initfetch.providers.base import Document, FetchContext, Lease, OptionProblem, Provider
from initfetch.providers.vault.auth import AuthMethod, check_auth, make_auth
from initfetch.providers.vault.http import (
    Connection,
    call_timeout,
    make_session,
    mapped_errors,
    not_vault,
    not_vault_message,
)
from initfetch.reference import DocKey, Reference

log = logging.getLogger("initfetch.providers.vault")


@dataclass(frozen=True)
class Mount:
    path: str  # "secret/", as Vault reports it
    type: str  # "kv", "rabbitmq", "database", ...
    kv_version: int  # 1 or 2 for kv, 0 otherwise


class VaultProvider(Provider):
    type_name = "vault"
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

    def __init__(self, name: str, options: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        super().__init__(name, options, environ)
        self.conn = Connection.from_options(self.options, environ)
        self.auth: AuthMethod = make_auth(self.options.get("auth"), environ)
        self._lock = threading.Lock()
        self._client: Any = None
        self._session: Any = None
        self._login_error: SecretError | None = None
        self._mounts: dict[str, Mount] = {}
        # Mount lookups in progress, by the path's first segment: concurrent first reads
        # under one mount wait for one lookup instead of each asking Vault.
        self._lookups: dict[str, threading.Event] = {}
        if self.conn.skip_verify:
            log.warning(
                "vault provider %r: TLS certificate verification is OFF (tls_skip_verify: true) for %s",
                name,
                self.conn.address,
            )
        if self.conn.address_from == "default":
            log.warning(
                "vault provider %r: VAULT_ADDR (or BAO_ADDR) is not set and the manifest gives no "
                "address; using the Vault CLI's default %s",
                name,
                self.conn.address,
            )
        elif self.conn.address_from.startswith("BAO_"):
            log.info("vault provider %r: address from %s", name, self.conn.address_from)
        if not self.conn.skip_verify and environ.get("VAULT_SKIP_VERIFY"):
            log.warning(
                "vault provider %r: VAULT_SKIP_VERIFY is ignored; set tls_skip_verify: true in the manifest "
                "to turn verification off",
                name,
            )

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

    # --- clients and login ---

    def _login(self) -> Any:
        """The logged-in hvac client; logs in once, on first use, under a lock."""
        with self._lock:
            if self._client is not None:
                return self._client
            if self._login_error is not None:
                raise self._login_error
            import hvac

            if self._session is None:
                self._session = make_session(self.conn, self.concurrency)
            client = hvac.Client(
                url=self.conn.address,
                namespace=self.conn.namespace,
                session=self._session,
                verify=self._session.verify,  # the CA variables resolved once (http.py)
                cert=self.conn.cert,
            )
            try:
                with mapped_errors(
                    self._session,
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
            self._client = client
            return client

    def credential_env(self) -> set[str]:
        return self.auth.configured_env()

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
            self._client = None
            self._session = None

    # --- fetching ---

    def _ensure_session(self) -> None:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = make_session(self.conn, self.concurrency)

    # --- calls outside a read: leases and the token (initfetch.providers.vault.leases) ---

    @contextmanager
    def call(self, ctx: FetchContext, what: str) -> Iterator[Any]:
        """The logged-in client for one call, with a read's session, deadline and error mapping."""
        self._ensure_session()
        with call_timeout(self._session, ctx.timeout):
            client = self._login()
            with self._errors(what):
                yield client

    def forget_login(self) -> None:
        """Drop the token: the next call logs in again (watch mode, when it cannot be renewed)."""
        with self._lock:
            self._client = None
            self._login_error = None

    def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
        self._ensure_session()
        with call_timeout(self._session, ctx.timeout):
            client = self._login()
            mount = self._mount_for(client, doc.path)
            version = doc.param("version")
            if mount is not None and mount.type == "kv" and mount.kv_version == 2:
                return self._read_kv2(client, mount, doc.path, version)
            if version is not None:
                kind = f"a KV v{mount.kv_version}" if mount and mount.type == "kv" else "not a KV v2"
                where = mount.path if mount else doc.path
                raise BadReference(f"?version needs a KV v2 mount; {where} is {kind} mount")
            return self._read_plain(client, mount, doc.path)

    def _errors(self, what: str) -> Any:
        return mapped_errors(
            self._session,
            what=what,
            address=self.conn.address,
            scrub=self.auth.secrets(),
            hint=self.conn.unreachable_hint(),
        )

    def _mount_for(self, client: Any, path: str) -> Mount | None:
        """The mount serving `path`, as `sys/internal/ui/mounts/<path>` tells (the CLI's way); cached.

        None when that endpoint denies us (no access anywhere in the mount, or no
        mount there): the path is then read as it is and its own error speaks.
        """
        cached = self._cached_mount(path)
        if cached is not None:
            return cached
        first = path.split("/", 1)[0]
        with self._lock:
            # Again under the lock: a lookup may have finished since the check above.
            cached = self._cached_mount(path)
            if cached is not None:
                return cached
            running = self._lookups.get(first)
            if running is None:
                self._lookups[first] = threading.Event()
        if running is not None:  # single flight: another thread is looking this mount up
            running.wait(timeout=max(0.0, self._deadline_left()))
            cached = self._cached_mount(path)
            if cached is not None:
                return cached
            return self._lookup_mount(client, path)  # a deeper mount, or that lookup failed
        try:
            return self._lookup_mount(client, path)
        finally:
            with self._lock:  # the mount is cached (or the lookup failed) before waiters wake
                self._lookups.pop(first).set()

    def _cached_mount(self, path: str) -> Mount | None:
        cached = [m for p, m in list(self._mounts.items()) if path.startswith(p)]  # other threads add
        return max(cached, key=lambda m: len(m.path)) if cached else None

    def _deadline_left(self) -> float:
        timeout = getattr(self._session.local, "timeout", None)
        return timeout() if timeout is not None else 10.0

    def _lookup_mount(self, client: Any, path: str) -> Mount | None:
        import hvac.exceptions as hx

        with self._errors(f"detecting the secrets engine of {path}"):
            try:
                response = client.adapter.get(f"/v1/sys/internal/ui/mounts/{path}")
            except hx.InvalidPath as e:
                if not_vault(e):  # any web server answers 404 to this: say so, not "not found"
                    raise BadReference(not_vault_message(self.conn.address, 404)) from None
                return None
            except hx.Forbidden:
                return None
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("path"), str):
            return None
        options = data.get("options") or {}
        kv_version = 0
        if data.get("type") == "kv":
            kv_version = 2 if str(options.get("version", "1")) == "2" else 1
        mount_path = data["path"] if data["path"].endswith("/") else data["path"] + "/"
        mount = Mount(mount_path, str(data.get("type", "")), kv_version)
        self._mounts[mount_path] = mount
        return mount

    def _read_kv2(self, client: Any, mount: Mount, path: str, version: str | None) -> Document:
        import hvac.exceptions as hx

        relative = path[len(mount.path) :]
        if not relative:
            raise BadReference(f"{path} is the KV v2 mount itself, not a secret under it")
        api_path = f"{mount.path}data/{relative}"
        wanted = f"version {version} of {path}" if version else path
        with self._errors(f"reading {api_path}"):
            try:
                response = client.secrets.kv.v2.read_secret_version(
                    path=relative,
                    version=int(version) if version else None,
                    mount_point=mount.path.rstrip("/"),
                    raise_on_deleted_version=True,
                )
            except hx.InvalidPath as e:
                raise _kv2_not_found(e, path, version) from None
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
            raise NotFound(f"{wanted} holds no data")
        meta = data.get("metadata") or {}
        return Document(
            value=data["data"],
            version=str(meta["version"]) if meta.get("version") is not None else None,
            metadata={
                "engine": "kv",
                "kv_version": 2,
                "mount": mount.path,
                "created_time": meta.get("created_time"),
            },
        )

    def _read_plain(self, client: Any, mount: Mount | None, path: str) -> Document:
        import hvac.exceptions as hx

        try:
            with self._errors(f"reading {path}"):
                try:
                    response = client.adapter.get(f"/v1/{path}")
                except hx.InvalidPath as e:
                    if not_vault(e):
                        raise BadReference(not_vault_message(self.conn.address, 404)) from None
                    hint = " (no secrets engine is mounted there)" if _no_route(e) else ""
                    raise NotFound(f"no secret at {path}{hint}") from None
        except AccessDenied as e:
            if mount is None:
                # Denied everywhere: tell a dead token apart from a missing policy.
                if not self._token_valid(client):
                    raise AccessDenied(
                        f"permission denied reading {path}: Vault does not accept the token "
                        "(invalid, expired or revoked)"
                    ) from None
                raise AccessDenied(
                    f"{e}; sys/internal/ui/mounts/{path} was denied too, so the token may have no "
                    "access to this mount at all"
                ) from None
            raise
        text = _plain_text(response)
        if text is not None:  # e.g. pki/ca/pem: the body is the value
            return Document(value=text, metadata={"engine": mount.type if mount else None})
        if not isinstance(response, dict) or not isinstance(response.get("data"), dict):
            status = getattr(response, "status_code", 200)
            raise NotFound(f"{path} returned no data (HTTP {status}, empty body)")
        lease = None
        if response.get("lease_id"):
            lease = Lease(
                id=str(response["lease_id"]),
                duration=int(response.get("lease_duration") or 0),
                renewable=bool(response.get("renewable")),
            )
        metadata: dict[str, Any] = {"engine": mount.type if mount else None}
        if mount is not None:
            metadata["mount"] = mount.path
            if mount.type == "kv":
                metadata["kv_version"] = mount.kv_version
        return Document(value=response["data"], lease=lease, metadata=metadata)

    def _token_valid(self, client: Any) -> bool:
        """Whether Vault still accepts our token (auth/token/lookup-self needs no policy)."""
        import hvac.exceptions as hx

        try:
            with self._errors("looking up the token"):
                client.adapter.get("/v1/auth/token/lookup-self")
        except AccessDenied:
            return False
        except (SecretError, hx.VaultError):
            pass
        return True


def _kv2_not_found(e: Any, path: str, version: str | None) -> NotFound:
    """KV v2 404s: a deleted or destroyed version comes with its metadata, a missing one without."""
    meta = _as_dict(_as_dict(_as_dict(getattr(e, "json", None)).get("data")).get("metadata"))
    wanted = f"version {version} of {path}" if version else path
    if meta:
        label = wanted if version else f"the current version ({meta.get('version')}) of {path}"
        if meta.get("destroyed"):
            return NotFound(f"{label} was destroyed")
        if meta.get("deletion_time"):
            return NotFound(f"{label} was deleted at {meta['deletion_time']}")
    return NotFound(f"{wanted} does not exist")


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _no_route(e: Any) -> bool:
    errors = getattr(e, "errors", None) or []
    return any("no handler for route" in str(x) for x in errors)


def _plain_text(response: Any) -> str | None:
    """The body of a 200 answer that is not JSON (hvac returns the raw response for those)."""
    if isinstance(response, dict) or getattr(response, "status_code", None) != 200:
        return None
    text = getattr(response, "text", "")
    return text if isinstance(text, str) and text else None
