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

GPUs: the test and verify steps lend a listing the GPUs it suggests, up to what this process has. Where
GPUs live only on dedicated GPU workers (``mlrepo worker --resource-class gpu``), a worker without any
that finds, once the package step has read the manifest, a listing suggesting GPUs hands the whole
publication to them while one is alive: it goes back to QUEUED, routed ``gpu``, its upload kept, and a
GPU worker runs it from the start. Without a live GPU worker it is verified here, without a GPU.

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
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from catalog.enums import VerificationStatus
from catalog.listings import ListingService
from catalog.publishing.archive_safety import (
    ArchiveLimits,
)
from catalog.publishing.check_steps import CheckSteps
from catalog.publishing.claimed_run import ClaimedRun, Job, Log
from catalog.publishing.earlier_runs import EarlierRuns
from catalog.publishing.gpu_routing import HANDED_TO_GPU_WORKER, GpuRouting
from catalog.publishing.images import ImageService, slug
from catalog.publishing.listing_writer import write_version
from catalog.publishing.package_step import PackageStep
from catalog.publishing.packaging import PACKAGED_KINDS
from catalog.publishing.sandbox import RunTarget, Sandbox
from catalog.publishing.steps import (
    PublicationStatus,
    StepFailed,
    StepName,
    StepRecorder,
)
from catalog.publishing.verification import limits_for, probe, probe_input_of
from infra.artifacts import ArtifactStore
from infra.db import Database
from infra.fencing import Superseded, beat_under, lost_claim
from infra.heartbeat import beating
from infra.settings import Settings
from infra.tables import Publication

logger = logging.getLogger("mlrepo.publishing")

SUPERSEDED = "superseded"  # ``run``'s outcome when recovery took the publication from it


class PublishWorkflow(ClaimedRun, EarlierRuns, GpuRouting, PackageStep, CheckSteps):
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

    # ------------------------------------------------------------------ publish

    async def _publish(self, job: Job, log: Log) -> None:
        assert job.manifest is not None and job.target is not None
        if job.source_kind == "image":
            job.image_ref_published = await self._push(job, job.image_id or "", log)
            return
        assert job.package_file is not None
        job.artifact = await asyncio.to_thread(
            self.store.put_file, job.package_file, encrypt=job.manifest.encrypt
        )
        state = "encrypted with its own key" if job.artifact.encrypted else "plain"
        log(f"stored {job.artifact.digest} ({job.artifact.size} bytes, {state})")

    async def _push(self, job: Job, image_id: str, log: Log) -> str:
        assert job.manifest is not None and job.target is not None
        images = self._require_images()
        repository = (
            f"mlrepo/{slug(job.actor.name or job.actor.account_id or 'owner')}/{slug(job.manifest.name)}"
        )
        if not self.settings.registry_url:
            tag = f"{repository}:{job.target.version}"
            await asyncio.to_thread(images.tag, image_id, repository, job.target.version)
            log(f"no registry configured: image kept in the local engine as {tag}")
            return tag
        ref = await asyncio.to_thread(images.push, image_id, repository, job.target.version)
        log(f"pushed {ref}")
        return ref

    # ------------------------------------------------------------------ list

    async def _list(self, job: Job, log: Log) -> None:
        assert job.manifest is not None and job.target is not None
        if job.source_kind in PACKAGED_KINDS:
            await self._containerize(job, log)
        manifest = job.manifest
        version_values = {
            "artifact_kind": job.source_kind,
            "artifact_digest": job.artifact.digest if job.artifact else job.image_id,
            "image_ref": job.image_ref_published,
            "manifest": {
                **manifest.model_dump(mode="json", by_alias=True, exclude_none=True),
                "command": list(job.command),
                "verified_with": job.verified_with,
                "publication_id": job.publication_id,
            },
            "encrypted": bool(job.artifact and job.artifact.encrypted),
            "reference_signatures": job.signatures,
            "notes": f"published by publication {job.publication_id}",
            "publication_id": job.publication_id,
        }
        verified = manifest.verify and bool(job.signatures)
        system_values = {
            "verification_status": (
                VerificationStatus.VERIFIED if verified else VerificationStatus.UNVERIFIED
            ).value,
            "status": "active",
            "storage_location": job.image_ref_published
            or (f"artifact:{job.artifact.digest}" if job.artifact else None),
            "size_bytes": job.artifact.size if job.artifact else None,
            "producer_name": job.actor.name,
        }
        fields = manifest.listing_fields()
        target = job.target
        tries = 0

        async def write() -> str:
            nonlocal tries
            tries += 1
            # A try before this one may have committed though its acknowledgement was lost: its version
            # names this publication, and writing it again would fail on "already exists".
            if tries > 1 and (written := await self._version_written(job)) is not None:
                return written.listing_id
            # Only while this run holds the publication: a run recovery took over must not add a version.
            return await write_version(
                self.listings,
                job.actor,
                target,
                fields,
                version_values,
                system_values,
                first=lambda session: job.claim.write(session, updated_at=Publication.updated_at),
            )

        listing_id = await self._through_outage(job, "writing the listing", write)
        job.listed_id = listing_id
        log(f"listed {listing_id} version {job.target.version} ({system_values['verification_status']})")

    async def _containerize(self, job: Job, log: Log) -> None:
        """Build FROM the base image with the package at /app, probe the image, push it by digest."""
        assert job.manifest is not None and job.run_dir is not None
        engine = self.images is not None and self.images.available()
        if self.settings.runtime == "bwrap" or (self.settings.runtime == "auto" and not engine):
            log("no container engine in use: the listing runs from its package under bubblewrap")
            return
        image_id = await self._package_image_of(job, log)
        if self.sandbox.can_run_images():
            given = probe_input_of(job.manifest.tests, job.source_kind == "notebook")
            limits = limits_for(job.manifest.timeout_s, 1, job.manifest.resources.model_dump())
            log(await probe(self.sandbox, RunTarget(command=job.command, image=image_id), given, limits))
        job.image_ref_published = await self._push(job, image_id, log)
