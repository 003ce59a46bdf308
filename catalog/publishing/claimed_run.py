"""A run's hold on its publication: the claim that starts it, what it learns, and its own writes.

A run starts by claiming a QUEUED publication (``_load``), which counts up its attempts, the fencing
token (``infra.fencing``); from then on the run writes to the publication only under that claim, and
each write is tried again through a short database outage. ``Job`` is everything the run learns along
the way, handed from step to step. Separate from the steps because every step, the adoption of an earlier
run's version and the hand-off to a GPU worker write through the same claim and the same retry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import update

from catalog.actors import Actor
from catalog.publishing.archive_safety import ExtractionReport
from catalog.publishing.images import staging_repository
from catalog.publishing.listing_writer import Target
from catalog.publishing.manifest import Manifest
from catalog.publishing.steps import PublicationStatus
from infra.artifacts import StoredArtifact
from infra.db import Database, retry_while_unreachable
from infra.fencing import Claim, Superseded
from infra.settings import Settings
from infra.tables import Account, Publication, utcnow

logger = logging.getLogger("mlrepo.publishing")

Log = Callable[[str], None]
T = TypeVar("T")


@dataclass
class Job:
    """Everything one run of the publish job learns along the way."""

    publication_id: str
    claim: Claim
    source_kind: str
    actor: Actor
    staging: Path
    upload: Path | None
    image_ref: str | None
    manifest_data: dict[str, Any] | None
    requirements: dict[str, Any]
    listing_id: str | None
    expected_digest: str | None
    manifest: Manifest | None = None
    target: Target | None = None
    package_file: Path | None = None
    package_files: dict[str, str] = field(default_factory=dict)
    run_dir: Path | None = None
    image_id: str | None = None
    command: tuple[str, ...] = ()
    signatures: dict[str, str] = field(default_factory=dict)
    verified_with: str | None = None
    artifact: StoredArtifact | None = None
    image_ref_published: str | None = None
    built_image: str | None = None
    listed_id: str | None = None  # the listing the version was written to
    adopted_digest: str | None = None  # the artifact of the version an earlier run wrote, once adopted
    archive: ExtractionReport | None = None
    route: str | None = None  # GPU_ROUTE once handed to a GPU worker
    hand_to_gpu_worker: bool = False

    @property
    def image_repository(self) -> str:
        """Where this run tags the images it derives, its own as its staging directory is."""
        return staging_repository(self.publication_id, self.claim.attempt)


class ClaimedRun:
    """The claim and the run's own writes, a part of ``PublishWorkflow`` (``catalog.publishing.workflow``),
    which provides these attributes."""

    settings: Settings
    db: Database
    staging_root: Path

    async def _load(self, publication_id: str) -> Job | None:
        async with self.db.session() as session:
            # Claim it: only a QUEUED publication starts, so a duplicate delivery of the job (arq retry,
            # recovery racing a live worker) finds it RUNNING or finished and does nothing. Each claim
            # counts up ``attempts``: the run's fencing token (``infra.fencing``).
            claimed = await session.execute(
                update(Publication)
                .where(Publication.id == publication_id, Publication.status == PublicationStatus.QUEUED.value)
                .values(
                    status=PublicationStatus.RUNNING.value,
                    attempts=Publication.attempts + 1,
                    updated_at=utcnow(),
                    heartbeat_at=utcnow(),
                )
            )
            if claimed.rowcount != 1:
                return None
            pub = await session.get(Publication, publication_id)
            assert pub is not None
            account = await session.get(Account, pub.owner_id)
            meta = dict(pub.metadata_json or {})
            actor = Actor(pub.owner_id, account.role if account else None, account.name if account else None)
            upload = Path(pub.upload_path) if pub.upload_path else None
            return Job(
                publication_id=pub.id,
                claim=Claim(Publication, pub.id, pub.attempts),
                source_kind=pub.source_kind,
                actor=actor,
                staging=self.staging_root / pub.id / str(pub.attempts),
                upload=upload,
                image_ref=meta.get("image_ref"),
                manifest_data=meta.get("manifest"),
                requirements=dict(pub.requirements or {}),
                listing_id=pub.listing_id,
                expected_digest=meta.get("expected_digest"),
                route=meta.get("route"),
            )

    async def _through_outage(self, job: Job, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``, tried again while the database is unreachable (``retry_while_unreachable``), for
        the budget a job's final write has; ``work`` must be safe to repeat."""
        return await retry_while_unreachable(
            work, self.settings.job_final_write_retry_s, f"publication {job.publication_id}: {what}"
        )

    async def _last_write(
        self, job: Job, what: str, write: Callable[[Job], Awaitable[None]], status: PublicationStatus
    ) -> None:
        """``write(job)``, the run's last write, which leaves the publication ``status`` under its claim,
        tried again while the database is unreachable. A retry that finds the row already ``status`` at
        this run's attempt found its own earlier try, whose commit landed though the acknowledgement was
        lost: that is no lost claim."""
        tries = 0

        async def once() -> None:
            nonlocal tries
            tries += 1
            try:
                await write(job)
            except Superseded as lost:
                if tries == 1 or (lost.status, lost.attempt) != (status.value, job.claim.attempt):
                    raise
                job.claim.lost = None

        await self._through_outage(job, what, once)

    async def _finish(
        self,
        job: Job,
        status: PublicationStatus,
        error: str | None,
        timings: dict[str, float],
    ) -> None:
        """Record the outcome, if this run holds the publication still (``Superseded`` if not)."""
        write = partial(self._write_outcome, status=status, error=error, timings=timings)
        await self._last_write(job, "recording its outcome", write, status)
        steps = ", ".join(f"{step} {ms / 1000:.1f} s" for step, ms in timings.items())
        reason = f": {error}" if error else ""
        logger.info("publication %s %s (%s)%s", job.publication_id, status.value, steps, reason)

    async def _write_outcome(
        self, job: Job, status: PublicationStatus, error: str | None, timings: dict[str, float]
    ) -> None:
        async with self.db.session() as session:
            pub = await session.get(Publication, job.publication_id)
            if pub is None:
                return
            meta = dict(pub.metadata_json or {})
            meta.update(
                timings_ms=timings,
                version=job.target.version if job.target else None,
                image_ref=job.image_ref_published or meta.get("image_ref"),
            )
            values: dict[str, Any] = {
                "status": status.value,
                "error": error,
                "upload_path": None,
                "metadata_json": meta,
                "updated_at": utcnow(),
            }
            if job.listed_id:
                values["listing_id"] = job.listed_id
            if job.artifact is not None:
                values["artifact_digest"] = job.artifact.digest
            elif job.image_id or job.adopted_digest:
                values["artifact_digest"] = job.image_id or job.adopted_digest
            await job.claim.write(session, **values)
