"""Claiming a job: the atomic QUEUED → RUNNING move that makes one run its holder, and the limit of
running jobs per account that leaves a job QUEUED for later.

Separate because the claim is the fencing token (``infra.fencing``) every later write of the run is
checked against (``claim_of``); the run loop, the writes and the outcome only use it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from catalog.enums import JobStatus
from executor.job_base import JobServiceParts
from executor.job_views import JobView
from infra.fencing import Claim
from infra.tables import Account, Job, utcnow


class JobDeferred(Exception):
    """Not claimed: the job's account runs ``job_max_running_per_account`` jobs already."""


class JobClaims(JobServiceParts):
    async def claim(self, job_id: str) -> Job | None:
        """QUEUED → RUNNING in one transaction. The move is a conditional UPDATE (``WHERE status =
        'queued'``): on SQLite a read takes no lock, so two deliveries could both read QUEUED, and only
        the row count tells which of them won. Raises ``JobDeferred``, leaving the job QUEUED, when its
        account runs ``job_max_running_per_account`` jobs already."""
        async with self.db.session() as session:
            row = await session.get(Job, job_id, with_for_update=not self.db.is_sqlite)
            if row is None or row.status != JobStatus.QUEUED:
                return None
            attempts, now = row.attempts or 0, utcnow()
            gave_up = attempts >= self.settings.job_max_attempts
            if not gave_up and await self._account_at_limit(session, row):
                raise JobDeferred(job_id)
            values: dict[str, Any] = (
                {
                    "status": JobStatus.FAILED.value,
                    "error": f"the job did not finish in {attempts} attempts; giving up",
                    "finished_at": now,
                }
                if gave_up
                else {
                    "status": JobStatus.RUNNING.value,
                    "attempts": attempts + 1,
                    "started_at": now,
                    "heartbeat_at": now,
                }
            )
            result = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.QUEUED.value)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount == 0 or gave_up:
                return None  # another delivery claimed it first (or it is out of attempts)
            await session.refresh(row)
            claimed = row
        await self._publish(JobView.of(claimed))
        return claimed

    async def _account_at_limit(self, session: Any, row: Job) -> bool:
        """Whether the job's account runs its most jobs already. A pipeline's step job does not count
        (nor wait): it runs in its pipeline job's place."""
        limit = self.settings.job_max_running_per_account
        if not limit or _is_step_job(row.inputs):
            return False
        # Serializes the claims of one account until this transaction ends: the write locks its row
        # (PostgreSQL) or the database (SQLite), so two claims cannot both count a free place.
        await session.execute(
            update(Account).where(Account.id == row.owner_id).values(quota_cpu=Account.quota_cpu)
        )
        running = await session.scalars(
            select(Job.inputs).where(Job.owner_id == row.owner_id, Job.status == JobStatus.RUNNING.value)
        )
        return sum(not _is_step_job(inputs) for inputs in running) >= limit


def claim_of(row: Job) -> Claim:
    """The claim of the run that holds ``row``: its ``attempts`` is what that run's claim wrote."""
    return Claim(Job, row.id, row.attempts)


def _is_step_job(inputs: dict[str, Any] | None) -> bool:
    return bool((inputs or {}).get("pipeline_job_id"))
