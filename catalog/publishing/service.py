"""Publishing as a service: accept uploads, queue the publish job, report on it, re-verify listings.

A submission only stages the upload (streamed to a private file, size-capped, renamed into place when
complete) and records a QUEUED publication with its five pending steps; the work itself runs in the
publish job (``workflow.PublishWorkflow``) on an arq worker, or in this process when no Redis is
configured. Cheap checks that need no upload processing — signed in, a producer, owner of the target
listing, a valid manifest for images/datasets, the declared sha256 of the upload (hashed as it streams
in) — fail the submission at once with their error code.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from docker.errors import ImageNotFound
from redis.exceptions import RedisError
from sqlalchemy import select, update

from catalog.actors import Actor
from catalog.enums import VerificationStatus
from catalog.listings import ListingService, require_modifiable
from catalog.publishing.archive_safety import ArchiveLimits
from catalog.publishing.gpu_routing import GPU_ROUTE, HANDED_TO_GPU_WORKER
from catalog.publishing.images import ImageService, check_own_registry_ref
from catalog.publishing.listing_writer import NOT_OWNER
from catalog.publishing.manifest import parse_manifest
from catalog.publishing.packaging import PACKAGED_KINDS, checkout_package
from catalog.publishing.requirements import check_requirements
from catalog.publishing.sandbox import RunTarget, Sandbox
from catalog.publishing.steps import PublicationStatus, StepStatus, initial_steps
from catalog.publishing.verification import compare_signatures, limits_for, run_unit_tests
from catalog.publishing.workflow import PublishWorkflow
from infra.artifacts import ArtifactStore
from infra.db import Database
from infra.errors import BadInput, Forbidden, NotFound, Unauthenticated, Unavailable
from infra.heartbeat import lost_before, silent_since
from infra.settings import Settings
from infra.tables import Listing, ListingVersion, Publication, new_id, utcnow

logger = logging.getLogger("mlrepo.publishing")

COPY_CHUNK = 1 << 20
SOURCE_KINDS = ("package", "image", "dataset", "notebook")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
DELIVERIES_KEY = "deliveries"  # in metadata_json: how often recovery re-queued it after a lost worker


def _deliveries(meta: dict[str, Any] | None) -> int:
    return int((meta or {}).get(DELIVERIES_KEY) or 0)


def _given_up(runs: int, steps: list[Any] | None) -> dict[str, Any]:
    """The columns of a publication whose worker was lost on each of its ``runs``: a package that takes
    its worker down every time would otherwise be recovered, and run again, forever."""
    error = (
        f"the worker running this publication was lost {runs} times (the package may crash or exhaust "
        "its worker); giving up"
    )
    steps = [
        {**step, "status": StepStatus.FAILED.value, "error": error}
        if step.get("status") == StepStatus.RUNNING.value
        else step
        for step in steps or []
    ]
    return {"status": PublicationStatus.FAILED.value, "error": error, "steps": steps, "upload_path": None}


def expected_upload_digest(declared: str | None) -> str | None:
    """The SHA-256 a producer declares for an upload (``sha256`` / ``--sha256``), as the digest the
    package step compares: ``sha256:<lower-case hex>``. Given as the hex alone or as the digest every
    other field shows (``sha256:<hex>``); anything else is refused before the upload is staged (it was
    queued, then failed in step package as an "unsafe archive" whose digest differed)."""
    if not declared:
        return None
    value = declared.strip().lower().removeprefix("sha256:")
    if not _SHA256_HEX.fullmatch(value):
        raise BadInput("sha256: must be 64 hexadecimal digits, optionally after 'sha256:'", field="sha256")
    return f"sha256:{value}"


class PublishQueue(Protocol):
    async def enqueue(self, publication_id: str, delivery: int = 0, on_gpu: bool = False) -> None:
        """``delivery`` counts re-queues after a lost worker: each is a new job, not a duplicate.
        ``on_gpu``: to the GPU workers' queue."""
        ...

    async def gpu_workers_alive(self) -> bool:
        """Whether a worker with GPUs takes publications now (``on_gpu``): where GPUs live only on
        dedicated workers, a listing that suggests GPUs is verified there (``workflow``)."""
        ...


class InProcessQueue:
    """No Redis: run the publish job as a task of this process (kept referenced until it ends)."""

    def __init__(self, run: Callable[[str], Awaitable[Any]]) -> None:
        self._run = run
        self._tasks: set[asyncio.Task[Any]] = set()

    async def enqueue(self, publication_id: str, delivery: int = 0, on_gpu: bool = False) -> None:
        task = asyncio.create_task(self._run(publication_id), name=f"publish:{publication_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every queued job (tests, and graceful shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def gpu_workers_alive(self) -> bool:
        return False  # one process: it verifies with whatever GPUs it has


class ArqQueue:
    """Redis configured: the job goes to the arq queue that ``mlrepo worker`` consumes.

    ``gpu_queue`` is the queue of the GPU workers (the worker passes ``executor.allocation``'s name: the
    catalog may not import the executor); without it nothing is ever handed to a GPU worker."""

    def __init__(self, redis_url: str, queue_name: str | None = None, gpu_queue: str | None = None) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self.gpu_queue = gpu_queue
        self._pool: Any = None

    async def _connection(self) -> Any:
        from arq import create_pool
        from arq.connections import RedisSettings

        if self._pool is None:
            self._pool = await create_pool(RedisSettings.from_dsn(self.redis_url))
        return self._pool

    async def enqueue(self, publication_id: str, delivery: int = 0, on_gpu: bool = False) -> None:
        pool = await self._connection()
        # The job id dedupes: enqueueing the same delivery twice runs it once. A lost worker's job stays
        # in Redis, "in progress" until arq's own job timeout, so a re-queue after it needs an id of its own;
        # so does the hand-off to a GPU worker (the first delivery's result holds the plain id for an hour).
        queue_name = self.queue_name
        job_id = f"publish:{publication_id}" + (f":{delivery}" if delivery else "")
        if on_gpu:
            if self.gpu_queue is None:
                raise Unavailable("this process knows no GPU worker queue to hand the publication to")
            queue_name, job_id = self.gpu_queue, f"{job_id}:gpu"
        kwargs = {"_queue_name": queue_name} if queue_name else {}
        await pool.enqueue_job("publish_job", publication_id, _job_id=job_id, **kwargs)

    async def gpu_workers_alive(self) -> bool:
        """A live arq worker refreshes its queue's health-check key every ``health_check_interval``
        (30 s, kept 31 s), busy or not; the key's presence is the GPU workers' heartbeat."""
        from arq.constants import health_check_key_suffix

        if self.gpu_queue is None:
            return False
        try:
            pool = await self._connection()
            return bool(await pool.exists(self.gpu_queue + health_check_key_suffix))
        except (OSError, RedisError) as exc:  # a blip must not fail the publication: verify here instead
            logger.warning("could not see whether a GPU worker is alive: %s", exc)
            return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


@dataclass(frozen=True)
class StepView:
    name: str
    status: str
    started_at: str | None
    finished_at: str | None
    duration_ms: float | None
    log: list[str]
    error: str | None
    error_code: str | None


@dataclass(frozen=True)
class PublicationView:
    id: str
    owner_id: str
    source_kind: str
    status: str
    listing_id: str | None
    version: str | None
    artifact_digest: str | None
    image_ref: str | None
    error: str | None
    steps: list[StepView]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, pub: Publication) -> PublicationView:
        meta = pub.metadata_json or {}
        return cls(
            id=pub.id,
            owner_id=pub.owner_id,
            source_kind=pub.source_kind,
            status=pub.status,
            listing_id=pub.listing_id,
            version=meta.get("version"),
            artifact_digest=pub.artifact_digest,
            image_ref=meta.get("image_ref"),
            error=pub.error,
            steps=[
                StepView(
                    name=s["name"],
                    status=s["status"],
                    started_at=s.get("started_at"),
                    finished_at=s.get("finished_at"),
                    duration_ms=s.get("duration_ms"),
                    log=list(s.get("log") or []),
                    error=s.get("error"),
                    error_code=s.get("error_code"),
                )
                for s in (pub.steps or [])
            ],
            created_at=pub.created_at,
            updated_at=pub.updated_at,
        )


MAX_PUBLICATIONS_LISTED = 200  # Query.myPublications(limit)

STILL_SUSPENDED = (
    "its unit tests match the recorded behaviour again, but it stays suspended until its producer "
    "publishes a new version"
)


@dataclass(frozen=True)
class VerificationResult:
    listing_id: str
    outcome: str  # verified | suspended | skipped | error
    problems: list[str]


class PublishingService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        listings: ListingService,
        sandbox: Sandbox,
        store: ArtifactStore | None = None,
        images: ImageService | None = None,
        queue: PublishQueue | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.listings = listings
        self.sandbox = sandbox
        self.store = store or ArtifactStore.from_settings(settings)
        self.images = images if images is not None else ImageService.from_settings(settings)
        self.queue: PublishQueue = queue or InProcessQueue(self.run)
        self.workflow = PublishWorkflow(
            settings, db, listings, self.store, sandbox, self.images, self.queue.gpu_workers_alive
        )

    @property
    def upload_root(self) -> Path:
        return self.settings.data_dir / "uploads"

    # ------------------------------------------------------------------ submissions

    async def submit_package(
        self,
        actor: Actor,
        upload: BinaryIO,
        *,
        listing_id: str | None = None,
        requirements: dict[str, Any] | None = None,
        expected_digest: str | None = None,
    ) -> PublicationView:
        """A zip/tar.gz code package with ``mlrepo.json``/``mlrepo.toml`` inside."""
        return await self._submit(
            actor, "package", upload, None, None, listing_id, requirements, expected_digest
        )

    async def submit_dataset(
        self,
        actor: Actor,
        upload: BinaryIO,
        manifest: dict[str, Any],
        *,
        listing_id: str | None = None,
        requirements: dict[str, Any] | None = None,
        expected_digest: str | None = None,
    ) -> PublicationView:
        parse_manifest(manifest, "dataset")
        return await self._submit(
            actor, "dataset", upload, None, manifest, listing_id, requirements, expected_digest
        )

    async def submit_notebook(
        self,
        actor: Actor,
        upload: BinaryIO,
        manifest: dict[str, Any] | None = None,
        *,
        listing_id: str | None = None,
        requirements: dict[str, Any] | None = None,
        expected_digest: str | None = None,
    ) -> PublicationView:
        """A Jupyter notebook (``.ipynb``) as it is. Its manifest is ``manifest`` over the notebook's own
        ``metadata.mlrepo``; both are read with the notebook, in the package step."""
        if manifest is not None and not isinstance(manifest, dict):
            raise BadInput("manifest: must be a JSON object", field="manifest")
        return await self._submit(
            actor, "notebook", upload, None, manifest, listing_id, requirements, expected_digest
        )

    async def submit_image(
        self,
        actor: Actor,
        manifest: dict[str, Any],
        *,
        image_ref: str | None = None,
        tarball: BinaryIO | None = None,
        listing_id: str | None = None,
        requirements: dict[str, Any] | None = None,
    ) -> PublicationView:
        """An image pushed to mlrepo's registry (``image_ref``) or a ``docker save`` tarball."""
        if (image_ref is None) == (tarball is None):
            raise BadInput(
                "give exactly one of imageRef (pushed to mlrepo's registry) or a docker save tarball"
            )
        parse_manifest(manifest, "image")
        if image_ref is not None and not actor.is_anonymous:  # anonymous: refused below, as every kind
            check_own_registry_ref(self.settings.registry_url, image_ref, actor.name)
        return await self._submit(
            actor, "image", tarball, image_ref, manifest, listing_id, requirements, None
        )

    async def _submit(
        self,
        actor: Actor,
        source_kind: str,
        upload: BinaryIO | None,
        image_ref: str | None,
        manifest: dict[str, Any] | None,
        listing_id: str | None,
        requirements: dict[str, Any] | None,
        expected_digest: str | None,
    ) -> PublicationView:
        if actor.is_anonymous:
            raise Unauthenticated("sign in to publish")
        if not actor.is_producer:
            raise Forbidden("only producer accounts may publish")
        if listing_id is not None:
            await self._check_owner(actor, listing_id)
        check_requirements(requirements)
        publication_id = new_id()
        upload_path = None
        if upload is not None:
            upload_path = await asyncio.to_thread(self._stage_upload, publication_id, upload, expected_digest)
        try:
            async with self.db.session() as session:
                pub = Publication(
                    id=publication_id,
                    owner_id=actor.account_id,
                    listing_id=listing_id,
                    source_kind=source_kind,
                    status=PublicationStatus.QUEUED.value,
                    steps=initial_steps(),
                    metadata_json={
                        "manifest": manifest,
                        "image_ref": image_ref,
                        "expected_digest": expected_digest,
                    },
                    requirements=dict(requirements or {}),
                    upload_path=str(upload_path) if upload_path else None,
                )
                session.add(pub)
        except BaseException:
            if upload_path is not None:
                shutil.rmtree(upload_path.parent, ignore_errors=True)
            raise
        await self._deliver(publication_id, 0)
        return await self.get(actor, publication_id)

    async def _deliver(self, publication_id: str, delivery: int, on_gpu: bool = False) -> None:
        """Hand a QUEUED publication to the queue. Its record and upload are written already, so a queue
        that refuses it now (Redis down) fails nothing: recovery re-queues what the database says."""
        try:
            await self.queue.enqueue(publication_id, delivery, on_gpu=on_gpu)
        except Exception:
            logger.warning(
                "publication %s is queued, but the queue refused it for now", publication_id, exc_info=True
            )

    async def _check_owner(self, actor: Actor, listing_id: str) -> None:
        async with self.db.session() as session:
            await require_modifiable(
                session, actor, await session.get(Listing, listing_id), listing_id, NOT_OWNER
            )

    def _stage_upload(
        self, publication_id: str, upload: BinaryIO, expected_digest: str | None = None
    ) -> Path:
        """Stream the upload to ``uploads/<id>/upload``; partial or oversized uploads leave nothing.

        The declared ``expected_digest`` is checked on the bytes as they stream by (no second read): a
        wrong one was queued and only FAILED in step package, after a worker took it; now the producer
        gets BAD_INPUT at once and nothing is staged or recorded. The package step still compares."""
        directory = self.upload_root / publication_id
        directory.mkdir(parents=True, mode=0o700)
        limit = self.settings.publish_max_upload_bytes
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".part-")
        try:
            size = 0
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                while chunk := upload.read(COPY_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise BadInput(f"upload is larger than the limit of {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                if size == 0:
                    raise BadInput("the upload is empty")
                received = f"sha256:{digest.hexdigest()}"
                if expected_digest is not None and expected_digest.lower() != received:
                    raise BadInput(
                        f"sha256: the upload received has digest {received}, not the declared "
                        f"{expected_digest} (a truncated or different file?)",
                        field="sha256",
                    )
                out.flush()
                os.fsync(out.fileno())
            final = directory / "upload"
            os.replace(tmp, final)
            return final
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    # ------------------------------------------------------------------ queries and the job

    async def get(self, actor: Actor, publication_id: str) -> PublicationView:
        """The owner (or an admin) sees a publication; for anyone else it does not exist."""
        async with self.db.session() as session:
            pub = await session.get(Publication, publication_id)
            if pub is None or not (actor.is_admin or pub.owner_id == actor.account_id) or actor.is_anonymous:
                raise NotFound(f"no publication with id {publication_id!r}")
            return PublicationView.of(pub)

    async def mine(self, actor: Actor, limit: int = 50) -> list[PublicationView]:
        if actor.is_anonymous:
            raise Unauthenticated("sign in to see your publications")
        if not 1 <= limit <= MAX_PUBLICATIONS_LISTED:  # was clamped silently: 0 gave one, 10**6 gave 200
            raise BadInput(
                f"limit must be between 1 and {MAX_PUBLICATIONS_LISTED}; got {limit}", field="limit"
            )
        async with self.db.session() as session:
            rows = await session.scalars(
                select(Publication)
                .where(Publication.owner_id == actor.account_id)
                .order_by(Publication.created_at.desc())
                .limit(limit)
            )
            return [PublicationView.of(p) for p in rows]

    async def run(self, publication_id: str) -> str:
        """The publish job body (arq ``publish_job`` and the in-process queue call this). A publication the
        workflow hands to a GPU worker goes back on the queue, to the GPU workers' side of it."""
        outcome = await self.workflow.run(publication_id)
        if outcome == HANDED_TO_GPU_WORKER:
            await self._deliver(publication_id, 0, on_gpu=True)
        return outcome

    async def recover(self) -> int:
        """Re-enqueue what the database says is unfinished: every QUEUED publication (Redis may have lost
        it) and every RUNNING one whose heartbeat is older than ``job_stale_after_s`` (its worker died; a
        live run beats every ``job_heartbeat_s``, however long its step takes), as the reconciler does
        for jobs. Each step is safe to repeat, but a publication that lost its worker on each of its
        ``job_max_attempts`` runs FAILS instead, and what its runs left here goes (its upload, staging
        directories and images: none of those runs can write any more); a re-queued one's are removed by
        its next run. One handed to a GPU worker goes back to the GPU workers' queue, and waits there for
        one (as a GPU job does)."""
        # A RUNNING row without a beat (a claim writes the first) counts from its last change.
        silent = silent_since(
            lost_before(self.settings.job_stale_after_s), Publication.heartbeat_at, Publication.updated_at
        )
        async with self.db.session() as session:
            stale = (
                await session.execute(
                    select(
                        Publication.id,
                        Publication.metadata_json,
                        Publication.steps,
                        Publication.upload_path,
                        Publication.attempts,
                    ).where(Publication.status == PublicationStatus.RUNNING.value, silent)
                )
            ).all()
            given_up: list[tuple[str, str | None, int]] = []
            for publication_id, meta, steps, upload_path, attempts in stale:
                meta = dict(meta or {})
                runs = _deliveries(meta) + 1  # the first delivery, then one per earlier recovery
                if runs >= self.settings.job_max_attempts:
                    values = _given_up(runs, steps)
                else:
                    meta[DELIVERIES_KEY] = runs
                    values = {"status": PublicationStatus.QUEUED.value, "metadata_json": meta}
                changed = await session.execute(
                    update(Publication)
                    .where(
                        Publication.id == publication_id,
                        Publication.status == PublicationStatus.RUNNING.value,
                        silent,
                    )
                    .values(updated_at=utcnow(), **values)
                )
                if changed.rowcount and values["status"] == PublicationStatus.FAILED.value:
                    given_up.append((publication_id, upload_path, attempts))
            queued = (
                await session.execute(
                    select(Publication.id, Publication.metadata_json).where(
                        Publication.status == PublicationStatus.QUEUED.value
                    )
                )
            ).all()
        # No run comes back for what the runs of a publication given up left here.
        for publication_id, upload_path, attempts in given_up:
            if upload_path:
                await asyncio.to_thread(shutil.rmtree, Path(upload_path).parent, True)
            await asyncio.to_thread(shutil.rmtree, self.workflow.staging_root / publication_id, True)
            await asyncio.to_thread(self.workflow.remove_run_images, publication_id, range(1, attempts + 1))
        for publication_id, meta in queued:
            on_gpu = (meta or {}).get("route") == GPU_ROUTE
            await self._deliver(publication_id, _deliveries(meta), on_gpu=on_gpu)
        return len(queued)

    # ------------------------------------------------------------------ re-verification

    async def verify_all(self, gpu_listings_only: bool = False) -> list[VerificationResult]:
        """Re-run every verified listing's unit tests (``mlrepo verify --all`` and the periodic job).

        Listings that suggest GPUs are re-verified where they were verified: by the GPU workers' own
        periodic job (``gpu_listings_only``) while one is alive, not without a GPU here, where their tests
        could fail for want of one and suspend a listing that works."""
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(Listing.id, Listing.resources).where(
                        Listing.verification_status == VerificationStatus.VERIFIED.value
                    )
                )
            ).all()
        gpu_workers_verify = (
            not gpu_listings_only
            and self.sandbox.gpus_available() == 0
            and await self.queue.gpu_workers_alive()
        )
        results = []
        for listing_id, resources in rows:
            suggests_gpu = int((resources or {}).get("gpu") or 0) > 0
            if gpu_listings_only and not suggests_gpu:
                continue
            if gpu_workers_verify and suggests_gpu:
                results.append(VerificationResult(listing_id, "skipped", ["re-verified by a GPU worker"]))
                continue
            results.append(await self.verify_listing(listing_id))
        return results

    async def verify_listing(self, listing_id: str) -> VerificationResult:
        async with self.db.session() as session:
            listing = await session.get(Listing, listing_id)
            if listing is None:
                raise NotFound(f"no listing with id {listing_id!r}")
            version = await session.scalar(
                select(ListingVersion).where(
                    ListingVersion.listing_id == listing_id, ListingVersion.version == listing.version
                )
            )
        if version is None or not version.reference_signatures:
            return VerificationResult(listing_id, "skipped", ["no recorded reference behaviour"])
        manifest = version.manifest or {}
        staging = Path(tempfile.mkdtemp(prefix="verify-", dir=self._staging_root()))
        try:
            problems = []
            stored = version.artifact_kind in PACKAGED_KINDS and version.artifact_digest
            if stored and not await asyncio.to_thread(self.store.verify, version.artifact_digest):
                problems.append(f"artifact {version.artifact_digest} no longer matches its digest")
            if not problems:
                target = await self._verification_target(version, manifest, staging)
                tests = list(manifest.get("tests") or [])
                limits = limits_for(
                    float(manifest.get("timeout_s") or 30), len(tests), manifest.get("resources")
                )
                # Projected as when the signatures were taken: the listing's output schema may have
                # been edited since (updateListing), which changes no code.
                published_schema = (manifest.get("output") or {}).get("schema")
                report = await run_unit_tests(self.sandbox, target, tests, published_schema, limits)
                problems = compare_signatures(version.reference_signatures, report)
        except Unavailable as exc:
            return VerificationResult(listing_id, "error", [exc.message])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if problems:
            await self.listings.set_system_fields(
                listing_id, verification_status=VerificationStatus.SUSPENDED.value, status="suspended"
            )
            logger.warning("listing %s suspended: %s", listing_id, "; ".join(problems))
            return VerificationResult(listing_id, "suspended", problems)
        if listing.verification_status == VerificationStatus.SUSPENDED.value:
            # Said "verified" while the listing stayed pulled: nothing here lifts a suspension.
            return VerificationResult(listing_id, "suspended", [STILL_SUSPENDED])
        return VerificationResult(listing_id, "verified", [])

    def _staging_root(self) -> Path:
        root = self.settings.data_dir / "staging"
        root.mkdir(parents=True, exist_ok=True)
        return root

    async def _verification_target(
        self, version: ListingVersion, manifest: dict[str, Any], staging: Path
    ) -> RunTarget:
        """Re-run where it was verified: the image under Docker, or the stored package under bubblewrap."""
        command = tuple(manifest.get("command") or manifest.get("entrypoint") or ())
        use_image = version.image_ref and (
            version.artifact_kind == "image" or manifest.get("verified_with") == "docker"
        )
        if use_image:
            if not self.sandbox.can_run_images():
                raise Unavailable("no container sandbox is available to re-verify an image")
            await asyncio.to_thread(self._ensure_image, version.image_ref)
            return RunTarget(command=command, image=version.image_ref)
        if not version.artifact_digest:
            raise Unavailable("the version has no stored package to re-run")
        limits = ArchiveLimits.from_settings(self.settings)
        code_dir = await asyncio.to_thread(
            checkout_package, self.store, version.artifact_digest, staging, limits
        )
        return RunTarget(command=command, code_dir=code_dir)

    def _ensure_image(self, ref: str) -> None:
        try:
            self.images.client.images.get(ref)
        except ImageNotFound:  # not in the local engine (a fresh worker): fetch it by digest
            self.images.pull_from_registry(ref)
