"""Live subscriptions counted per account, so that one token cannot hold the API process's memory.

A websocket carries at most 100 operations (strawberry's per-connection cap), but nothing bounded the
sockets one account opens: 50 sockets of one producer's demandAlerts grew the server by ~110 MB. Each
subscription field takes a slot for as long as its stream runs (the slot is handed back when the stream
ends, fails or the client completes it or disconnects).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from catalog.actors import Actor
from infra.errors import Forbidden


class SubscriptionSlots:
    """Per-process counts of running subscription streams by account (anonymous callers share one)."""

    def __init__(self) -> None:
        self._held: Counter[str | None] = Counter()

    def held(self, actor: Actor) -> int:
        return self._held[actor.account_id]

    @asynccontextmanager
    async def slot(self, actor: Actor, limit: int) -> AsyncIterator[None]:
        """Hold one of ``actor``'s ``limit`` slots while the body runs; none free is ``Forbidden``.

        Counting needs no lock: everything runs on the one event loop, with no await in between."""
        key = actor.account_id
        if self._held[key] >= limit:
            raise Forbidden(
                f"this account already holds {limit} live subscriptions on this server "
                "(MLREPO_MAX_SUBSCRIPTIONS_PER_ACCOUNT): complete some before starting more"
            )
        self._held[key] += 1
        try:
            yield
        finally:
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]
