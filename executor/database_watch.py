"""A running worker's watch on its database: one warning when it becomes unreachable, one line when it
is back.

A database lost while the worker runs ended nothing (only a database down at startup ends arq's
worker, which ``executor.worker.run_worker`` logs as lost and back): the jobs it touched logged warnings
of their own, an idle worker logged nothing, and nothing ever said the outage was over. So the worker
asks the database ``SELECT 1`` every ``worker_database_check_s`` and logs the changes only — not one
line per try while the database stays away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sqlalchemy import text

from infra.db import Database, is_unreachable

logger = logging.getLogger("mlrepo.worker")


class DatabaseWatch:
    """Logs the database going away and coming back, as the worker's Redis lines do."""

    def __init__(self, db: Database, interval_s: float) -> None:
        self.db = db
        self.interval_s = interval_s
        self.lost_since: float | None = None  # monotonic time of the first failed check of an outage
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="database-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def check(self) -> None:
        """One check: says so when the database went away since the last, or came back."""
        try:
            async with self.db.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            if self.lost_since is None:
                self.lost_since = time.monotonic()
                logger.warning("the database cannot be reached (%s); jobs wait for it", exc)
            return
        if self.lost_since is not None:
            logger.info("the database is back after %.0f s", time.monotonic() - self.lost_since)
            self.lost_since = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception:  # a failing check must not end the watch: the next one may succeed
                logger.exception("checking the database failed")
