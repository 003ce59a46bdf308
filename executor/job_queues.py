"""Job queues: how a QUEUED job's id reaches a worker (arq on Redis, or a task of this process).

Separate from ``executor.jobs`` because a queue only carries job ids to ``JobService.run``: the row is
the truth, and the service never depends on which queue delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from executor.allocation import queue_for

IN_PROCESS_MAX_JOBS = 10  # jobs one process runs at once without Redis (an arq worker's ``max_jobs``)
JOB_FUNCTION = "run_job"
DEFERRED = "deferred"  # what ``run`` returns for a job left QUEUED: its account runs its most jobs already


class JobQueue(Protocol):
    async def enqueue(self, job_id: str, resource_class: str, attempt: int) -> None: ...

    async def close(self) -> None: ...


class ArqJobQueue:
    """Redis configured: the job goes to the arq queue of its resource class (``mlrepo worker`` consumes)."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._pool: Any = None

    async def enqueue(self, job_id: str, resource_class: str, attempt: int) -> None:
        from arq import create_pool
        from arq.connections import RedisSettings

        if self._pool is None:
            self._pool = await create_pool(RedisSettings.from_dsn(self.redis_url))
        # One arq job id per attempt: re-enqueueing an attempt Redis still holds is a no-op.
        await self._pool.enqueue_job(
            JOB_FUNCTION, job_id, _job_id=f"job:{job_id}:{attempt}", _queue_name=queue_for(resource_class)
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


class InProcessJobQueue:
    """No Redis: the same job function runs as a task of this process, at most ``max_jobs`` at a time
    (as an arq worker takes at most its ``max_jobs``); the others wait, QUEUED, for their turn."""

    def __init__(
        self,
        runner: Callable[[str], Awaitable[Any]],
        max_jobs: int = IN_PROCESS_MAX_JOBS,
        retry_deferred_s: float = 5.0,
    ) -> None:
        self.runner = runner
        self.max_jobs = max_jobs
        self.retry_deferred_s = retry_deferred_s
        self.tasks: set[asyncio.Task[Any]] = set()
        self._waiting: set[str] = set()  # a job re-queued while it waits for its turn is not doubled
        self._turns: asyncio.Semaphore | None = None

    async def enqueue(self, job_id: str, resource_class: str, attempt: int) -> None:
        if job_id in self._waiting:
            return
        self._waiting.add(job_id)
        task = asyncio.create_task(self._take_turn(job_id), name=f"job:{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _take_turn(self, job_id: str) -> Any:
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.max_jobs)
        while True:
            try:
                await self._turns.acquire()
            finally:
                self._waiting.discard(job_id)
            try:
                outcome = await self.runner(job_id)
            finally:
                self._turns.release()
            if outcome != DEFERRED:
                return outcome
            # Its account runs its most jobs: tried again later (as arq does), holding no turn meanwhile,
            # and still waiting here, so that the reconciler re-queueing it does not double it.
            self._waiting.add(job_id)
            await asyncio.sleep(self.retry_deferred_s)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self.tasks, return_exceptions=True)
