"""Reading a Vault path: which secrets engine serves it, then the read itself.

The engine behind a path is found the way the Vault CLI finds it, through
`sys/internal/ui/mounts/<path>`, and cached per mount:
- KV v2: reads `MOUNT/data/PATH` (optionally `?version=N`); a deleted or
  destroyed version is a not-found error that says so.
- KV v1 and every other engine (database/creds, rabbitmq/creds, PKI, ...): the
  path is read as it is; a lease (id, duration, renewable) comes back on the
  Document, and all keys of one dynamic secret come from that one read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from initfetch.errors import BadReference, NotFound
from initfetch.providers.base import Document, Lease
from initfetch.providers.vault.client import VaultClient
from initfetch.providers.vault.http import Rejected, VaultAnswer, not_vault, not_vault_message


@dataclass(frozen=True)
class Mount:
    path: str  # "secret/", as Vault reports it
    type: str  # "kv", "rabbitmq", "database", ...
    kv_version: int  # 1 or 2 for kv, 0 otherwise


class Mounts:
    """The mount serving each path, looked up once per mount.

    Concurrent first reads under one mount wait for one lookup (single flight)
    instead of each asking Vault.
    """

    def __init__(self, client: VaultClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._mounts: dict[str, Mount] = {}
        self._lookups: dict[str, threading.Event] = {}  # by the path's first segment

    def for_path(self, api: Any, path: str) -> Mount | None:
        """The mount serving `path`; None when that endpoint denies us (no access anywhere in
        the mount, or no mount there): the path is then read as it is and its own error speaks."""
        cached = self._cached(path)
        if cached is not None:
            return cached
        first = path.split("/", 1)[0]
        with self._lock:
            # Again under the lock: a lookup may have finished since the check above.
            cached = self._cached(path)
            if cached is not None:
                return cached
            running = self._lookups.get(first)
            if running is None:
                self._lookups[first] = threading.Event()
        if running is not None:  # single flight: another thread is looking this mount up
            running.wait(timeout=max(0.0, self.client.deadline_left()))
            cached = self._cached(path)
            if cached is not None:
                return cached
            return self._lookup(api, path)  # a deeper mount, or that lookup failed
        try:
            return self._lookup(api, path)
        finally:
            with self._lock:  # the mount is cached (or the lookup failed) before waiters wake
                self._lookups.pop(first).set()

    def _cached(self, path: str) -> Mount | None:
        cached = [m for p, m in list(self._mounts.items()) if path.startswith(p)]  # other threads add
        return max(cached, key=lambda m: len(m.path)) if cached else None

    def _lookup(self, api: Any, path: str) -> Mount | None:
        with self.client.errors(f"detecting the secrets engine of {path}"):
            try:
                response = api.get(f"/v1/sys/internal/ui/mounts/{path}")
            except VaultAnswer as e:
                if e.status == 404 and not_vault(e):  # any web server answers 404: say so, not "not found"
                    raise BadReference(not_vault_message(self.client.conn.address, 404)) from None
                if e.status in (403, 404):
                    return None
                raise
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


def read_kv2(client: VaultClient, api: Any, mount: Mount, path: str, version: str | None) -> Document:
    relative = path[len(mount.path) :]
    if not relative:
        raise BadReference(f"{path} is the KV v2 mount itself, not a secret under it")
    api_path = f"{mount.path}data/{relative}"
    wanted = f"version {version} of {path}" if version else path
    with client.errors(f"reading {api_path}"):
        try:
            response = api.get(f"/v1/{api_path}", params={"version": int(version)} if version else None)
        except VaultAnswer as e:
            if e.status != 404:
                raise
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


def read_plain(client: VaultClient, api: Any, mount: Mount | None, path: str) -> Document:
    try:
        with client.errors(f"reading {path}"):
            try:
                response = api.get(f"/v1/{path}")
            except VaultAnswer as e:
                if e.status != 404:
                    raise
                if not_vault(e):
                    raise BadReference(not_vault_message(client.conn.address, 404)) from None
                hint = " (no secrets engine is mounted there)" if _no_route(e) else ""
                raise NotFound(f"no secret at {path}{hint}") from None
    except Rejected as e:
        if mount is None:
            # Denied everywhere. Still a Rejected: VaultClient.run tells a dead token apart from
            # a missing policy, and this message stands only for the latter.
            raise Rejected(
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
    """The body of a 200 answer that is not JSON (an Answer, as hvac returns the raw response)."""
    if isinstance(response, dict) or getattr(response, "status_code", None) != 200:
        return None
    text = getattr(response, "text", "")
    return text if isinstance(text, str) and text else None
