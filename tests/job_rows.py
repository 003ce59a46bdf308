"""Job rows as the executor leaves them, for tests of what happens to a job afterwards (retention, gc).

Imported as ``tests.job_rows`` by several areas (catalog's gc, the executor's API and worker)."""

from __future__ import annotations

from datetime import timedelta

from infra.tables import Job, utcnow


def finished_job(owner_id: str | None, outputs_digest: str, days_ago: float) -> Job:
    """A succeeded one-record inference job, finished ``days_ago`` days ago, whose outputs are stored."""
    return Job(
        owner_id=owner_id,
        task="inference",
        status="succeeded",
        result={"succeeded": 1, "failed": 0},
        metrics={"records": 1},
        outputs_digest=outputs_digest,
        outputs_count=1,
        finished_at=utcnow() - timedelta(days=days_ago),
    )
