"""The read shapes of a listing: ``ListingView`` for callers, ``IndexedListing`` for the search index.

Both are built from the database row (the truth); the embedding stays in the row and the projection,
never in what callers receive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Row, select

from catalog.clock import as_utc
from infra.tables import Listing
from search.documents import indexed_documentation, listing_text
from search.types import IndexedListing


@dataclass(frozen=True, slots=True)
class ListingView:
    """What callers read about a listing; built by ``of`` from an ORM row or a plain row of
    ``VIEW_COLUMNS``."""

    id: str
    kind: str
    name: str
    category: str
    subcategories: list[str]
    description: str
    documentation: str
    framework: str | None
    tags: list[str]
    license: str | None
    input_format: str | None
    input_schema: dict[str, Any] | None
    output_format: str | None
    output_schema: dict[str, Any] | None
    resources: dict[str, Any] | None
    training_resources: dict[str, Any] | None
    timeout_s: float | None
    accuracy: float | None
    accuracy_metric: str | None
    accuracy_dataset: str | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    size_bytes: int | None
    storage_location: str | None
    examples: list[Any]
    extra: dict[str, Any]
    owner_id: str | None
    producer_name: str | None
    version: str
    visibility: str
    verification_status: str
    status: str
    usage_count: int
    success_count: int
    failure_count: int
    relative_usage: float
    created_at: datetime
    updated_at: datetime
    shared_with: list[str] = field(default_factory=list)

    @property
    def success_rate(self) -> float | None:
        runs = self.success_count + self.failure_count
        return self.success_count / runs if runs else None

    @classmethod
    def of(cls, row: Listing | Row[Any], shared_with: Iterable[str] = ()) -> ListingView:
        return cls(
            id=row.id,
            kind=row.kind,
            name=row.name,
            category=row.category,
            subcategories=list(row.subcategories or []),
            description=row.description or "",
            documentation=row.documentation or "",
            framework=row.framework,
            tags=list(row.tags or []),
            license=row.license,
            input_format=row.input_format,
            input_schema=row.input_schema,
            output_format=row.output_format,
            output_schema=row.output_schema,
            resources=row.resources,
            training_resources=row.training_resources,
            timeout_s=row.timeout_s,
            accuracy=row.accuracy,
            accuracy_metric=row.accuracy_metric,
            accuracy_dataset=row.accuracy_dataset,
            latency_p50_ms=row.latency_p50_ms,
            latency_p95_ms=row.latency_p95_ms,
            size_bytes=row.size_bytes,
            storage_location=row.storage_location,
            examples=list(row.examples or []),
            extra=dict(row.extra or {}),
            owner_id=row.owner_id,
            producer_name=row.producer_name,
            version=row.version,
            visibility=row.visibility,
            verification_status=row.verification_status,
            status=row.status,
            usage_count=row.usage_count or 0,
            success_count=row.success_count or 0,
            failure_count=row.failure_count or 0,
            relative_usage=row.relative_usage or 0.0,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
            shared_with=sorted(shared_with),
        )


# The columns a view is built from: all but the embedding (1.5 KB a row) and the model it came from.
VIEW_COLUMNS = tuple(
    column for column in Listing.__table__.columns if column.key not in ("embedding", "embedding_model")
)
# Built once: coercing ~50 columns into a new SELECT took ~0.2 ms of every search page's hydration.
VIEW_SELECT = select(*VIEW_COLUMNS)


def embedding_text(row: Listing) -> str:
    """The text a listing is embedded as (search owns the recipe, so every path embeds alike)."""
    return listing_text(
        row.name, row.category, row.subcategories or (), row.tags or (), row.description or ""
    )


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def vector_of(blob: bytes | None) -> np.ndarray | None:
    return np.frombuffer(blob, dtype=np.float32) if blob else None


def project(
    row: Listing, shared_with: Iterable[str] = (), vector: np.ndarray | None = None
) -> IndexedListing:
    """The index projection of a row; ``vector`` overrides the stored embedding (fresh writes)."""
    resources = row.resources or {}
    return IndexedListing(
        id=row.id,
        kind=row.kind,
        name=row.name,
        category=row.category,
        description=row.description or "",
        subcategories=tuple(row.subcategories or ()),
        tags=tuple(row.tags or ()),
        framework=row.framework,
        input_format=row.input_format,
        output_format=row.output_format,
        visibility=row.visibility,
        owner_id=row.owner_id,
        shared_with=tuple(sorted(shared_with)),
        status=row.status,
        verification_status=row.verification_status,
        accuracy=row.accuracy,
        latency_p50_ms=row.latency_p50_ms,
        cpu=resources.get("cpu"),
        memory_mb=resources.get("memory_mb"),
        gpu=resources.get("gpu"),
        relative_usage=row.relative_usage or 0.0,
        created_at=as_utc(row.created_at).timestamp() if row.created_at else 0.0,
        documentation=indexed_documentation(row.documentation or ""),
        embedding=vector if vector is not None else vector_of(row.embedding),
    )
