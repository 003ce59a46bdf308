"""What a requester sees of a job: ``JobView`` (one job, without its inputs) and ``JobPage`` (a page of them).

Separate from ``executor.jobs`` because the API, the pipeline runs and the tests read views without
needing the service that runs jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from catalog.enums import JobStatus
from infra.tables import Job


@dataclass(frozen=True)
class JobPage:
    items: list[JobView]
    end_cursor: str | None
    has_next_page: bool
    cursors: list[str]  # cursors[i] resumes after items[i] (the edges' cursors)


@dataclass(frozen=True)
class JobView:
    id: str
    owner_id: str
    listing_id: str | None
    pipeline_id: str | None
    task: str
    status: str
    resource_class: str
    resources: dict[str, Any]
    progress: dict[str, Any]
    metrics: dict[str, Any]
    result: dict[str, Any] | None  # a small summary; per-record outputs are in the artifact store
    outputs_digest: str | None
    outputs_count: int | None
    outputs_expired_at: datetime | None  # retention dropped the outputs (``catalog.job_output_retention``)
    error: str | None
    error_code: str | None  # why the service ended the job (JOB_DEADLINE_EXCEEDED), else None
    logs: str
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: Job) -> JobView:
        return cls(
            id=row.id,
            owner_id=row.owner_id,
            listing_id=row.listing_id,
            pipeline_id=row.pipeline_id,
            task=row.task,
            status=row.status,
            resource_class=row.resource_class,
            resources=dict(row.resources or {}),
            progress=dict(row.progress or {}),
            metrics=dict(row.metrics or {}),
            result=row.result,
            outputs_digest=row.outputs_digest,
            outputs_count=row.outputs_count,
            outputs_expired_at=row.outputs_expired_at,
            error=row.error,
            error_code=row.error_code,
            logs=row.logs or "",
            attempts=row.attempts or 0,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )

    @property
    def is_final(self) -> bool:
        return JobStatus(self.status).is_final
