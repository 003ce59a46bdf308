"""Retention of finished jobs' per-record outputs (``job_output_retention_days``), run by the artifact gc.

A job's outputs are a JSON-lines blob (``executor.job_outputs``) that its row references by
``outputs_digest``. Without a limit the store keeps every output of every job ever run. Past the
retention, the garbage collection drops a final job's reference: ``outputs_digest`` becomes NULL and
``outputs_expired_at`` says when, while status, summary (``result``), metrics and ``outputs_count`` stay.
The blob itself is left to the same collection's unreferenced-blob sweep, which reads the references
*after* those transactions: a crash between the two leaves an unreferenced blob (the next collection
removes it), never a row that names a removed blob. A blob that another job still references (same
outputs, one content-addressed file) stays for that job.

The references are dropped at most ``EXPIRE_BATCH_ROWS`` jobs per transaction: the first collection after
retention is switched on (or after a long stop) may find months of jobs, and one UPDATE of them all would
hold its row locks and write its whole WAL/journal in one go, blocking job writers (SQLite: every
writer) for as long. Each batch is whole on its own; a crash between batches leaves the rest for the
next collection.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, select, update

from catalog.enums import JobStatus
from infra.db import Database
from infra.settings import Settings
from infra.tables import Job

_FINAL_JOBS = tuple(status.value for status in JobStatus if status.is_final)
# A job's ``inputs`` key naming a blob made for that job alone, kept like its outputs: a pipeline step's
# training examples as the steps in front of it handed them over (``executor.training_feed``). The job
# reads it while it can still run; after, it is the record of what the model learnt from, kept for
# the retention and then left to the sweep (the job's row keeps its count and the steps it went through).
FED_EXAMPLES_KEY = "fed_examples_digest"
# Jobs whose outputs references one transaction drops: each transaction short, yet few round trips.
EXPIRE_BATCH_ROWS = 1000


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


async def expire_job_outputs(
    db: Database, before: datetime | None, now: datetime, *, batch_rows: int = EXPIRE_BATCH_ROWS
) -> int:
    """Drop the outputs references of the jobs past their retention; how many. Walks the jobs in primary
    key order, ``batch_rows`` a transaction: it reads them, then expires those of them past retention.
    (A query for the expiring ones alone would rescan from the start for each batch: no index serves
    ``finished_at``, and SQLite picks the status index then sorts.) A job another collection expired
    meanwhile is not expired twice: the UPDATE re-checks ``expiring``."""
    if before is None:
        return 0
    expired, after = 0, ""
    while True:
        async with db.session() as session:
            page = (
                await session.execute(
                    select(Job.id, Job.status, Job.finished_at, Job.outputs_digest.is_not(None))
                    .where(Job.id > after)
                    .order_by(Job.id)
                    .limit(batch_rows)
                )
            ).all()
            ids = [row[0] for row in page if row[3] and is_expiring(row[1], row[2], before)]
            if ids:
                result = await session.execute(
                    update(Job)
                    .where(Job.id.in_(ids), expiring(before))
                    .values(outputs_digest=None, outputs_expired_at=now)
                    .execution_options(synchronize_session=False)
                )
                expired += result.rowcount or 0
        if len(page) < batch_rows:
            return expired
        after = page[-1][0]
