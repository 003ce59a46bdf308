"""The artifact garbage collection's own schedule: daily by default, on the worker or, without Redis, in the
API process, so that a default deployment applies the retention of job outputs at all."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from api.app import create_app
from api.graphql.jobs import GC_TASK, RECONCILE_TASK
from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.gc_schedule import collect_garbage_on_schedule, gc_hours, local_now, next_collection
from executor.job_outputs import write_outputs
from infra.artifacts import ArtifactStore
from infra.settings import Settings
from infra.tables import Job
from search.embeddings import Encoder
from tests.job_rows import finished_job

TZ = local_now().tzinfo


def at(day: int, hour: int, minute: int, second: float = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=TZ) + timedelta(seconds=second)


def daily(settings: Settings) -> Settings:
    """``settings`` on the default schedule, which the test suite turns off (``tests/conftest.py``)."""
    return settings.model_copy(update={"gc_interval_hours": 24})


def test_a_default_deployment_collects_daily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off by default, retention never happened: nothing expired outputs unless an operator ran gc."""
    monkeypatch.delenv("MLREPO_GC_INTERVAL_HOURS")  # a deployment's environment, not the test suite's
    assert gc_hours(Settings(data_dir=tmp_path)) == {0}
    assert gc_hours(Settings(data_dir=tmp_path, gc_interval_hours=6)) == {0, 6, 12, 18}
    assert gc_hours(Settings(data_dir=tmp_path, gc_interval_hours=0)) == set()


def test_the_test_suite_never_collects_by_the_clock(settings: Settings, tmp_path: Path) -> None:
    """An API app or worker a test started at 00:43 local time ran a real collection on that test's data
    (the default schedule): whether a test passed depended on the minute it ran. The suite's settings,
    those of the fixture and any a test builds (or a process it starts reads), schedule none."""
    from executor.worker import gc_cron_jobs

    for suite in (settings, Settings(data_dir=tmp_path)):
        assert gc_hours(suite) == set()
        assert gc_cron_jobs(suite.model_copy(update={"redis_url": "redis://127.0.0.1:1"})) == []
    assert os.environ["MLREPO_GC_INTERVAL_HOURS"] == "0"  # inherited by the processes tests start


def test_the_next_collection_is_the_next_scheduled_minute_by_the_clock() -> None:
    daily = {0}
    assert next_collection(at(10, 0, 42, 59.5), daily) == at(10, 0, 43)
    assert next_collection(at(10, 0, 43), daily) == at(11, 0, 43)  # strictly after: not twice
    assert next_collection(at(10, 13, 5), daily) == at(11, 0, 43)
    assert next_collection(at(10, 6, 50), {0, 6, 12, 18}) == at(10, 12, 43)
    assert next_collection(at(10, 23, 50), {0, 6, 12, 18}) == at(11, 0, 43)


async def test_the_scheduled_collection_expires_old_outputs_and_removes_their_blobs(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, tmp_path: Path
) -> None:
    """The loop an API process without Redis runs; its clock (only) is set a moment before a start."""
    store = ArtifactStore.from_settings(settings)
    outputs = write_outputs(store, tmp_path / "outputs", [{"output": "long ago"}])
    job = finished_job(alice.account_id, outputs.digest, settings.job_output_retention_days + 1)
    async with catalog_app.db.session() as session:
        session.add(job)
    then = time.time() - 2 * settings.gc_grace_s  # an old blob, as the job's outputs would be by now
    os.utime(store.locate(outputs.digest).path, (then, then))
    loop = asyncio.create_task(
        collect_garbage_on_schedule(daily(settings), catalog_app.db, clock=lambda: at(10, 0, 42, 59.8))
    )
    try:
        async with asyncio.timeout(20):
            while await _outputs_digest(catalog_app, job.id) is not None or store.exists(outputs.digest):
                await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


async def test_an_unscheduled_collection_loop_ends_at_once(
    catalog_app: CatalogApp, settings: Settings
) -> None:
    never = settings.model_copy(update={"gc_interval_hours": 0})
    await asyncio.wait_for(collect_garbage_on_schedule(never, catalog_app.db), 5)


async def test_without_redis_the_api_process_runs_the_workers_chores(
    settings: Settings, encoder: Encoder
) -> None:
    """There is no worker then: the API process reconciles jobs and collects garbage itself."""
    app = create_app(daily(settings), migrate=False, encoder=encoder)
    async with app.router.lifespan_context(app):
        running = {task.get_name() for task in asyncio.all_tasks() if not task.done()}
        assert {GC_TASK, RECONCILE_TASK} <= running
    running = {task.get_name() for task in asyncio.all_tasks() if not task.done()}
    assert not {GC_TASK, RECONCILE_TASK} & running


async def _outputs_digest(app: CatalogApp, job_id: str) -> str | None:
    async with app.db.session() as session:
        return (await session.get(Job, job_id)).outputs_digest
