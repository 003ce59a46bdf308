"""The package step: the upload made into what the later steps test, verify and publish.

Per source kind: a code package is extracted safely, its manifest read and checked, and normalized to a
deterministic tar.gz; a notebook is checked, described and packaged with its runner; an image is loaded
or pulled and a normalized image derived from it; a dataset upload is checked against its declared
digest. Then the step resolves the listing and version the publication targets, and decides whether a
GPU worker should run it instead (``catalog.publishing.gpu_routing``). Separate because it is the only
step that reads the producer's upload and the only one that differs for each source kind this much.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from catalog.listings import ListingService
from catalog.publishing.archive_safety import (
    GZIPPED_FILE,
    ArchiveLimits,
    UnsafeArchive,
    extract_archive,
    verify_file_checksums,
)
from catalog.publishing.claimed_run import Job, Log
from catalog.publishing.gpu_routing import GPU_ROUTE
from catalog.publishing.images import ImageService
from catalog.publishing.listing_writer import resolve_target
from catalog.publishing.manifest import find_package_root, load_package_manifest, parse_manifest
from catalog.publishing.notebook import notebook_manifest, parse_notebook, write_notebook_package
from catalog.publishing.packaging import normalize_package
from catalog.publishing.registry import run_labels
from catalog.publishing.requirements import merge_requirements
from catalog.publishing.sandbox import Sandbox
from infra.artifacts import sha256_file
from infra.errors import BadInput, Unavailable
from infra.settings import Settings


class PackageStep:
    """A part of ``PublishWorkflow`` (``catalog.publishing.workflow``), which provides these attributes;
    it reads through ``_through_outage`` (``catalog.publishing.claimed_run``), clears earlier runs'
    files (``catalog.publishing.earlier_runs``) and asks ``_wants_gpu_worker``
    (``catalog.publishing.gpu_routing``)."""

    settings: Settings
    listings: ListingService
    sandbox: Sandbox
    images: ImageService | None
    limits: ArchiveLimits

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
                manifest.visibility,
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
            {"org.mlrepo.source-image": source, **run_labels(job.publication_id, job.claim.attempt)},
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
