"""ORM tables: the single source of truth for every fact mlrepo keeps.

The search index is a projection of ``listings`` (rebuildable with ``mlrepo reindex``); Redis holds only
queued work. Enumerated values are stored as plain strings so both SQLite and PostgreSQL read them the
same way; their vocabularies live in ``catalog.enums``-style constants of the owning package.
"""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def account_name_key(name: str) -> str:
    """What makes two account names the same name: NFKC-normalised and case-folded, so "alice", "ALICE"
    and a full-width "alice" are one. A producer's name shows on every listing; names told apart only
    by case were an impersonation waiting to happen."""
    return unicodedata.normalize("NFKC", name).casefold()


def _name_key_of_row(context: Any) -> str:
    return account_name_key(context.get_current_parameters()["name"])


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # ``account_name_key(name)``, filled in from the name on insert: unique, so two registrations racing
    # for "alice" and "ALICE" cannot both win. Names are ASCII, so the key is never longer than the name.
    name_key: Mapped[str] = mapped_column(String(100), unique=True, default=_name_key_of_row)
    email: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # producer | requester | admin
    quota_cpu: Mapped[float] = mapped_column(Float, default=4.0)
    quota_memory_mb: Mapped[int] = mapped_column(Integer, default=8192)
    quota_gpu: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """Tokens are stored only as SHA-256 hashes: a leaked database gives no usable credential."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="default")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Listing(Base):
    __tablename__ = "listings"
    __table_args__ = (
        UniqueConstraint("owner_id", "name", name="uq_listing_owner_name"),
        Index("ix_listings_kind_category", "kind", "category"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16))  # algorithm | model | dataset | notebook | pipeline
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(100), index=True)
    subcategories: Mapped[list[Any]] = mapped_column(JSON, default=list)
    description: Mapped[str] = mapped_column(Text, default="")
    documentation: Mapped[str] = mapped_column(Text, default="")
    framework: Mapped[str | None] = mapped_column(String(100))
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    license: Mapped[str | None] = mapped_column(String(100))

    input_format: Mapped[str | None] = mapped_column(String(64))
    input_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    output_format: Mapped[str | None] = mapped_column(String(64))
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    # Suggested hardware {cpu, memory_mb, gpu}; training_resources only for algorithms.
    resources: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    training_resources: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    timeout_s: Mapped[float | None] = mapped_column(Float)  # producer's max time per scoring call

    accuracy: Mapped[float | None] = mapped_column(Float)
    accuracy_metric: Mapped[str | None] = mapped_column(String(64))
    accuracy_dataset: Mapped[str | None] = mapped_column(String(200))
    latency_p50_ms: Mapped[float | None] = mapped_column(Float)
    latency_p95_ms: Mapped[float | None] = mapped_column(Float)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)  # datasets pass 2 GiB
    storage_location: Mapped[str | None] = mapped_column(String(500))
    examples: Mapped[list[Any]] = mapped_column(JSON, default=list)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    owner_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"), index=True)
    producer_name: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(50), default="1.0.0")
    visibility: Mapped[str] = mapped_column(String(16), default="public")  # public | private | shared
    verification_status: Mapped[str] = mapped_column(String(16), default="unverified")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended

    # Usage signals: counts come from usage events; relative_usage is derived per category.
    usage_count: Mapped[int] = mapped_column(Integer, default=0)
    success_count: Mapped[int] = mapped_column(Integer, default=0)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    relative_usage: Mapped[float] = mapped_column(Float, default=0.0)

    # The embedding lives with the row so index rebuilds need no re-encoding and stay atomic with writes.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_model: Mapped[str | None] = mapped_column(String(200))

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Indexed: processes holding a search index sync the rows changed since their last look by it.
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, index=True
    )


class ListingShare(Base):
    __tablename__ = "listing_shares"

    listing_id: Mapped[str] = mapped_column(ForeignKey("listings.id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)


class ListingVersion(Base):
    """Immutable history: each publish adds a row pointing at a content-addressed artifact."""

    __tablename__ = "listing_versions"
    __table_args__ = (UniqueConstraint("listing_id", "version", name="uq_listing_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    listing_id: Mapped[str] = mapped_column(ForeignKey("listings.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(50))
    # package | image | dataset | notebook | metadata
    artifact_kind: Mapped[str | None] = mapped_column(String(16))
    artifact_digest: Mapped[str | None] = mapped_column(String(80))
    image_ref: Mapped[str | None] = mapped_column(String(300))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    reference_signatures: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    notes: Mapped[str] = mapped_column(Text, default="")
    # The publication that wrote this version (None for other writers: training, the listing API). A
    # re-run of that publication (its worker died before recording the outcome) adopts the version
    # rather than writing a second one; unique, so one publication can never write two.
    publication_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("listing_id", "account_id", name="uq_review_author"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    listing_id: Mapped[str] = mapped_column(ForeignKey("listings.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    rating: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageEvent(Base):
    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    listing_id: Mapped[str] = mapped_column(ForeignKey("listings.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # view | inference | training | pipeline_step
    success: Mapped[bool | None] = mapped_column(Boolean)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    search_id: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class SearchEvent(Base):
    """Every search, so that unmet demand (no results, or no selection) can be found and grouped."""

    __tablename__ = "search_events"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    account_id: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(100), index=True)  # given or inferred
    facets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result_count: Mapped[int] = mapped_column(Integer, default=0)
    top_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    selected_listing_id: Mapped[str | None] = mapped_column(String(32))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class SearchSnapshot(Base):
    """One chunk of the ranked list behind a search with more than one page (point-in-time paging).

    Later pages read it instead of searching again, so what changed in between (listings published,
    edited, boosted) cannot shift them. Every API process reads the same rows; a row lives until
    ``expires_at`` (``search_snapshot_ttl_s``) and is then purged. ``seq`` 0 is written with the first
    page; a facet-only search past its first chunk appends the next one (``catalog.search_snapshots``).
    """

    __tablename__ = "search_snapshots"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(32))  # whose search: nobody else may page it
    fingerprint: Mapped[str] = mapped_column(String(16))  # the request it answers (facets, text, sort)
    secret: Mapped[str] = mapped_column(String(64))  # signs its cursors: a changed position is refused
    total: Mapped[int] = mapped_column(Integer)
    browse_order: Mapped[str | None] = mapped_column(String(16))  # set: more chunks may be appended
    exhausted: Mapped[bool] = mapped_column(Boolean, default=True)  # nothing ranked beyond this chunk
    interpretation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # zlib JSON [[id, score, [[name, value, detail]]]], or unexplained results packed (ranking.pending)
    entries: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class DemandSubscription(Base):
    __tablename__ = "demand_subscriptions"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    category: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The producer's inbox shows demand newer than this; null means "since the subscription began".
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Publication(Base):
    """A producer's upload moving through package → test → verify → publish → list."""

    __tablename__ = "publications"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    listing_id: Mapped[str | None] = mapped_column(String(32), index=True)
    source_kind: Mapped[str] = mapped_column(String(16))  # package | image | dataset
    status: Mapped[str] = mapped_column(String(16), default="queued")
    steps: Mapped[list[Any]] = mapped_column(JSON, default=list)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    requirements: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    upload_path: Mapped[str | None] = mapped_column(String(500))
    artifact_digest: Mapped[str | None] = mapped_column(String(80))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    # Refreshed by the worker running it (``infra.heartbeat``): a RUNNING publication without a recent one
    # lost its worker. Not ``updated_at``, which the producer reads as when the publication last changed.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Counted up by each claim of a run: the run's fencing token (``infra.fencing``), as ``jobs.attempts``.
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Job(Base):
    """An inference or training run; the database row is the truth, the queue only carries its id."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    listing_id: Mapped[str | None] = mapped_column(String(32), index=True)
    pipeline_id: Mapped[str | None] = mapped_column(String(32), index=True)
    task: Mapped[str] = mapped_column(String(16))  # inference | training
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    resource_class: Mapped[str] = mapped_column(String(16), default="cpu")
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a small summary, never per-record data
    # Per-record outputs: a JSON-lines artifact, referenced only by the transaction that makes the job final.
    outputs_digest: Mapped[str | None] = mapped_column(String(80))
    outputs_count: Mapped[int | None] = mapped_column(Integer)
    # Set when retention dropped the outputs (outputs_digest is then NULL; outputs_count stays).
    outputs_expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    logs: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    # Machine-readable cause when the service itself ended the job
    # (``executor.job_outcomes.JOB_DEADLINE_EXCEEDED``).
    error_code: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    listing_id: Mapped[str | None] = mapped_column(String(32))  # set once published as a listing
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class PipelineStep(Base):
    __tablename__ = "pipeline_steps"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    pipeline_id: Mapped[str] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    # No foreign key, like the trained model's id below: a listing its owner deletes leaves the step in
    # place, pointing at the deleted id, so the pipeline shows what it lost (``catalog.pipelines.store``).
    listing_id: Mapped[str] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16), default="step")  # step | conditioning
    training_data_listing_id: Mapped[str | None] = mapped_column(String(32))
    trained_listing_id: Mapped[str | None] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
