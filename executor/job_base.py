"""What every part of ``JobService`` shares: its collaborators, the runs' pending usage and outputs, and
the few helpers all parts call (publishing a job's event, a listing's latest version, staging space).

Separate so that each part (``executor.job_submission``, ``executor.job_runs``, ...) names the state it
works on in one place, without importing the others: ``executor.jobs`` assembles them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from executor.events import JobEvents
from executor.gpus import GpuPool
from executor.job_outputs import StoredOutputs
from executor.job_queues import JobQueue
from executor.job_views import JobView
from executor.runtimes import RuntimeSelector
from infra.artifacts import ArtifactStore
from infra.db import Database
from infra.settings import Settings
from infra.tables import ListingVersion, UsageEvent

if TYPE_CHECKING:
    from catalog.app import CatalogApp

logger = logging.getLogger("mlrepo.executor")

JOB_LABEL = "mlrepo.job"  # on every container of a job, so a lost worker's containers can be found


class JobServiceParts:
    """The base of every part of ``JobService``; ``JobService.__init__`` sets these."""

    settings: Settings
    catalog: CatalogApp
    db: Database
    events: JobEvents
    queue: JobQueue
    selector: RuntimeSelector
    gpus: GpuPool
    _uses: dict[tuple[str, int], list[UsageEvent]]
    _outputs: dict[tuple[str, int], StoredOutputs]
    _artifacts: ArtifactStore | None

    @property
    def artifacts(self) -> ArtifactStore:
        if self._artifacts is None:
            self._artifacts = ArtifactStore.from_settings(self.settings)
        return self._artifacts

    async def _publish(self, view: JobView) -> None:
        try:
            await self.events.publish(
                view.id, {"id": view.id, "status": view.status, "progress": view.progress}
            )
        except Exception:  # an event is a hint; the row is the truth and watchers re-read it
            logger.warning("could not publish an event for job %s", view.id, exc_info=True)

    @staticmethod
    async def latest_version(session: Any, listing_id: str | None) -> ListingVersion | None:
        return await session.scalar(
            select(ListingVersion)
            .where(ListingVersion.listing_id == listing_id)
            .order_by(ListingVersion.created_at.desc())
            .limit(1)
        )

    def _staging_root(self) -> Path:
        root = self.settings.data_dir / "job-staging"
        root.mkdir(parents=True, exist_ok=True)
        return root
