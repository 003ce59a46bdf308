"""Live unmet-demand alerts: an in-process fan-out from the demand log to listening producers.

Each API process fans out what it logs itself; what other API processes log reaches its listeners over Redis
pub/sub when one is configured (``catalog.demand_relay``), and through the database by ``DemandService``'s
sweep in any case. As an alert may come both ways, each listener drops one it already received (by search
id, the alert's stable identity). The durable record is the database (a producer who was not
listening finds the same demand in their inbox). A slow listener never holds up a search: each listener has a
bounded queue and, when it is full, the oldest alert is dropped for that listener only.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

LISTENER_QUEUE_SIZE = 256
# Alert ids a listener remembers to drop repeats: far more than can arrive between a relayed alert and the
# sweep that finds the same search in the database.
LISTENER_RECENT_IDS = 4096


@dataclass(frozen=True, slots=True)
class DemandAlert:
    """One search that became unmet demand (``reason``: no_results | no_selection | pipeline_gap)."""

    search_id: str
    text: str
    category: str | None
    reason: str
    created_at: datetime

    @property
    def public_id(self) -> str:
        """What producers are shown instead of ``search_id``: a search id lets whoever holds it mark that
        search satisfied (``listing(id, searchId)``, ``runJob``), so a producer could clear competitors'
        unmet demand with the ids its alerts carried. A one-way digest identifies the alert and grants
        nothing."""
        return hashlib.sha256(b"mlrepo-demand-alert:" + self.search_id.encode()).hexdigest()[:32]


def category_key(category: str) -> str:
    """Categories match regardless of case and surrounding spaces (``lower`` is what SQL can also do)."""
    return category.strip().lower()


class DemandListener:
    """What one subscriber receives: alerts in its categories (all categories when ``None``).

    ``follower`` is the account whose subscriptions the categories are (None: fixed categories); the
    hub changes them when that account subscribes or unsubscribes, so a running stream follows.
    """

    def __init__(self, categories: Iterable[str] | None, follower: str | None = None) -> None:
        self.follower = follower
        self.refollowed = False  # set once the hub changed the categories (they are then the newest)
        self.follow(categories)
        self.queue: asyncio.Queue[DemandAlert] = asyncio.Queue(maxsize=LISTENER_QUEUE_SIZE)
        self._recent: OrderedDict[str, None] = OrderedDict()  # alerts offered, oldest first

    def follow(self, categories: Iterable[str] | None) -> None:
        self.categories = None if categories is None else frozenset(category_key(c) for c in categories)

    def wants(self, alert: DemandAlert) -> bool:
        if self.categories is None:
            return True
        return alert.category is not None and category_key(alert.category) in self.categories

    def offer(self, alert: DemandAlert) -> None:
        """Queue ``alert`` unless this listener already had it (exactly once, however it came)."""
        if alert.search_id in self._recent:
            return
        self._recent[alert.search_id] = None
        if len(self._recent) > LISTENER_RECENT_IDS:
            self._recent.popitem(last=False)
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(alert)

    async def __aiter__(self) -> AsyncIterator[DemandAlert]:
        while True:
            yield await self.queue.get()


class DemandAlertHub:
    """Publish/subscribe of ``DemandAlert``s within one process (one event loop)."""

    def __init__(self) -> None:
        self._listeners: set[DemandListener] = set()

    @property
    def listener_count(self) -> int:
        return len(self._listeners)

    def publish(self, alert: DemandAlert) -> None:
        for listener in list(self._listeners):
            if listener.wants(alert):
                listener.offer(alert)

    @property
    def followers(self) -> set[str]:
        """Accounts with a listener that follows their subscriptions."""
        return {listener.follower for listener in self._listeners if listener.follower is not None}

    def refollow(self, account_id: str, categories: Iterable[str]) -> None:
        """``account_id`` now follows ``categories``: its listeners that follow its subscriptions change."""
        wanted = list(categories)
        for listener in self._listeners:
            if listener.follower == account_id:
                listener.follow(wanted)
                listener.refollowed = True

    @asynccontextmanager
    async def listen(
        self, categories: Iterable[str] | None, follower: str | None = None
    ) -> AsyncIterator[DemandListener]:
        listener = DemandListener(categories, follower)
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)
