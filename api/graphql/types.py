"""GraphQL output types shared by every area (a pipeline step or a job shows its ``Listing`` too).

Each type maps one catalog read shape (``ListingView``, ``AccountInfo``, ...) field by field in a
``from_...`` constructor; the only resolvers here are the ones that need another service call
(reviews and version history of a listing): they go through the request's loaders (``api.loaders``),
which read a whole page's at once under the catalog's access rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import strawberry
from strawberry.scalars import JSON

from catalog.enums import ListingKind as ListingKindValue
from catalog.enums import Role as RoleValue
from catalog.enums import SortOrder as SortOrderValue
from catalog.enums import VerificationStatus as VerificationStatusValue
from catalog.enums import Visibility as VisibilityValue

if TYPE_CHECKING:
    from catalog.accounts import AccountInfo
    from catalog.listing_view import ListingView
    from catalog.reviews import ReviewView
    from infra.tables import ListingVersion as ListingVersionRow

ListingKind = strawberry.enum(ListingKindValue, name="ListingKind")
Visibility = strawberry.enum(VisibilityValue, name="Visibility")
VerificationStatus = strawberry.enum(VerificationStatusValue, name="VerificationStatus")
Role = strawberry.enum(RoleValue, name="Role")
SortOrder = strawberry.enum(SortOrderValue, name="SortOrder")


@strawberry.type(description="Hardware: suggested for a listing, or what a requester has.")
class Resources:
    cpu: float | None
    memory_mb: int | None
    gpu: int | None

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> Resources | None:
        if not value:
            return None
        return cls(cpu=value.get("cpu"), memory_mb=value.get("memory_mb"), gpu=value.get("gpu"))


@strawberry.input(
    description="Hardware: cores, memory in MiB, GPU devices (suggested needs, or what one has)."
)
class ResourcesInput:
    cpu: float | None = None
    memory_mb: int | None = None
    gpu: int | None = None


@strawberry.type(description="Measured or declared accuracy: the value (0..1), its metric and dataset.")
class Accuracy:
    value: float | None
    metric: str | None
    dataset: str | None


@strawberry.type
class Producer:
    id: strawberry.ID | None
    name: str | None


@strawberry.type
class Review:
    id: strawberry.ID
    listing_id: strawberry.ID
    author: str | None
    rating: int
    text: str
    created_at: datetime

    @classmethod
    def from_view(cls, view: ReviewView) -> Review:
        return cls(
            id=strawberry.ID(view.id),
            listing_id=strawberry.ID(view.listing_id),
            author=view.author_name,
            rating=view.rating,
            text=view.text,
            created_at=view.created_at,
        )


@strawberry.type
class RatingSummary:
    average: float | None
    count: int


@strawberry.type(description="One entry of a listing's immutable version history.")
class ListingVersion:
    id: strawberry.ID
    version: str
    artifact_kind: str | None
    artifact_digest: str | None
    image_ref: str | None
    encrypted: bool
    notes: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: ListingVersionRow) -> ListingVersion:
        return cls(
            id=strawberry.ID(row.id),
            version=row.version,
            artifact_kind=row.artifact_kind,
            artifact_digest=row.artifact_digest,
            image_ref=row.image_ref,
            encrypted=bool(row.encrypted),
            notes=row.notes or "",
            created_at=row.created_at,
        )


@strawberry.type(description="A catalog entry: an algorithm, model, dataset, notebook or pipeline.")
class Listing:
    id: strawberry.ID
    kind: ListingKind
    name: str
    category: str
    subcategories: list[str]
    description: str
    documentation: str
    framework: str | None
    tags: list[str]
    license: str | None
    input_format: str | None
    input_schema: JSON | None
    output_format: str | None
    output_schema: JSON | None
    resources: Resources | None = strawberry.field(description="Suggested hardware to run it.")
    training_resources: Resources | None = strawberry.field(description="Suggested hardware to train it.")
    timeout_s: float | None = strawberry.field(description="The producer's maximum time per scoring call.")
    accuracy: Accuracy | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    size_bytes: float | None = strawberry.field(
        description="Size of a dataset (bytes; Float: may pass 2^31)."
    )
    storage_location: str | None
    examples: JSON
    extra: JSON = strawberry.field(description="Fields from imported catalogs that mlrepo has no column for.")
    producer: Producer
    version: str
    visibility: Visibility
    shared_with_ids: strawberry.Private[list[str]]
    verification_status: VerificationStatus
    status: str
    usage_count: int
    success_rate: float | None
    relative_usage: float = strawberry.field(description="Share of its category's usage (0..1), from events.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_view(cls, view: ListingView) -> Listing:
        accuracy = None
        if view.accuracy is not None or view.accuracy_metric or view.accuracy_dataset:
            accuracy = Accuracy(
                value=view.accuracy, metric=view.accuracy_metric, dataset=view.accuracy_dataset
            )
        return cls(
            id=strawberry.ID(view.id),
            kind=ListingKindValue(view.kind),
            name=view.name,
            category=view.category,
            subcategories=list(view.subcategories),
            description=view.description,
            documentation=view.documentation,
            framework=view.framework,
            tags=list(view.tags),
            license=view.license,
            input_format=view.input_format,
            input_schema=view.input_schema,
            output_format=view.output_format,
            output_schema=view.output_schema,
            resources=Resources.from_dict(view.resources),
            training_resources=Resources.from_dict(view.training_resources),
            timeout_s=view.timeout_s,
            accuracy=accuracy,
            latency_p50_ms=view.latency_p50_ms,
            latency_p95_ms=view.latency_p95_ms,
            size_bytes=float(view.size_bytes) if view.size_bytes is not None else None,
            storage_location=view.storage_location,
            examples=list(view.examples),
            extra=dict(view.extra),
            producer=Producer(
                id=strawberry.ID(view.owner_id) if view.owner_id else None, name=view.producer_name
            ),
            version=view.version,
            visibility=VisibilityValue(view.visibility),
            shared_with_ids=list(view.shared_with),
            verification_status=VerificationStatusValue(view.verification_status),
            status=view.status,
            usage_count=view.usage_count,
            success_rate=view.success_rate,
            relative_usage=view.relative_usage,
            created_at=view.created_at,
            updated_at=view.updated_at,
        )

    @strawberry.field(description="Account ids it is shared with; only its owner and admins see them.")
    def shared_with(self, info: strawberry.Info) -> list[str]:
        actor = info.context.actor
        if actor.is_admin or (actor.account_id is not None and actor.account_id == self.producer.id):
            return self.shared_with_ids
        return []

    @strawberry.field(description="Reviews, newest first (first: 1..100).")
    async def reviews(self, info: strawberry.Info, first: int = 20, offset: int = 0) -> list[Review]:
        views = await info.context.loaders.review_page(str(self.id), first, offset)
        return [Review.from_view(view) for view in views]

    @strawberry.field(description="Average rating (1..5) and number of reviews.")
    async def rating(self, info: strawberry.Info) -> RatingSummary:
        summary = await info.context.loaders.rating.load(str(self.id))
        return RatingSummary(average=summary.average, count=summary.count)

    @strawberry.field(description="The version history, oldest first.")
    async def versions(self, info: strawberry.Info) -> list[ListingVersion]:
        rows = await info.context.loaders.versions.load(str(self.id))
        return [ListingVersion.from_row(row) for row in rows]


@strawberry.type(description="Cursor pagination: pass endCursor as `after` for the next page.")
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Quota:
    cpu: float
    memory_mb: int
    gpu: int


@strawberry.type
class Account:
    id: strawberry.ID
    name: str
    role: Role
    email: str | None
    quota: Quota
    created_at: datetime

    @classmethod
    def from_info(cls, info: AccountInfo) -> Account:
        return cls(
            id=strawberry.ID(info.id),
            name=info.name,
            role=RoleValue(info.role),
            email=info.email,
            quota=Quota(cpu=info.quota_cpu, memory_mb=info.quota_memory_mb, gpu=info.quota_gpu),
            created_at=info.created_at,
        )
