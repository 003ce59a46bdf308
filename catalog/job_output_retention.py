"""Retention of finished jobs' per-record outputs (``job_output_retention_days``), run by the artifact gc.

A job's outputs are a JSON-lines blob (``executor.job_outputs``) that its row references by
``outputs_digest``. Without a limit the store keeps every output of every job ever run. Past the
retention, the garbage collection drops a final job's reference in one transaction: ``outputs_digest``
becomes NULL and ``outputs_expired_at`` says when, while status, summary (``result``), metrics and
``outputs_count`` stay. The blob itself is left to the same collection's unreferenced-blob sweep, which
reads the references *after* that transaction: a crash between the two leaves an unreferenced blob (the
next collection removes it), never a row that names a removed blob. A blob that another job still
references (same outputs, one content-addressed file) stays for that job.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, update

from catalog.enums import JobStatus
from infra.db import Database
from infra.settings import Settings
from infra.tables import Job

_FINAL_JOBS = tuple(status.value for status in JobStatus if status.is_final)


def outputs_expire_before(settings: Settings, now: datetime) -> datetime | None:
    """Outputs of jobs finished before this moment are past their retention; None: kept forever."""
    days = settings.job_output_retention_days
    return now - timedelta(days=days) if days > 0 else None


def expiring(before: datetime) -> ColumnElement[bool]:
    """The jobs whose outputs are past their retention: final, finished before ``before``, still held."""
    return and_(
        Job.outputs_digest.is_not(None),
        Job.status.in_(_FINAL_JOBS),
        Job.finished_at.is_not(None),
        Job.finished_at < before,
    )


def is_expiring(status: str, finished_at: datetime | None, before: datetime | None) -> bool:
    """``expiring`` for a row already read (the dry run judges rows in the gc's snapshot)."""
    if before is None or finished_at is None or status not in _FINAL_JOBS:
        return False
    if finished_at.tzinfo is None:  # SQLite gives back naive UTC
        before = before.replace(tzinfo=None)
    return finished_at < before


async def expire_job_outputs(db: Database, before: datetime | None, now: datetime) -> int:
    """Drop the outputs references of the jobs past their retention, in one transaction; how many."""
    if before is None:
        return 0
    async with db.session() as session:
        result = await session.execute(
            update(Job)
            .where(expiring(before))
            .values(outputs_digest=None, outputs_expired_at=now)
            .execution_options(synchronize_session=False)
        )
    return result.rowcount or 0
