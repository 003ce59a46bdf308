"""Writes gathered into batches off the request path: one transaction per interval instead of one per request.

The search log (``catalog.demand``) and search snapshots (``catalog.search_snapshots``) are written this
way: a request queues what it wants stored and returns at once; a task of this process writes everything
queued after ``delay_s``. Readers of what was queued call ``flush`` first (it writes the queue now), so
nothing queued by this process is missed by a read that follows it here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger("mlrepo.infra")

Item = TypeVar("Item")


class BatchWriter(Generic[Item]):
    def __init__(
        self, write: Callable[[list[Item]], Awaitable[None]], delay_s: Callable[[], float], failed: str
    ) -> None:
        """``write`` stores one batch; ``delay_s`` is read when a batch starts gathering (settings may
        change under tests); ``failed`` is the log line of a batch that failed, with ``%d`` its size."""
        self._write = write
        self._delay_s = delay_s
        self._failed = failed
        self._queued: list[Item] = []
        self._lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None  # the pending batch, if one is gathering

    def add(self, item: Item) -> None:
        self._queued.append(item)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._after_delay())

    async def _after_delay(self) -> None:
        await asyncio.sleep(self._delay_s())
        await self.flush()

    async def flush(self) -> None:
        """Write everything queued, now; batches are written in the order they were queued. A batch that
        fails is logged and dropped (it must not block the ones after it)."""
        async with self._lock:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    await self._write(batch)
                except Exception:
                    logger.exception(self._failed, len(batch))

    async def close(self) -> None:
        await self.flush()
        if self.task is not None:  # nothing is left for it to write
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
