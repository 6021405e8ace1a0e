"""What resolving gives back: the values, where each came from (never the value), and the
provider instances that served them. Kept apart from the resolver so that what only reads
results (offline placeholders, `check`, preview, diff) does not import the machinery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from initfetch.providers.base import Lease, Provider


@dataclass
class Resolved:
    """Where one secret came from; never its value."""

    name: str
    ref: str
    provider: str
    outcome: str  # ok | default | absent | a SecretError kind
    version: str | None = None
    lease: Lease | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0
    shared_read: bool = False  # served by a read another reference also used

    def meta(self) -> dict[str, Any]:
        """What templates see as `meta.<name>`."""
        lease = self.lease
        return {
            "provider": self.provider,
            "version": self.version,
            "lease_id": lease.id if lease else None,
            "lease_duration": lease.duration if lease else None,
            "renewable": lease.renewable if lease else None,
            "metadata": self.metadata,
        }


@dataclass
class Resolution:
    values: dict[str, Any]
    info: dict[str, Resolved]
    instances: dict[str, Provider]
