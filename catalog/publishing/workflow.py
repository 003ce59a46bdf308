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
import contextlib
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import select, update

from catalog.actors import Actor
from catalog.enums import VerificationStatus
from catalog.listings import ListingService
from catalog.publishing.archive_safety import (
    GZIPPED_FILE,
    ArchiveLimits,
    ExtractionReport,
    UnsafeArchive,
    detect_format,
    extract_archive,
    verify_file_checksums,
)
from catalog.publishing.images import ImageService, slug, staging_refs, staging_repository
from catalog.publishing.listing_writer import Target, resolve_target, write_version
from catalog.publishing.manifest import (
    Manifest,
    find_package_root,
    load_package_manifest,
    parse_manifest,
    pydantic_errors,
)
from catalog.publishing.notebook import notebook_manifest, parse_notebook, write_notebook_package
from catalog.publishing.packaging import PACKAGED_KINDS, normalize_package, unpack_package
from catalog.publishing.sandbox import RunTarget, Sandbox
from catalog.publishing.steps import (
    PublicationStatus,
    Skip,
    StepFailed,
    StepName,
    StepRecorder,
)
from catalog.publishing.verification import limits_for, probe, probe_input_of, run_unit_tests
from infra.artifacts import ArtifactStore, StoredArtifact, sha256_file
from infra.db import Database, retry_while_unreachable
from infra.errors import BadInput, Unavailable
from infra.fencing import Claim, Superseded, beat_under, lost_claim
from infra.heartbeat import beating
from infra.settings import Settings
from infra.tables import Account, ListingVersion, Publication, utcnow

logger = logging.getLogger("mlrepo.publishing")

Log = Callable[[str], None]
T = TypeVar("T")
# ``run``'s outcome when the publication was handed to a GPU worker; ``metadata_json["route"]`` records it.
HANDED_TO_GPU_WORKER = "handed_to_gpu_worker"
SUPERSEDED = "superseded"  # ``run``'s outcome when recovery took the publication from it
GPU_ROUTE = "gpu"
REQUIREMENT_KEYS = ("resources", "training_resources", "timeout_s", "encrypt", "verify")


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


def merge_requirements(manifest: dict[str, Any], requirements: dict[str, Any]) -> dict[str, Any]:
    """The producer's requirements given with the upload override those in the manifest; within
    ``resources`` (and ``training_resources``) only the values given change, the others stay the
    manifest's."""
    merged = dict(manifest)
    for key, value in requirements.items():
        if key not in REQUIREMENT_KEYS or value is None:
            continue
        if isinstance(value, dict):
            given = {k: v for k, v in value.items() if v is not None}
            value = {**merged[key], **given} if isinstance(merged.get(key), dict) else given
        merged[key] = value
    return merged


def check_requirements(requirements: dict[str, Any] | None) -> None:
    """Refuse bad requirements when they are submitted, naming them: merged into the manifest in the
    worker, a bad one was queued and then FAILED in step package as "invalid manifest: ...", blaming a
    manifest that did not hold it. Checked by the manifest's own rules, merged into a valid skeleton."""
    if not requirements:
        return
    skeleton = {"name": "requirements", "kind": "model", "category": "requirements"}
    try:
        Manifest.model_validate(merge_requirements(skeleton, requirements))
    except ValidationError as exc:
        raise BadInput("requirements: " + "; ".join(pydantic_errors(exc)), field="requirements") from None


class PublishWorkflow:
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

    async def _wants_gpu_worker(self, job: Job) -> bool:
        """A listing suggesting GPUs, on a worker with none, while a GPU worker is alive (never twice)."""
        assert job.manifest is not None
        if job.route == GPU_ROUTE or job.source_kind == "dataset" or job.manifest.resources.gpu <= 0:
            return False
        if self.sandbox.gpus_available() > 0 or self.gpu_workers_alive is None:
            return False
        return await self.gpu_workers_alive()

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

    # ------------------------------------------------------------------ package

    async def _package(self, job: Job, log: Log) -> None:
        await asyncio.to_thread(self._clear_earlier_runs, job)
        job.staging.mkdir(parents=True)
        if job.source_kind == "package":
            await self._package_code(job, log)
        elif job.source_kind == "image":
            await self._package_image(job, log)
        elif job.source_kind == "notebook":
            await self._package_notebook(job, log)
        else:
            await self._package_dataset(job, log)
        assert job.manifest is not None
        manifest = job.manifest
        named = manifest.listing_id
        if job.listing_id and named and named != job.listing_id:  # the argument silently won before
            raise BadInput(
                f"listingId {job.listing_id} and the manifest's listing_id {named} name different "
                "listings; give one of them",
                field="listing_id",
            )
        job.target = await self._through_outage(
            job,
            "reading its target listing",
            lambda: resolve_target(
                self.listings,
                job.actor,
                manifest.name,
                manifest.kind.value,
                job.listing_id or manifest.listing_id,
                manifest.version,
            ),
        )
        where = f"listing {job.target.listing_id}" if job.target.listing_id else "a new listing"
        log(f"target: version {job.target.version} of {where}")
        gpus = job.manifest.resources.gpu
        if await self._wants_gpu_worker(job):
            job.hand_to_gpu_worker = True
            log(f"the listing suggests {gpus} GPU(s) and this worker has none: handed to a GPU worker")
        elif job.route == GPU_ROUTE:
            lent = self.sandbox.gpus_available()
            log(f"routed to the GPU workers: this one has {lent} GPU(s), the listing suggests {gpus}")

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

    def _upload(self, job: Job) -> Path:
        if job.upload is None or not job.upload.is_file():
            raise BadInput("the upload is missing (it was already processed or never arrived)")
        return job.upload

    async def _package_code(self, job: Job, log: Log) -> None:
        upload = self._upload(job)
        report = await asyncio.to_thread(
            extract_archive, upload, job.staging / "src", self.limits, job.expected_digest
        )
        job.archive = report
        if report.format == GZIPPED_FILE:
            raise UnsafeArchive(
                "corrupt", "a code package is a zip, tar or tar.gz archive, not one gzipped file"
            )
        log(
            f"{report.format} upload {report.archive_digest}: "
            f"{len(report.files)} files, {report.total_bytes} bytes"
        )
        root = find_package_root(job.staging / "src")
        prefix = root.relative_to(job.staging / "src").as_posix()
        manifest = load_package_manifest(root)
        manifest = parse_manifest(
            merge_requirements(manifest.model_dump(by_alias=True, exclude_none=True), job.requirements)
        )
        if manifest.checksums:
            rel = {(f"{prefix}/{k}" if prefix != "." else k): v for k, v in manifest.checksums.items()}
            verify_file_checksums(report, rel)
            log(f"{len(rel)} manifest checksums match")
        job.manifest = manifest
        job.package_files = {
            (k[len(prefix) + 1 :] if prefix != "." else k): v for k, v in report.files.items()
        }
        job.package_file = await asyncio.to_thread(normalize_package, root, job.staging / "package.tar.gz")
        log(f"normalized package {sha256_file(job.package_file)} ({job.package_file.stat().st_size} bytes)")

    async def _package_notebook(self, job: Job, log: Log) -> None:
        upload = self._upload(job)
        limit = self.settings.publish_max_notebook_bytes
        if upload.stat().st_size > limit:
            raise BadInput(f"the notebook is larger than the limit of {limit} bytes for notebooks")
        digest = await asyncio.to_thread(sha256_file, upload)
        if job.expected_digest and job.expected_digest.lower() != digest:
            raise UnsafeArchive(
                "checksum", f"upload digest {digest} differs from the declared {job.expected_digest}"
            )
        raw = await asyncio.to_thread(upload.read_bytes)
        notebook = await asyncio.to_thread(parse_notebook, raw)
        cells = notebook.cells
        code = sum(1 for c in cells if c["cell_type"] == "code")
        log(f"notebook {digest}: nbformat 4, {len(cells)} cells ({code} code), every code cell compiles")
        job.manifest = parse_manifest(
            merge_requirements(notebook_manifest(notebook, job.manifest_data), job.requirements), "notebook"
        )
        root = await asyncio.to_thread(write_notebook_package, raw, job.staging / "src")
        job.package_files = {p.name: await asyncio.to_thread(sha256_file, p) for p in root.iterdir()}
        job.package_file = await asyncio.to_thread(normalize_package, root, job.staging / "package.tar.gz")
        size = job.package_file.stat().st_size
        log(f"packaged with its runner: {sha256_file(job.package_file)} ({size} bytes)")

    async def _package_image(self, job: Job, log: Log) -> None:
        images = self._require_images()
        job.manifest = parse_manifest(merge_requirements(job.manifest_data or {}, job.requirements), "image")
        if job.upload is not None:
            source = await asyncio.to_thread(images.load_tarball, self._upload(job))
            log(f"loaded docker save tarball: image {source}")
        elif job.image_ref:
            source = await asyncio.to_thread(images.pull_from_registry, job.image_ref)
            log(f"pulled {job.image_ref}: image {source}")
        else:
            raise BadInput("an image publication needs an image reference or a docker save tarball")
        info = await asyncio.to_thread(images.info, source)
        command = tuple(job.manifest.entrypoint or info.command)
        if not command:
            raise BadInput("the image has neither ENTRYPOINT nor CMD and the manifest names no entrypoint")
        if info.workdir not in ("", "/", "/app"):
            # The executor runs every image in /app; keep the producer's working directory explicitly.
            command = ("/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", info.workdir, *command)
        job.command = command
        temp_tag = job.image_repository
        await asyncio.to_thread(images.tag, source, temp_tag, "source")
        job.image_id = await asyncio.to_thread(
            images.build,
            f"{temp_tag}:normalized",
            list(command),
            {"org.mlrepo.source-image": source, "org.mlrepo.publication": job.publication_id},
            None,
            f"{temp_tag}:source",
            "/app",
        )
        log(f"derived image {job.image_id} running {list(command)}")

    async def _package_dataset(self, job: Job, log: Log) -> None:
        upload = self._upload(job)
        job.manifest = parse_manifest(
            merge_requirements(job.manifest_data or {}, job.requirements), "dataset"
        )
        digest = await asyncio.to_thread(sha256_file, upload)
        if job.expected_digest and job.expected_digest.lower() != digest:
            raise UnsafeArchive(
                "checksum", f"upload digest {digest} differs from the declared {job.expected_digest}"
            )
        job.package_file = upload
        log(f"dataset upload {digest}: {upload.stat().st_size} bytes")

    def _require_images(self) -> ImageService:
        if self.images is None or not self.images.available():
            raise Unavailable("no container engine is available to take in images")
        return self.images

    # ------------------------------------------------------------------ test

    async def _test(self, job: Job, log: Log) -> None:
        assert job.manifest is not None
        if job.source_kind == "dataset":
            await self._test_dataset(job, log)
            return
        target = await self._run_target(job, log)
        notebook = job.source_kind == "notebook"
        given = probe_input_of(job.manifest.tests, notebook)
        limits = limits_for(job.manifest.timeout_s, 1, job.manifest.resources.model_dump())
        log(await probe(self.sandbox, target, given, limits, must_succeed=notebook))

    async def _run_target(self, job: Job, log: Log) -> RunTarget:
        assert job.manifest is not None
        if job.source_kind == "image":
            if not self.sandbox.can_run_images():
                raise Unavailable("no container sandbox is available to test the image")
            return RunTarget(command=job.command, image=job.image_id)
        if job.run_dir is None:
            assert job.package_file is not None
            run_dir = job.staging / "run"
            report = await asyncio.to_thread(unpack_package, job.package_file, run_dir, self.limits)
            if report.files != job.package_files:
                raise UnsafeArchive(
                    "checksum", "the normalized package does not reproduce the upload's files"
                )
            log(f"normalized package extracts cleanly; {len(report.files)} file checksums match the upload")
            job.run_dir = run_dir
            job.command = tuple(job.manifest.entrypoint or ())
        if not self.sandbox.can_run_code():  # MLREPO_RUNTIME=docker: test the package in its image
            if not self.sandbox.can_run_images():
                raise Unavailable("no sandbox runtime is available to test the package")
            return RunTarget(command=job.command, image=await self._package_image_of(job, log))
        return RunTarget(command=job.command, code_dir=job.run_dir)

    async def _test_dataset(self, job: Job, log: Log) -> None:
        assert job.package_file is not None
        with open(job.package_file, "rb") as f:
            head = f.read(512)
        if not head:
            raise BadInput("the dataset upload is empty")
        try:
            detect_format(head)
        except UnsafeArchive:
            log("single-file dataset (not an archive)")
            return
        report = await asyncio.to_thread(
            extract_archive, job.package_file, job.staging / "dataset", self.limits
        )
        log(
            f"{report.format} dataset archive extracts safely: "
            f"{len(report.files)} files, {report.total_bytes} bytes"
        )

    # ------------------------------------------------------------------ verify

    async def _verify(self, job: Job, log: Log) -> None:
        assert job.manifest is not None
        if not job.manifest.verify:
            raise Skip("verification was not requested")
        tests = [t.model_dump() for t in job.manifest.tests]
        target = await self._run_target(job, log)
        output_schema = job.manifest.output.schema_ if job.manifest.output else None
        limits = limits_for(job.manifest.timeout_s, len(tests), job.manifest.resources.model_dump())
        report = await run_unit_tests(self.sandbox, target, tests, output_schema, limits)
        if not report.passed:
            raise BadInput("verification failed: " + "; ".join(report.failures[:10]))
        job.signatures = report.signatures
        job.verified_with = report.runtime
        log(f"{len(tests)} unit tests passed in {report.duration_s * 1000:.0f} ms ({report.runtime})")

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

    async def _package_image_of(self, job: Job, log: Log) -> str:
        """The package's image (built once): FROM the base image, the package at /app, CMD its entrypoint."""
        if job.built_image is None:
            assert job.run_dir is not None and job.package_file is not None
            images = self._require_images()
            labels = {
                "org.mlrepo.package-digest": await asyncio.to_thread(sha256_file, job.package_file),
                "org.mlrepo.publication": job.publication_id,
            }
            tag = f"{job.image_repository}:built"
            job.built_image = await asyncio.to_thread(
                images.build, tag, list(job.command), labels, job.run_dir
            )
            log(f"built image {job.built_image} FROM {self.settings.base_image}")
        return job.built_image
