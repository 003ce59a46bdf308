"""Live unmet-demand alerts for producers: the streams, and the sweeps that feed them what logging cannot.

Logging announces a no-result search or a pipeline gap at once (``catalog.demand``), but two kinds of
unmet demand happen without any write here: a search whose selection window closes with nothing selected,
and a search another API process logged. Both are found by a sweep of the database that runs only while
someone listens; with Redis, other processes' alerts and (un)subscribes also arrive relayed
(``catalog.demand_relay``). Separate because it is the one stateful, timed part of the service: what was
already announced, how far each sweep got, and the sweeper task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

from sqlalchemy import select

from catalog.actors import Actor
from catalog.clock import as_utc
from catalog.demand_alerts import DemandAlert, DemandAlertHub
from catalog.demand_relay import DemandRelay
from catalog.demand_unmet import UnmetEvent, clean_category, not_selected, require_producer
from infra.db import Database
from infra.errors import BadInput
from infra.settings import Settings
from infra.tables import DemandSubscription, SearchEvent

logger = logging.getLogger("mlrepo.demand")

# How far back a sweep looks again for no-result searches logged by other API processes: a row is stamped
# when its search ran and committed up to a logging batch (plus a transaction) later, out of order.
OTHERS_OVERLAP = timedelta(seconds=30)


class DemandStreams:
    """The live-alerts part of ``DemandService`` (``catalog.demand``), which provides these attributes and
    ``window``; it reads subscriptions through ``subscriptions`` (``catalog.demand_subscriptions``) and
    the log through ``_unmet_events`` (``catalog.demand_report``)."""

    db: Database
    settings: Settings
    alert_hub: DemandAlertHub
    relay: DemandRelay | None
    clock: Callable[[], datetime]
    _sweeper: asyncio.Task[None] | None
    _swept_until: datetime | None
    _alerted: dict[str, datetime]
    _others_floor: datetime | None
    _others_swept_until: datetime | None

    async def alerts(self, actor: Actor, category: str | None = None) -> AsyncIterator[DemandAlert]:
        """Unmet searches as they happen, in ``category`` or else in the actor's subscribed categories
        (as they change: a later subscribe or unsubscribe applies to the running stream, at once when made
        through this process or relayed over Redis, else from the next sweep).

        No-result searches and pipeline gaps arrive when logged (those logged by another API process,
        when relayed over Redis, else from the next sweep); searches whose selection window closes while
        someone listens arrive from a sweep every ``demand_alert_sweep_s``.
        """
        require_producer(actor)
        if category is not None:
            listening = self.alert_hub.listen([clean_category(category)])
        else:
            # Registered before the subscriptions are read, so a subscribe in between is not missed;
            # later (un)subscribes change the running stream (``_refollow``).
            listening = self.alert_hub.listen([], follower=actor.account_id)
        async with listening as listener:
            if category is None:
                categories = [sub.category for sub in await self.subscriptions(actor)]
                if not listener.refollowed:  # else a (un)subscribe since then has set newer ones
                    listener.follow(categories)
                if not listener.categories:
                    raise BadInput(
                        "subscribe to a category first, or name one to listen to", field="category"
                    )
            self._ensure_sweeper()
            async for alert in listener:
                yield alert

    async def sweep_expired(self) -> int:
        """Alert on searches whose selection window closed since the last sweep without a selection, and
        on no-result searches and pipeline gaps other API processes logged since the last sweep. Streams
        that follow subscriptions first take up (un)subscribes made through other API processes."""
        await self._refollow_listening()
        return await self._sweep_closed_windows() + await self._sweep_others()

    async def _refollow_listening(self, accounts: set[str] | None = None) -> None:
        """A subscribe or unsubscribe through this process changes its running streams at once
        (``_refollow``); one through another API process reaches them here, from the database (for
        ``accounts`` only, when a relayed message says whose subscriptions changed)."""
        followers = self.alert_hub.followers
        if accounts is not None:
            followers &= accounts
        if not followers:
            return
        categories: dict[str, list[str]] = {account_id: [] for account_id in followers}
        async with self.db.session() as session:
            rows = await session.execute(
                select(DemandSubscription.account_id, DemandSubscription.category).where(
                    DemandSubscription.account_id.in_(followers)
                )
            )
            for account_id, category in rows:
                categories[account_id].append(category)
        for account_id, followed in categories.items():
            self.alert_hub.refollow(account_id, followed)

    async def _sweep_others(self) -> int:
        """Another process's no-result searches reach this process's listeners only through the database:
        each process alerts live on what it logs itself (``_insert``, ``catalog.demand_log``)."""
        if self._others_floor is None or self._others_swept_until is None:
            return 0  # nobody has listened yet
        now = self.clock()
        since = max(self._others_floor, self._others_swept_until - OTHERS_OVERLAP)
        events = await self._unmet_events([SearchEvent.result_count == 0, SearchEvent.created_at > since])
        fresh = [event for event in reversed(events) if event.id not in self._alerted]  # oldest first
        for event in fresh:
            self._alerted[event.id] = event.created_at
            self.alert_hub.publish(_alert_of(event))
        self._others_swept_until = max(self._others_swept_until, now)
        self._alerted = {key: at for key, at in self._alerted.items() if at > since}
        return len(fresh)

    async def _sweep_closed_windows(self) -> int:
        cutoff = self.clock() - self.window
        start = self._swept_until or cutoff
        self._swept_until = max(start, cutoff)
        if cutoff <= start:
            return 0
        events = await self._unmet_events(
            [
                SearchEvent.result_count > 0,
                SearchEvent.created_at > start,
                SearchEvent.created_at <= cutoff,
                not_selected(),
            ]
        )
        for event in reversed(events):  # oldest first
            self.alert_hub.publish(_alert_of(event))
        return len(events)

    # ------------------------------------------------------------------ relayed from other API processes

    def relayed_alerts(self, alerts: list[DemandAlert]) -> None:
        """Alerts another API process logged: delivered now, and marked so the sweep does not repeat them."""
        if not self.alert_hub.listener_count:
            return
        for alert in alerts:
            if alert.search_id not in self._alerted:
                self._alerted[alert.search_id] = as_utc(alert.created_at)
                self.alert_hub.publish(alert)

    async def relayed_refollow(self, account_id: str) -> None:
        """Another API process changed ``account_id``'s subscriptions: its streams here re-read them."""
        await self._refollow_listening({account_id})

    async def relay_connected(self) -> None:
        """(Re)subscribed to the relay: what was published while away is swept from the database now."""
        if self.alert_hub.listener_count:
            await self.sweep_expired()

    def _ensure_sweeper(self) -> None:
        """Run the expiry sweep only while someone listens (it stops itself when nobody does); the relay,
        once started, runs until ``close``."""
        if self.relay is not None:
            self.relay.start()
        if self._sweeper is not None and not self._sweeper.done():
            return
        # Windows that closed while nobody listened are not news: start from now (the inbox has them).
        baseline = self.clock() - self.window
        self._swept_until = max(self._swept_until or baseline, baseline)
        self._others_floor = self._others_swept_until = self.clock()
        self._alerted = {}  # all older than the floor
        self._sweeper = asyncio.create_task(self._sweep_while_listened())

    async def _sweep_while_listened(self) -> None:
        while self.alert_hub.listener_count:
            await asyncio.sleep(self.settings.demand_alert_sweep_s)
            try:
                await self.sweep_expired()
            except Exception:  # a database hiccup must not end alerts for everyone
                logger.exception("demand alert sweep failed; retrying next interval")


def _alert_of(event: UnmetEvent) -> DemandAlert:
    return DemandAlert(
        search_id=event.id,
        text=event.text,
        category=event.category,
        reason=event.reason,
        created_at=event.created_at,
    )
