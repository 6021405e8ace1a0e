"""What a long-running initfetch tells an outside observer (`--listen`'s metrics), as events.

The resolver, the watcher, the lease keeper and the notifier call an `Observer` at the
points that matter; the default one does nothing, so without `--listen` nothing changes
and nothing is imported. Every argument is a name from the manifest (a provider
instance, a secret), a class from a fixed set (a SecretError kind, an action, a result)
or a number: never a value, a reference's path or an address. An observer must be
cheap and must not raise: it is called on the threads that do the work.
"""

from __future__ import annotations

from typing import Any

# Notification actions and their results (label values, a fixed set).
SIGNAL, RESTART, COMMAND = "signal", "restart", "command"
OK, FAILED, TIMEOUT, NOT_STARTED, SKIPPED = "ok", "failed", "timeout", "not-started", "skipped"


class Observer:
    """The events; every method is a no-op here."""

    def request(self, instance: str, seconds: float, failure: str | None) -> None:
        """One call to a backend (a read, a batch, a renewal) took `seconds`; `failure`: its class."""

    def backend(self, instance: str, up: bool) -> None:
        """`instance` answered (up), or failed with a transient error (down: unreachable, 5xx)."""

    def refresh(self, instance: str, failure: str | None) -> None:
        """A watcher's refresh (a read or a renewal) of one document of `instance`: it
        succeeded (`failure` None) or failed with that class."""

    def files_written(self, count: int) -> None:
        """`count` rendered files were written (first render, refreshes and restores)."""

    def notified(self, action: str, result: str) -> None:
        """A notification (SIGNAL, RESTART, COMMAND) was sent, with its result."""

    def watching(self, watcher: Any) -> None:
        """A watcher started: its schedule may be read (at scrape time) from now on."""


NULL = Observer()
