"""What a 401/403 from Vault means, found out once per login generation.

Vault answers 403 both to a call its policies do not allow and to a token it no
longer accepts (revoked, expired, forgotten by a restarted server). When a call
made under `VaultClient.run` is rejected, one probe asks Vault whether the token
is alive (`VaultClient.token_alive`):
- alive: the denial is real and is raised as Vault gave it;
- dead: the client logs in again and the call is retried once with the new
  token; a token given as is (VAULT_TOKEN, ~/.vault-token) cannot be replaced,
  so LoginExpired names where it came from, for this call and every later one.

Single flight: hundreds of reads rejected at once share one probe and at most one
new login. The first thread to be rejected under a generation probes; the others
wait for it (each within its own deadline), then retry with the newer login or
raise what the probe found. A call rejected under an older generation than the
current one is simply retried.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

from initfetch.errors import AccessDenied, Unavailable
from initfetch.providers.base import FetchContext

if TYPE_CHECKING:
    from initfetch.providers.vault.client import VaultClient


class Rejections:
    """The probes of one client: the one in flight, and the last that found the token alive."""

    def __init__(self, client: VaultClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._probe: threading.Event | None = None  # set when the probe in flight has finished
        # (generation, time the probe was sent) of the last probe that found the token alive:
        # a call rejected before that moment was denied by a policy, not for a dead token.
        self._alive: tuple[int, float] = (0, -math.inf)

    def handle(self, ctx: FetchContext, generation: int, failed_at: float, error: AccessDenied) -> None:
        """A call made with the login of `generation` was rejected (`error`) at `failed_at`
        (time.monotonic()). Returns when the call should be made again with a newer login;
        raises `error` for a real denial, LoginExpired for a token that cannot be replaced,
        or why a new login failed."""
        turn = self._wait_turn(ctx, generation, failed_at, error)
        if turn is None:
            return
        client, probe = turn
        try:
            sent = time.monotonic()
            if self.client.token_alive(client):
                with self._lock:
                    self._alive = (generation, sent)
                raise error
            self.client.replace_login(generation)
        finally:
            with self._lock:
                self._probe = None
            probe.set()

    def _wait_turn(
        self, ctx: FetchContext, generation: int, failed_at: float, error: AccessDenied
    ) -> tuple[Any, threading.Event] | None:
        """None when a newer login is in place (or none is: the next call logs in, or raises
        why it cannot). Raises `error` when a probe sent after the rejection found the token
        alive. Otherwise waits for the probe in flight, or returns this thread's turn to probe:
        the hvac client of `generation` and the event that ends the probe."""
        while True:
            with self._lock:
                current = self.client.current()
                if current is None or current[1] != generation:
                    return None
                alive_generation, alive_since = self._alive
                if alive_generation == generation and alive_since >= failed_at:
                    raise error
                running = self._probe
                if running is None:
                    self._probe = threading.Event()
                    return current[0], self._probe
            if not running.wait(max(0.0, ctx.remaining())):
                raise Unavailable(
                    f"Vault at {self.client.conn.address} rejected the token and no time was left to "
                    "find out whether a new login was needed"
                )
