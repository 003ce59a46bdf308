"""The demo chain trained and run outside the API process: on an arq worker (throwaway redis-server,
Redis pub/sub status), and with ``mlrepo run --pipeline`` as a user types it. bwrap sandboxes throughout."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from arq.worker import Worker

from catalog.app import CatalogApp
from catalog.enums import JobStatus
from executor.events import RedisJobEvents
from executor.job_queues import ArqJobQueue
from executor.job_views import JobView
from executor.jobs import JobService
from executor.runtimes import BwrapRuntime
from executor.worker import worker_settings
from infra.settings import Settings
from tests.services import require_service, run_mlrepo

from .demo_chain import LAMP_AND_SIGN, LAMP_AND_SIGN_PREDICTED, build_trainable_chain, publish_parts


@pytest.fixture
def require_bwrap() -> None:
    require_service("bubblewrap", BwrapRuntime.available(), "bwrap/prlimit/setpriv not installed")
    require_service("bubblewrap", os.geteuid() == 0, "starting sandboxes as other uids needs root")


async def drain_on_worker(settings: Settings, jobs: JobService, actor, job_id: str) -> list[JobView]:
    """Run arq's worker until the queue is empty while watching the job as ``jobStatus`` would."""
    watching = asyncio.create_task(_follow(jobs, actor, job_id))
    await asyncio.sleep(0.1)
    worker = Worker(**{**worker_settings(settings), "poll_delay": 0.05}, burst=True, handle_signals=False)
    try:
        await worker.main()
    finally:
        await worker.close()
    return await asyncio.wait_for(watching, 30)


async def _follow(jobs: JobService, actor, job_id: str) -> list[JobView]:
    return [view async for view in jobs.watch(actor, job_id)]


async def test_a_pipeline_trains_and_runs_on_an_arq_worker(
    require_bwrap, settings: Settings, redis_url: str, catalog: CatalogApp, producer, requester
) -> None:
    arq_settings = settings.model_copy(
        update={"runtime": "bwrap", "redis_url": redis_url, "job_heartbeat_s": 0.3}
    )
    jobs = JobService(arq_settings, catalog, events=RedisJobEvents(redis_url), queue=ArqJobQueue(redis_url))
    try:
        ids = await publish_parts(catalog, producer)
        pipeline_id = await build_trainable_chain(catalog.pipelines, requester, ids)
        training = await jobs.submit(requester, task="training", pipeline_id=pipeline_id)
        seen = await drain_on_worker(arq_settings, jobs, requester, training.id)
        assert seen[0].status == JobStatus.QUEUED and seen[-1].status == JobStatus.SUCCEEDED, seen[-1].error
        post_id = seen[-1].result["post_training_pipeline_id"]

        run = await jobs.submit(requester, records=LAMP_AND_SIGN, pipeline_id=post_id)
        assert run.resources["stages"] == ["cpu", "cpu", "cpu"]
        seen = await drain_on_worker(arq_settings, jobs, requester, run.id)
        final = seen[-1]
        assert final.status == JobStatus.SUCCEEDED, final.error
        assert await jobs.all_outputs(final) == LAMP_AND_SIGN_PREDICTED
        assert len(final.metrics["steps"]) == 3
    finally:
        await jobs.queue.close()
        await jobs.events.close()


async def mlrepo(settings: Settings, *args: str) -> tuple[int, str, str]:
    return await run_mlrepo(settings.data_dir, *args)


async def test_mlrepo_run_trains_and_runs_a_pipeline(
    require_bwrap, sqlite_settings: Settings, encoder
) -> None:
    async with await CatalogApp.open(sqlite_settings, encoder=encoder) as catalog:
        producer = (await catalog.accounts.create("producer", "producer")).as_actor()
        account = await catalog.accounts.create("requester", "requester")
        token = (await catalog.accounts.create_token(account.id)).secret
        ids = await publish_parts(catalog, producer)
        pipeline_id = await build_trainable_chain(catalog.pipelines, account.as_actor(), ids)

    code, out, err = await mlrepo(
        sqlite_settings, "run", "--pipeline", pipeline_id, "--task", "training", "--token", token
    )
    assert code == 0, (code, out, err)
    trained = json.loads(out)
    assert trained["status"] == "succeeded" and trained["pipeline_id"] == pipeline_id
    post_id = trained["result"]["post_training_pipeline_id"]

    records = [arg for image in LAMP_AND_SIGN for arg in ("--record", json.dumps(image))]
    code, out, err = await mlrepo(sqlite_settings, "run", "--pipeline", post_id, *records, "--token", token)
    assert code == 0, (code, out, err)
    assert json.loads(out)["outputs"] == LAMP_AND_SIGN_PREDICTED

    code, _, err = await mlrepo(sqlite_settings, "run", "--token", token)
    assert code == 2 and "LISTING_ID or --pipeline" in err
