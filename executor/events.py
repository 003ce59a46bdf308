"""Job events: what ``Subscription.jobStatus`` streams. Redis pub/sub across processes (the worker
publishes, the API process subscribes); an in-process bus when there is no Redis (jobs then run in the
API process too). Events are notifications only: the database row stays the truth, so a subscriber that
missed events re-reads the row (see ``JobService.watch``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, Protocol

CHANNEL_PREFIX = "mlrepo:job-events:"


class JobEvents(Protocol):
    async def publish(self, job_id: str, event: dict[str, Any]) -> None: ...

    def subscribe(
        self, job_id: str
    ) -> contextlib.AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]: ...

    async def close(self) -> None: ...


class LocalJobEvents:
    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    async def publish(self, job_id: str, event: dict[str, Any]) -> None:
        for queue in list(self._queues.get(job_id, ())):
            queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._queues[job_id].add(queue)

        async def stream() -> AsyncIterator[dict[str, Any]]:
            while True:
                yield await queue.get()

        try:
            yield stream()
        finally:
            self._queues[job_id].discard(queue)
            if not self._queues[job_id]:
                del self._queues[job_id]

    async def close(self) -> None:
        self._queues.clear()


class RedisJobEvents:
    def __init__(self, redis_url: str) -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(redis_url)

    async def publish(self, job_id: str, event: dict[str, Any]) -> None:
        await self.redis.publish(CHANNEL_PREFIX + job_id, json.dumps(event))

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(CHANNEL_PREFIX + job_id)

        async def stream() -> AsyncIterator[dict[str, Any]]:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield json.loads(message["data"])

        try:
            yield stream()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
            await pubsub.aclose()

    async def close(self) -> None:
        await self.redis.aclose()


def job_events_for(redis_url: str | None) -> JobEvents:
    return RedisJobEvents(redis_url) if redis_url else LocalJobEvents()
