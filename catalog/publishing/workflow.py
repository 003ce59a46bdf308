"""The publish job: package → test → verify → publish → list, each step recorded on the publication.

Guarantees, whatever fails and wherever:
- nothing is visible (no listing row, no version, no index entry) until the last step, which writes them
  in one transaction (``listing_writer.write_version``);
- earlier versions are never touched: stored artifacts are write-once and content-addressed, images are
  referenced by registry digest, and a version number is never reused;
- the producer's upload and every extracted file live under the staging directory of the run
  (``staging/<publication>/<attempt>``), which is removed when the run ends; the only files that outlive
  it are in the artifact store, and the upload, until a run records the publication's outcome;
- a run writes to the publication only while its claim holds it (``infra.fencing``): one that recovery
  took over while it still ran (it could not beat) records nothing more, stops, and removes only its own
  staging directory and images; the run that holds the publication then publishes it;
- a publication writes at most one version: the version row names the publication that wrote it, and a
  run that finds one (an earlier run wrote it, then died or lost its claim before recording the outcome)
  adopts it and records the outcome, rather than write a duplicate version (or fail on a pinned
  version's "already exists"); a version another publication wrote is still refused;
- each failure is recorded with its step, a clear message and its error code;
- a short database outage (a restart, a failover) delays a publication rather than failing it: each of
  its writes (step records, the listing write, the outcome) and the reads its steps depend on are tried
  again while the database is unreachable, for ``job_final_write_retry_s`` (as a job's final write is);
  a write whose commit landed though its acknowledgement was lost is recognised on the next try (the
  version names its publication; the outcome is the row's under this run's claim). Past that budget the
  run stops with the publication RUNNING, and recovery runs it again once its heartbeat is stale.

GPUs: the test and verify steps lend a listing the GPUs it suggests, up to what this process has; a
worker without any hands a listing suggesting GPUs to a live GPU worker (``gpu_routing``). Without a
live GPU worker it is verified here, without a GPU.

Per source kind:
- **package**: safe extraction + manifest + normalization to a deterministic tar.gz (package); re-extract
  the normalized package and compare every file checksum, then probe the entrypoint in the sandbox (test);
  unit tests (verify); artifact store, encrypted if asked (publish); an image built FROM the base image
  with the package at /app, probed, pushed to the registry, then the listing (list);
- **image**: ``docker load`` the tarball or pull from mlrepo's registry, derive the normalized image
  (package); probe it (test); unit tests in Docker (verify); push by digest (publish); listing (list);
- **dataset**: safe extraction when it is an archive (test); artifact store (publish); listing (list).
- **notebook**: the ``.ipynb`` checked and described (``notebook``), then packaged with its runner and
  handled as a code package from there on, except that the test step runs it once on its default
  parameters (or the first unit test's) and fails when a cell raises: a notebook has no other input.

This module runs the steps in order; each job is a part of ``PublishWorkflow`` in a module of its own:
``claimed_run`` (the claim, the ``Job`` a run fills in, its writes through an outage, the outcome),
``package_step``, ``check_steps`` (test, verify), ``release_steps`` (publish, list), ``earlier_runs``
(adopting an earlier run's version, staging clean-up) and ``gpu_routing``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from catalog.listings import ListingService
from catalog.publishing.archive_safety import ArchiveLimits
from catalog.publishing.check_steps import CheckSteps
from catalog.publishing.claimed_run import ClaimedRun, Job
from catalog.publishing.earlier_runs import EarlierRuns
from catalog.publishing.gpu_routing import HANDED_TO_GPU_WORKER, GpuRouting
from catalog.publishing.images import ImageService
from catalog.publishing.package_step import PackageStep
from catalog.publishing.release_steps import ReleaseSteps
from catalog.publishing.sandbox import Sandbox
from catalog.publishing.steps import PublicationStatus, StepFailed, StepName, StepRecorder
from infra.artifacts import ArtifactStore
from infra.db import Database
from infra.fencing import Superseded, beat_under, lost_claim
from infra.heartbeat import beating
from infra.settings import Settings
from infra.tables import Publication

logger = logging.getLogger("mlrepo.publishing")

SUPERSEDED = "superseded"  # ``run``'s outcome when recovery took the publication from it


class PublishWorkflow(ClaimedRun, EarlierRuns, GpuRouting, PackageStep, CheckSteps, ReleaseSteps):
    def __init__(
        self,
        settings: Settings,
        db: Database,
        listings: ListingService,
        store: ArtifactStore,
        sandbox: Sandbox,
        images: ImageService | None = None,
        gpu_workers_alive: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.listings = listings
        self.store = store
        self.sandbox = sandbox
        self.images = images
        self.gpu_workers_alive = gpu_workers_alive
        self.limits = ArchiveLimits.from_settings(settings)

    @property
    def staging_root(self) -> Path:
        return self.settings.data_dir / "staging"

    # ------------------------------------------------------------------ entry point

    async def run(self, publication_id: str) -> str:
        """Run one QUEUED publication to PUBLISHED or FAILED and return that status; ``"skipped"`` when it
        is not QUEUED (unknown, finished, or another worker has it), ``SUPERSEDED`` when recovery took it
        from this run meanwhile (the run holding it now records its outcome)."""
        job = await self._load(publication_id)
        if job is None:
            return "skipped"
        logger.info("publication %s claimed (attempt %d)", publication_id, job.claim.attempt)
        try:
            outcome = await self._run_claimed(job)
        except (Superseded, asyncio.CancelledError) as stopped:
            lost = lost_claim(stopped, job.claim)
            if lost is None:
                raise  # the worker is shutting down: recovery re-queues the publication
            logger.warning("%s: it stopped and removed only its own files", lost)
            return SUPERSEDED
        # Recorded: no run needs the upload any more (a superseded run never removes it, the next may).
        if job.upload is not None and outcome != HANDED_TO_GPU_WORKER:
            await asyncio.to_thread(shutil.rmtree, job.upload.parent, True)
        return outcome

    async def _run_claimed(self, job: Job) -> str:
        recorder = StepRecorder(self.db, job.claim, self.settings.job_final_write_retry_s)
        status, error = PublicationStatus.PUBLISHED, None
        # A beat leaves updated_at alone: it is when the producer's view last changed.
        heartbeat = beat_under(self.db, job.claim, asyncio.current_task(), updated_at=Publication.updated_at)
        async with beating(heartbeat, self.settings.job_heartbeat_s, str(job.claim)):
            try:
                earlier = await self._version_of_earlier_run(job)
                if earlier is not None:
                    await recorder.run(StepName.LIST, lambda log: self._adopt(job, earlier, log))
                else:
                    await self._run_steps(job, recorder)
            except StepFailed as failed:
                status, error = PublicationStatus.FAILED, f"{failed.step}: {failed.error.message}"
            finally:
                await asyncio.to_thread(self._remove_staging, job)
                # Whatever it tagged, in a step that failed half-way too (a source tagged, its build refused).
                if job.source_kind == "image" or job.built_image is not None:
                    await asyncio.to_thread(self.remove_run_images, job.publication_id, [job.claim.attempt])
        if job.hand_to_gpu_worker:
            await self._requeue_for_gpu_worker(job)
            return HANDED_TO_GPU_WORKER
        await self._finish(job, status, error, recorder.timings)
        return status.value

    async def _run_steps(self, job: Job, recorder: StepRecorder) -> None:
        await recorder.run(StepName.PACKAGE, lambda log: self._package(job, log))
        if not job.hand_to_gpu_worker:
            await recorder.run(StepName.TEST, lambda log: self._test(job, log))
            await recorder.run(StepName.VERIFY, lambda log: self._verify(job, log))
            await recorder.run(StepName.PUBLISH, lambda log: self._publish(job, log))
            await recorder.run(StepName.LIST, lambda log: self._list(job, log))
