"""Handing a publication to the GPU workers: when a listing suggests GPUs and this worker has none.

The test and verify steps lend a listing the GPUs it suggests, up to what this process has. Where GPUs
live only on dedicated GPU workers (``mlrepo worker --resource-class gpu``), a worker without any hands
the whole publication to them, once the package step has read the manifest, while one is alive: it goes
back to QUEUED, routed ``gpu``, its upload kept, and a GPU worker runs it from the start. Separate because
it is a decision about where the run happens, not a step of it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import select

from catalog.publishing.claimed_run import Job
from catalog.publishing.sandbox import Sandbox
from catalog.publishing.steps import PublicationStatus
from infra.db import Database
from infra.tables import Publication, utcnow

logger = logging.getLogger("mlrepo.publishing")

# ``run``'s outcome when the publication was handed to a GPU worker; ``metadata_json["route"]`` records it.
HANDED_TO_GPU_WORKER = "handed_to_gpu_worker"
GPU_ROUTE = "gpu"


class GpuRouting:
    """A part of ``PublishWorkflow`` (``catalog.publishing.workflow``), which provides these attributes; it
    writes through ``_last_write`` (``catalog.publishing.claimed_run``)."""

    db: Database
    sandbox: Sandbox
    gpu_workers_alive: Callable[[], Awaitable[bool]] | None

    async def _wants_gpu_worker(self, job: Job) -> bool:
        """A listing suggesting GPUs, on a worker with none, while a GPU worker is alive (never twice)."""
        assert job.manifest is not None
        if job.route == GPU_ROUTE or job.source_kind == "dataset" or job.manifest.resources.gpu <= 0:
            return False
        if self.sandbox.gpus_available() > 0 or self.gpu_workers_alive is None:
            return False
        return await self.gpu_workers_alive()

    async def _requeue_for_gpu_worker(self, job: Job) -> None:
        """Back to QUEUED, routed to the GPU workers (the caller enqueues it there; recovery re-enqueues
        it there if that enqueue is lost)."""
        await self._last_write(
            job, "handing it to a GPU worker", self._write_gpu_route, PublicationStatus.QUEUED
        )
        logger.info("publication %s handed to a GPU worker", job.publication_id)

    async def _write_gpu_route(self, job: Job) -> None:
        async with self.db.session() as session:
            meta = await session.scalar(
                select(Publication.metadata_json).where(Publication.id == job.publication_id)
            )
            await job.claim.write(
                session,
                status=PublicationStatus.QUEUED.value,
                metadata_json={**(meta or {}), "route": GPU_ROUTE},
                updated_at=utcnow(),
            )
