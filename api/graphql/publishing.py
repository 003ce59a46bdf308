"""GraphQL for publishing: upload a code package, an image, a dataset or a notebook; watch the publish
job's steps.

Uploads use the GraphQL multipart request spec (strawberry ``Upload``; the view must be created with
``multipart_uploads_enabled=True``). Resolvers only translate: ``catalog.publishing.PublishingService``
stages the upload, checks who may publish, and queues the job (arq when ``MLREPO_REDIS_URL`` is set,
otherwise a task of this process). The service lives in ``services.extras["publishing"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry import UNSET
from strawberry.file_uploads import Upload
from strawberry.scalars import JSON

from api.graphql.convert import given_fields
from api.graphql.listings import ResourcesInput
from api.graphql.types import Visibility
from catalog.publishing.service import (
    ArqQueue,
    InProcessQueue,
    PublicationView,
    PublishingService,
    expected_upload_digest,
)
from catalog.publishing.steps import PublicationStatus as PublicationStatusValue
from catalog.publishing.steps import StepStatus as StepStatusValue
from executor.publish_sandbox import ExecutorSandbox

EXTRAS_KEY = "publishing"
SHUTDOWN_GRACE_S = 30.0
RECOVER_EVERY_S = 60.0
logger = logging.getLogger("mlrepo.api")

PublicationStatus = strawberry.enum(PublicationStatusValue, name="PublicationStatus")
PublicationStepStatus = strawberry.enum(StepStatusValue, name="PublicationStepStatus")


@strawberry.enum
class PublicationSource(Enum):
    PACKAGE = "package"
    IMAGE = "image"
    DATASET = "dataset"
    NOTEBOOK = "notebook"


@asynccontextmanager
async def lifespan(services: Any) -> AsyncIterator[None]:
    """One PublishingService per API process; without Redis it also runs the jobs (and picks up any a
    previous process left unfinished)."""
    settings, catalog = services.settings, services.catalog
    queue = ArqQueue(settings.redis_url) if settings.redis_url else None
    service = PublishingService(
        settings, catalog.db, catalog.listings, ExecutorSandbox(settings), queue=queue
    )
    services.extras[EXTRAS_KEY] = service
    recovering = None
    if queue is None:
        await service.recover()
        recovering = asyncio.create_task(recover_forever(service, RECOVER_EVERY_S))
    try:
        yield
    finally:
        if recovering is not None:
            recovering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovering
        services.extras.pop(EXTRAS_KEY, None)
        if isinstance(service.queue, InProcessQueue):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(service.queue.drain(), SHUTDOWN_GRACE_S)
        if queue is not None:
            await queue.close()


async def recover_forever(service: PublishingService, period_s: float) -> None:
    """Without Redis no worker recovers: this process re-queues, now and then, publications lost since it
    started (start-up recovery passes over those not yet stale at that moment)."""
    while True:
        await asyncio.sleep(period_s)
        try:
            await service.recover()
        except Exception:  # a database hiccup must not end the loop; the next round retries
            logger.warning("publication recovery failed", exc_info=True)


def publishing_of(info: strawberry.Info) -> PublishingService:
    return info.context.services.extras[EXTRAS_KEY]


@strawberry.type(description="One recorded step of a publication, with its timing and error log.")
class PublicationStep:
    name: str
    status: PublicationStepStatus
    started_at: str | None
    finished_at: str | None
    duration_ms: float | None
    log: list[str]
    error: str | None
    error_code: str | None = strawberry.field(description="BAD_INPUT, FORBIDDEN, CONFLICT, UNAVAILABLE...")


@strawberry.type(description="A producer's upload on its way to becoming a listing version.")
class Publication:
    id: strawberry.ID
    source_kind: PublicationSource
    status: PublicationStatus
    listing_id: strawberry.ID | None
    version: str | None
    artifact_digest: str | None
    image_ref: str | None
    error: str | None
    steps: list[PublicationStep]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: PublicationView) -> Publication:
        return cls(
            id=strawberry.ID(view.id),
            source_kind=PublicationSource(view.source_kind),
            status=PublicationStatusValue(view.status),
            listing_id=strawberry.ID(view.listing_id) if view.listing_id else None,
            version=view.version,
            artifact_digest=view.artifact_digest,
            image_ref=view.image_ref,
            error=view.error,
            steps=[
                PublicationStep(
                    name=s.name,
                    status=StepStatusValue(s.status),
                    started_at=s.started_at,
                    finished_at=s.finished_at,
                    duration_ms=s.duration_ms,
                    log=s.log,
                    error=s.error,
                    error_code=s.error_code,
                )
                for s in view.steps
            ],
            created_at=view.created_at,
            updated_at=view.updated_at,
        )


@strawberry.input(description="The producer's requirements; they override the manifest's.")
class PublishRequirementsInput:
    resources: ResourcesInput | None = UNSET
    training_resources: ResourcesInput | None = UNSET
    timeout_s: float | None = strawberry.field(default=UNSET, description="Max seconds per scoring call.")
    encrypt: bool | None = strawberry.field(default=UNSET, description="Encrypt at rest with its own key.")
    verify: bool | None = strawberry.field(default=UNSET, description="Run the unit tests in the sandbox.")
    visibility: Visibility | None = strawberry.field(
        default=UNSET,
        description="A new listing's audience: PUBLIC (the default) or PRIVATE (SHARED: publish PRIVATE, "
        "then updateListing). A new version keeps its listing's.",
    )


def _requirements(value: PublishRequirementsInput | None) -> dict[str, Any]:
    return given_fields(value) if value else {}


def _upload_options(
    listing_id: strawberry.ID | None, requirements: PublishRequirementsInput | None, sha256: str | None
) -> dict[str, Any]:
    """The options every file upload (package, dataset, notebook) passes on to the service."""
    return {
        "listing_id": str(listing_id) if listing_id else None,
        "requirements": _requirements(requirements),
        "expected_digest": expected_upload_digest(sha256),
    }


@strawberry.type
class Query:
    @strawberry.field(description="A publication of yours, with every step's status and error log.")
    async def publication(self, info: strawberry.Info, id: strawberry.ID) -> Publication:
        return Publication.of(await publishing_of(info).get(info.context.actor, str(id)))

    @strawberry.field(description="Your most recent publications, newest first (limit: 1..200).")
    async def my_publications(self, info: strawberry.Info, limit: int = 20) -> list[Publication]:
        return [Publication.of(p) for p in await publishing_of(info).mine(info.context.actor, limit)]


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Publish a code package (zip or tar.gz with mlrepo.json or mlrepo.toml at its root)."
    )
    async def publish_package(
        self,
        info: strawberry.Info,
        file: Upload,
        listing_id: strawberry.ID | None = None,
        requirements: PublishRequirementsInput | None = None,
        sha256: str | None = None,
    ) -> Publication:
        view = await publishing_of(info).submit_package(
            info.context.actor,
            file.file,
            **_upload_options(listing_id, requirements, sha256),
        )
        return Publication.of(view)

    @strawberry.mutation(
        description="Publish a container image pushed to mlrepo's registry under your own prefix "
        "(imageRef: HOST:PORT/<your account name>/name:tag) or uploaded as a docker save tarball."
    )
    async def publish_image(
        self,
        info: strawberry.Info,
        manifest: JSON,
        image_ref: str | None = None,
        tarball: Upload | None = None,
        listing_id: strawberry.ID | None = None,
        requirements: PublishRequirementsInput | None = None,
    ) -> Publication:
        view = await publishing_of(info).submit_image(
            info.context.actor,
            manifest,
            image_ref=image_ref,
            tarball=tarball.file if tarball is not None else None,
            listing_id=str(listing_id) if listing_id else None,
            requirements=_requirements(requirements),
        )
        return Publication.of(view)

    @strawberry.mutation(
        description="Publish a dataset file or archive, described by a manifest of kind dataset."
    )
    async def publish_dataset(
        self,
        info: strawberry.Info,
        file: Upload,
        manifest: JSON,
        listing_id: strawberry.ID | None = None,
        requirements: PublishRequirementsInput | None = None,
        sha256: str | None = None,
    ) -> Publication:
        view = await publishing_of(info).submit_dataset(
            info.context.actor,
            file.file,
            manifest,
            **_upload_options(listing_id, requirements, sha256),
        )
        return Publication.of(view)

    @strawberry.mutation(
        description="Publish a Jupyter notebook (.ipynb) as it is. The manifest (kind notebook) may be "
        "given here, in the notebook's metadata.mlrepo, or both (this one wins); description and "
        "documentation default to the notebook's markdown."
    )
    async def publish_notebook(
        self,
        info: strawberry.Info,
        file: Upload,
        manifest: JSON | None = None,
        listing_id: strawberry.ID | None = None,
        requirements: PublishRequirementsInput | None = None,
        sha256: str | None = None,
    ) -> Publication:
        view = await publishing_of(info).submit_notebook(
            info.context.actor,
            file.file,
            manifest,
            **_upload_options(listing_id, requirements, sha256),
        )
        return Publication.of(view)
