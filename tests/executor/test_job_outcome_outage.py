"""A job whose run succeeded keeps its outcome when PostgreSQL restarts just as that outcome is written.

The outage is real: the test's own cluster is shut down (its clients' connections cut, new ones
refused) right after the run stored its outputs, and started again a few seconds later."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from executor_support import publish_model

from catalog.enums import JobStatus
from executor.job_outputs import OutputsWriter
from executor.jobs import JobService
from infra.db import is_unreachable
from infra.settings import Settings
from infra.tables import Job, Listing
from tests.db_outage import DOWN_S, DatabaseOutage, migrated_database

if TYPE_CHECKING:
    from tests.conftest import PostgresCluster

MODEL = """
import json, sys
for line in sys.stdin:
    record = json.loads(line)
    print(json.dumps({"id": record["id"], "output": {"label": "positive", "confidence": 0.75}}))
"""


@pytest.fixture
def database_url(private_postgres_cluster: PostgresCluster) -> str:
    """Every fixture of this module (settings, catalog, people) works on the cluster the test restarts."""
    return migrated_database(private_postgres_cluster)


class DatabaseRestartsAfterTheRun(JobService):
    """The real service; the database server goes down the moment the first run's outputs are stored
    (what remains is writing the outcome) and is back ``DOWN_S`` later, or once ``back_when()``."""

    def __init__(
        self,
        settings: Settings,
        catalog,
        cluster: PostgresCluster,
        back_when: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(settings, catalog)
        self.outage = DatabaseOutage(cluster, back_when)

    async def keep_written_outputs(self, row: Job, writer: OutputsWriter) -> None:
        await super().keep_written_outputs(row, writer)
        await self.outage.begin()


async def test_a_successful_run_keeps_its_outcome_when_the_database_restarts_as_it_is_written(
    settings: Settings, catalog, people, private_postgres_cluster: PostgresCluster, bwrap_runtime
) -> None:
    """The result write met the outage and failed the run: the job was marked FAILED (or, that write
    failing too, left RUNNING to be run again), though its sandbox had succeeded and its outputs were
    stored. The write is now retried while the database is unreachable, for ``job_final_write_retry_s``."""
    job_settings = settings.model_copy(update={"runtime": "bwrap", "job_final_write_retry_s": 60.0})
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)
    jobs = DatabaseRestartsAfterTheRun(job_settings, catalog, private_postgres_cluster)
    try:
        view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["a", "b"])
        [run] = list(jobs.queue.tasks)
        outcome = await asyncio.wait_for(run, 120)
        written_after = time.monotonic() - (jobs.outage.began or 0)
    finally:
        await jobs.outage.over()
        await jobs.queue.close()
    print(f"outcome written {written_after:.1f} s after the database went down for {DOWN_S} s")
    assert outcome == JobStatus.SUCCEEDED
    final = await jobs.get(people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert final.result is not None and final.metrics["records"] == 2
    assert [r["output"]["label"] for r in await jobs.all_outputs(final)] == ["positive", "positive"]
    async with catalog.db.session() as session:  # its run counted once, in the retried transaction
        assert (await session.get(Listing, published.listing_id)).usage_count == 1
    assert written_after >= DOWN_S


async def test_a_run_the_database_left_unable_to_record_is_run_again_not_failed(
    settings: Settings, catalog, people, private_postgres_cluster: PostgresCluster, bwrap_runtime, caplog
) -> None:
    """Past ``job_final_write_retry_s`` the run gives up writing, but not by failing the job: a FAILED
    outcome written once the database is back would blame the job for the outage. It stays RUNNING, its
    heartbeats stopped, and the reconciler runs it again, as it does for a lost worker."""
    job_settings = settings.model_copy(
        update={
            "runtime": "bwrap",
            "job_final_write_retry_s": 1.0,
            "job_heartbeat_s": 0.2,
            "job_stale_after_s": 1.0,
        }
    )
    published = await publish_model(job_settings, catalog, people["producer"], MODEL)

    def gave_up() -> bool:  # the database comes back once the run has given up its result write
        return any(r.name == "mlrepo.executor" and r.levelno >= logging.WARNING for r in caplog.records)

    jobs = DatabaseRestartsAfterTheRun(job_settings, catalog, private_postgres_cluster, back_when=gave_up)
    try:
        view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["a", "b"])
        [run] = list(jobs.queue.tasks)
        with pytest.raises(OSError) as unreachable:
            await asyncio.wait_for(run, 120)
        assert is_unreachable(unreachable.value)
        assert jobs.outage.restart is not None
        await jobs.outage.over()
        assert (await jobs.get(people["alice"], view.id)).status == JobStatus.RUNNING
        for _ in range(100):  # once its heartbeat is job_stale_after_s old
            if (await jobs.reconcile())["requeued"]:
                break
            await asyncio.sleep(0.1)
        rerun = list(jobs.queue.tasks)
        assert rerun, "the reconciler re-queued nothing"
        assert await asyncio.wait_for(rerun[0], 120) == JobStatus.SUCCEEDED
    finally:
        await jobs.outage.over()
        await jobs.queue.close()
    final = await jobs.get(people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED and final.attempts == 2, (final.status, final.error)
