"""The whole-job deadline (``MLREPO_JOB_MAX_DURATION_S``) on the real database (SQLite and PostgreSQL) and
the real bwrap sandbox: a model that answers one record a call and then hangs no longer holds a worker for
records x (timeout + 2 s); the job ends TIMED_OUT with its own error code, keeping nothing of the run."""

from __future__ import annotations

import time

from executor_support import job_service, outcome, publish_model
from sqlalchemy import func, select

from catalog.enums import JobStatus
from executor.job_outcomes import JOB_DEADLINE_EXCEEDED
from infra.settings import Settings
from infra.tables import UsageEvent

# Answers the first record it is given, then hangs until the call's timeout kills it: every call makes a
# little progress, so batching never gives up, and 8 records take 8 calls of timeout + 2 s each.
ONE_THEN_HANG = """
import json, sys, time
record = json.loads(sys.stdin.readline())
print(json.dumps({"id": record["id"], "output": {"label": "positive", "confidence": 0.5}}), flush=True)
time.sleep(60)
"""
HANG = "import time\ntime.sleep(60)\n"


async def test_a_job_past_its_deadline_ends_timed_out_with_its_code_and_no_outputs(
    settings: Settings, bwrap_runtime, catalog, people
) -> None:
    job_settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    async with job_service(job_settings, catalog, job_max_duration_s=3.0) as jobs:
        published = await publish_model(job_settings, catalog, people["producer"], ONE_THEN_HANG, timeout_s=1)
        started = time.monotonic()
        view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["r"] * 8)
        final = await outcome(jobs, people["alice"], view.id)
        took = time.monotonic() - started
        page = await jobs.outputs(people["alice"], view.id, 10)
        assert not jobs.queue.tasks  # the run, and its sandbox, are over
    assert final.status == JobStatus.TIMED_OUT, (final.status, final.error)
    assert final.error_code == JOB_DEADLINE_EXCEEDED
    assert "deadline of 3 s (MLREPO_JOB_MAX_DURATION_S)" in final.error
    # As for a cancelled job: no outputs referenced (none half-kept), no usage counted.
    assert final.outputs_digest is None and final.outputs_count is None
    assert page.records == [] and page.total == 0
    async with catalog.db.session() as session:
        uses = await session.scalar(select(func.count()).where(UsageEvent.listing_id == published.listing_id))
    assert uses == 0
    print(f"deadline 3 s: the job was final {took:.1f} s after it was submitted")


async def test_a_job_whose_calls_time_out_is_timed_out_without_the_deadlines_code(
    settings: Settings, bwrap_runtime, catalog, people
) -> None:
    job_settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    async with job_service(job_settings, catalog) as jobs:
        published = await publish_model(job_settings, catalog, people["producer"], HANG, timeout_s=1)
        view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["r"])
        final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.TIMED_OUT and final.error_code is None
    # The listing's 1 s limit, not the 3 s the call was given with the sandbox's start allowance.
    assert final.error.startswith(
        "timed out after the listing's limit of 1 s per call (plus 2 s allowed for the sandbox to start)"
    )
