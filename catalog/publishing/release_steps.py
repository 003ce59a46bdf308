"""The publish and list steps: the checked package stored or pushed, then the listing written.

The publish step stores a package in the artifact store (encrypted when asked) or pushes an image to the
registry. The list step containerizes a code package where a container engine is in use (its image
built, probed and pushed), then writes the listing, its version and its index entry in one transaction
under the run's claim (``listing_writer.write_version``): nothing of the publication is visible before.
Separate because these are the only steps whose results outlive the run.
"""

from __future__ import annotations

import asyncio

from catalog.enums import VerificationStatus
from catalog.listings import ListingService
from catalog.publishing.claimed_run import Job, Log
from catalog.publishing.images import ImageService, slug
from catalog.publishing.listing_writer import write_version
from catalog.publishing.packaging import PACKAGED_KINDS
from catalog.publishing.registry import PUBLISHED_NAMESPACE, push_tag
from catalog.publishing.sandbox import RunTarget, Sandbox
from catalog.publishing.verification import limits_for, probe, probe_input_of
from infra.artifacts import ArtifactStore
from infra.settings import Settings
from infra.tables import Publication


class ReleaseSteps:
    """A part of ``PublishWorkflow`` (``catalog.publishing.workflow``), which provides these attributes;
    it writes through ``_through_outage`` (``catalog.publishing.claimed_run``), finds a version an
    earlier try wrote with ``_version_written`` (``catalog.publishing.earlier_runs``) and builds the
    package's image with ``_package_image_of`` (``catalog.publishing.check_steps``)."""

    settings: Settings
    listings: ListingService
    store: ArtifactStore
    sandbox: Sandbox
    images: ImageService | None

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
            f"{PUBLISHED_NAMESPACE}/{slug(job.actor.name or job.actor.account_id or 'owner')}/"
            f"{slug(job.manifest.name)}"
        )
        if not self.settings.registry_url:
            tag = f"{repository}:{job.target.version}"
            await asyncio.to_thread(images.tag, image_id, repository, job.target.version)
            log(f"no registry configured: image kept in the local engine as {tag}")
            return tag
        tag = push_tag(job.target.version, job.publication_id, job.claim.attempt)
        ref = await asyncio.to_thread(images.push, image_id, repository, tag)
        log(f"pushed {ref}")
        return ref

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
