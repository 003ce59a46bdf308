"""Unmet demand: what requesters looked for and did not find, grouped into topics for producers.

The log is ``search_events``: the catalog search service calls ``DemandService.log_search`` once per
search, and the pipeline builder calls ``log_gap`` when no conditioning step joins two formats. A search
is *unmet* when it had no results, or when nothing was selected from it within
``Settings.demand_window_s``; a selection is ``search_events.selected_listing_id`` (set by
``record_selection``) or any ``usage_events`` row carrying the search's id (a view, run or pipeline
step that came from it). Whether a search is unmet is decided when demand is read, not stored, so a
late selection or a changed window never leaves a stale flag behind.

Producers (and admins) read the grouped demand (``unmet_demand``), subscribe to categories, and are
prompted through an inbox (topics that became unmet since they last looked) and live alerts.

The service is one part per job, each in a module of its own, and this module joins them and holds the
state they share (and ends it: ``close``): ``demand_unmet`` (what counts as unmet, and the rules every
part shares), ``demand_log`` (logging searches, gaps and selections), ``demand_report`` (the report, the
inbox), ``demand_grouping`` (unmet searches into topics), ``demand_subscriptions`` and
``demand_streams`` (live alerts and the sweeps behind them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from catalog.demand_alerts import DemandAlertHub
from catalog.demand_grouping import TopicGrouping
from catalog.demand_log import DemandLog
from catalog.demand_relay import DemandRelay
from catalog.demand_report import DemandReport
from catalog.demand_streams import DemandStreams
from catalog.demand_subscriptions import DemandSubscriptions
from infra.batching import BatchWriter
from infra.db import Database
from infra.settings import Settings
from infra.tables import utcnow

if TYPE_CHECKING:
    from search.embeddings import Encoder


class DemandService(DemandLog, DemandReport, TopicGrouping, DemandSubscriptions, DemandStreams):
    def __init__(
        self,
        db: Database,
        settings: Settings,
        encoder: Encoder | None = None,
        alert_hub: DemandAlertHub | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.encoder = encoder
        self.alert_hub = alert_hub or DemandAlertHub()
        self.clock = clock
        self._sweeper: asyncio.Task[None] | None = None
        self._swept_until: datetime | None = None
        # No-result searches and gaps already alerted here (logged here, or found by a sweep), by id with
        # their time, so a sweep re-reading its overlap announces another process's ones once.
        self._alerted: dict[str, datetime] = {}
        self._others_floor: datetime | None = None  # when the sweeper started: older ones are not news
        self._others_swept_until: datetime | None = None
        # Alerts and (un)subscribes reach other API processes at once over Redis; without it, by their sweep.
        self.relay = (
            DemandRelay(settings.redis_url, self, health_check_s=settings.demand_relay_health_check_s)
            if settings.redis_url
            else None
        )
        self._log = BatchWriter(
            self._insert,
            lambda: self.settings.demand_log_batch_s,
            "could not log %d searches for unmet demand",
        )

    @property
    def window(self) -> timedelta:
        return timedelta(seconds=self.settings.demand_window_s)

    async def close(self) -> None:
        await self._log.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        if self.relay is not None:
            await self.relay.close()
