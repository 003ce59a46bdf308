"""The test and verify steps: the package (or image) run in the sandbox before anything is published.

The test step checks that what was packaged is what was uploaded (the normalized package re-extracted,
every file checksum compared) and probes the entrypoint once; a notebook must run through on its default
parameters. The verify step, when asked for, runs the producer's unit tests and keeps their output
signatures for re-verification (``catalog.publishing.verification``). Separate because these are the
steps that run the producer's code, and both need the same run target: the unpacked package under
bubblewrap, or an image in Docker.
"""

from __future__ import annotations

import asyncio

from catalog.publishing.archive_safety import ArchiveLimits, UnsafeArchive, detect_format, extract_archive
from catalog.publishing.claimed_run import Job, Log
from catalog.publishing.images import ImageService
from catalog.publishing.packaging import unpack_package
from catalog.publishing.registry import run_labels
from catalog.publishing.sandbox import RunTarget, Sandbox
from catalog.publishing.steps import Skip
from catalog.publishing.verification import limits_for, probe, probe_input_of, run_unit_tests
from infra.artifacts import sha256_file
from infra.errors import BadInput, Unavailable
from infra.settings import Settings


class CheckSteps:
    """A part of ``PublishWorkflow`` (``catalog.publishing.workflow``), which provides these attributes;
    it builds images through ``_require_images`` (``catalog.publishing.package_step``)."""

    settings: Settings
    sandbox: Sandbox
    images: ImageService | None
    limits: ArchiveLimits

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

    async def _package_image_of(self, job: Job, log: Log) -> str:
        """The package's image (built once): FROM the base image, the package at /app, CMD its entrypoint."""
        if job.built_image is None:
            assert job.run_dir is not None and job.package_file is not None
            images = self._require_images()
            labels = {
                "org.mlrepo.package-digest": await asyncio.to_thread(sha256_file, job.package_file),
                **run_labels(job.publication_id, job.claim.attempt),
            }
            tag = f"{job.image_repository}:built"
            job.built_image = await asyncio.to_thread(
                images.build, tag, list(job.command), labels, job.run_dir
            )
            log(f"built image {job.built_image} FROM {self.settings.base_image}")
        return job.built_image

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
