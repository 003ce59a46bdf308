"""What earlier runs of a publication left: the version one wrote, and their staging files and images.

A run can die or lose its claim anywhere (a killed worker cleans nothing up). Its successor adopts the
version it wrote, if it got that far, rather than write a second one (``_adopt``), and removes the staging
directories and staging images of runs that can no longer write; each run removes its own when it ends.
Separate because it is the recovery side of the workflow: none of it runs when nothing went wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterable

from sqlalchemy import select

from catalog.publishing.claimed_run import Job, Log
from catalog.publishing.images import ImageService, staging_refs
from catalog.publishing.listing_writer import Target
from infra.db import Database
from infra.tables import ListingVersion


class EarlierRuns:
    """A part of ``PublishWorkflow`` (``catalog.publishing.workflow``), which provides these attributes;
    it reads through ``_through_outage`` (``catalog.publishing.claimed_run``)."""

    db: Database
    images: ImageService | None

    async def _version_of_earlier_run(self, job: Job) -> ListingVersion | None:
        """The version an earlier run of this publication wrote, if one did. Conclusive once this run holds
        the claim: an earlier run writes its version only in a transaction that its claim must hold."""
        return await self._through_outage(job, "looking for its version", lambda: self._version_written(job))

    async def _version_written(self, job: Job) -> ListingVersion | None:
        async with self.db.session() as session:
            return await session.scalar(
                select(ListingVersion).where(ListingVersion.publication_id == job.publication_id)
            )

    async def _adopt(self, job: Job, version: ListingVersion, log: Log) -> None:
        """Finish with the version an earlier run wrote (it is complete: listing, version and index entry
        were one transaction); the earlier steps' records are that run's and stay as they are."""
        await asyncio.to_thread(self._clear_earlier_runs, job)
        job.target = Target(version.listing_id, version.version, None)
        job.listed_id = version.listing_id
        job.image_ref_published = version.image_ref
        job.adopted_digest = version.artifact_digest
        log(
            f"adopted version {version.version} of listing {version.listing_id}: an earlier run of this "
            "publication wrote it, then stopped before recording the outcome"
        )

    def _clear_earlier_runs(self, job: Job) -> None:
        """Remove what earlier runs of the publication left in their staging directories and the images
        they tagged: a worker killed mid-step cleans nothing up. Such a run cannot write any more (this
        run holds the claim), and one still alive would remove its own when it stopped; a later run's
        are left alone. (``mlrepo gc`` removes those of runs on other hosts or engines.)"""
        with contextlib.suppress(FileNotFoundError):
            for entry in list(job.staging.parent.iterdir()):
                if not (entry.name.isdigit() and int(entry.name) > job.claim.attempt):
                    shutil.rmtree(entry, ignore_errors=True)
        self.remove_run_images(job.publication_id, range(1, job.claim.attempt))

    def remove_run_images(self, publication_id: str, runs: Iterable[int]) -> None:
        """Untag the staging images (``staging_refs``) of those runs of the publication. By name, not by
        listing the engine's images: on an engine holding 1,600 images a listing took ~0.3 s, removing a
        run's three tags (there or not) ~2 ms. Blocking: call it through ``asyncio.to_thread``."""
        if self.images is None:
            return
        for run in runs:
            for ref in staging_refs(publication_id, run):
                self.images.remove(ref)

    @staticmethod
    def _remove_staging(job: Job) -> None:
        """Remove this run's staging directory, and the publication's once no other run's is in it."""
        shutil.rmtree(job.staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            job.staging.parent.rmdir()
