"""Controlled vocabularies of the catalog, stored as their lower-case string values."""

from __future__ import annotations

from enum import StrEnum


class ListingKind(StrEnum):
    ALGORITHM = "algorithm"
    MODEL = "model"
    DATASET = "dataset"
    NOTEBOOK = "notebook"
    PIPELINE = "pipeline"


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    SHARED = "shared"


class VerificationStatus(StrEnum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    FAILED = "failed"
    SUSPENDED = "suspended"


class Role(StrEnum):
    PRODUCER = "producer"
    REQUESTER = "requester"
    ADMIN = "admin"


class SortOrder(StrEnum):
    RELEVANCE = "relevance"
    USAGE = "usage"
    ACCURACY = "accuracy"
    LATENCY = "latency"
    NEWEST = "newest"


class UsageKind(StrEnum):
    VIEW = "view"
    INFERENCE = "inference"
    TRAINING = "training"
    PIPELINE_STEP = "pipeline_step"


class JobTask(StrEnum):
    INFERENCE = "inference"
    TRAINING = "training"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)
