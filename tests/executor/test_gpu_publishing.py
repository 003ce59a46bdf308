"""Publications of listings that suggest GPUs, where GPUs live only on dedicated GPU workers.

Real redis-server, real arq workers, real bubblewrap sandboxes. The GPU worker's sandbox sees the fake
``/dev`` of ``fake_dev`` (no CI machine has a GPU); the cpu worker's sees the host's, which has none. The
producer's model refuses to run without a ``/dev/nvidiaN``, as a CUDA-only model does.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import textwrap
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from arq.connections import RedisSettings
from arq.worker import Worker, func
from executor_support import TEST_UID_BASE, TEST_UID_COUNT

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing.jobs import publish_job
from catalog.publishing.service import ArqQueue, PublicationView, PublishingService
from executor.gpus import GpuPool
from executor.publish_sandbox import ExecutorSandbox
from executor.runtimes import BwrapRuntime
from infra.settings import Settings
from infra.tables import Publication
from tests.services import long_running

GPU_ONLY_PREDICT = textwrap.dedent(
    """
    import json, os, sys

    gpus = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia") and n[6:].isdigit())
    if not gpus:
        sys.exit("this model needs a GPU: no /dev/nvidiaN in this sandbox")
    for line in sys.stdin:
        record = json.loads(line)
        output = {"label": "positive", "confidence": 0.9}
        print(json.dumps({"id": record["id"], "output": output}), flush=True)
    """
)


def gpu_model_zip(gpu: int = 1) -> bytes:
    manifest = {
        "name": "cuda-only-sentiment",
        "kind": "model",
        "category": "Natural Language Processing",
        "subcategories": ["Sentiment Analysis"],
        "description": "Tells whether a review is positive; runs on a GPU only.",
        "entrypoint": ["python3", "predict.py"],
        "input": {"format": "text@1"},
        "output": {"format": "class-label@1"},
        "resources": {"cpu": 1, "memory_mb": 256, "gpu": gpu},
        "timeout_s": 5,
        "tests": [
            {
                "name": "happy",
                "input": "I love it",
                "expected_output": {"label": "positive", "confidence": 0.9},
            }
        ],
        "verify": True,
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("predict.py", GPU_ONLY_PREDICT)
        zf.writestr("mlrepo.json", json.dumps(manifest))
    return buffer.getvalue()


@dataclass
class Deployment:
    """A cpu worker's and a GPU worker's publishing services on one database and one Redis."""

    cpu: PublishingService
    gpu: PublishingService
    cpu_queue: str
    gpu_queue: str
    redis_url: str

    def worker(self, on_gpu: bool, burst: bool) -> Worker:
        return Worker(
            functions=[func(publish_job, name="publish_job")],
            queue_name=self.gpu_queue if on_gpu else self.cpu_queue,
            redis_settings=RedisSettings.from_dsn(self.redis_url),
            burst=burst,
            poll_delay=0.05,
            ctx={"publishing": self.gpu if on_gpu else self.cpu},
            handle_signals=False,
        )

    async def run_cpu_worker(self) -> None:
        worker = self.worker(on_gpu=False, burst=True)
        try:
            await worker.main()
        finally:
            await worker.close()

    @contextlib.asynccontextmanager
    async def gpu_worker_alive(self) -> AsyncIterator[None]:
        """A long-running GPU worker: its heartbeat is what the cpu side looks for."""
        async with long_running(self.worker(on_gpu=True, burst=False)):
            for _ in range(600):
                if await self.cpu.queue.gpu_workers_alive():
                    break
                await asyncio.sleep(0.05)
            assert await self.cpu.queue.gpu_workers_alive(), "the GPU worker never reported in"
            yield


@pytest.fixture
async def deployment(
    settings: Settings, catalog: CatalogApp, redis_url: str, bwrap_runtime: BwrapRuntime, fake_dev: Path
) -> AsyncIterator[Deployment]:
    bwrap = settings.model_copy(update={"runtime": "bwrap"})
    run_id = uuid.uuid4().hex[:8]
    cpu_queue, gpu_queue = f"test-publish-cpu-{run_id}", f"test-publish-gpu-{run_id}"
    gpu_sandbox = ExecutorSandbox(bwrap, gpus=GpuPool((0,)))
    gpu_sandbox.bwrap = BwrapRuntime(
        work_dir=bwrap_runtime.work_dir, uid_base=TEST_UID_BASE, uid_count=TEST_UID_COUNT, dev_dir=fake_dev
    )
    services = [
        PublishingService(
            bwrap,
            catalog.db,
            catalog.listings,
            sandbox,
            queue=ArqQueue(redis_url, queue_name=cpu_queue, gpu_queue=gpu_queue),
        )
        for sandbox in (ExecutorSandbox(bwrap, gpus=GpuPool(())), gpu_sandbox)
    ]
    yield Deployment(services[0], services[1], cpu_queue, gpu_queue, redis_url)
    for service in services:
        await service.queue.close()


async def settled(service: PublishingService, actor: Actor, publication_id: str) -> PublicationView:
    for _ in range(600):
        view = await service.get(actor, publication_id)
        if view.status in ("published", "failed"):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"publication {publication_id} never finished: {view.status}")


def step_log(view: PublicationView, name: str) -> str:
    return "\n".join(next(step.log for step in view.steps if step.name == name))


async def test_a_gpu_listing_is_handed_to_a_live_gpu_worker_and_verified_there(
    deployment: Deployment, catalog: CatalogApp, people: dict[str, Actor]
) -> None:
    producer = people["producer"]
    async with deployment.gpu_worker_alive():
        submitted = await deployment.cpu.submit_package(producer, io.BytesIO(gpu_model_zip()))
        await deployment.run_cpu_worker()  # reads the manifest, finds no GPU here, hands it over
        done = await settled(deployment.cpu, producer, submitted.id)

        assert done.status == "published", done.error
        routed = "routed to the GPU workers: this one has 1 GPU(s), the listing suggests 1"
        assert routed in step_log(done, "package")
        listing = await catalog.listings.get(producer, done.listing_id)
        assert listing.verification_status == "verified"
        async with catalog.db.session() as session:
            assert (await session.get(Publication, submitted.id)).metadata_json["route"] == "gpu"
        assert deployment.cpu.upload_root.exists() and not any(deployment.cpu.upload_root.iterdir())

        # Re-verification: the cpu side leaves the GPU listing to the GPU workers' own periodic job.
        [skipped] = await deployment.cpu.verify_all()
        assert (skipped.outcome, skipped.problems) == ("skipped", ["re-verified by a GPU worker"])
        [reverified] = await deployment.gpu.verify_all(gpu_listings_only=True)
        assert (reverified.listing_id, reverified.outcome) == (done.listing_id, "verified")


async def test_without_a_live_gpu_worker_it_is_verified_here_without_a_gpu(
    deployment: Deployment, catalog: CatalogApp, people: dict[str, Actor]
) -> None:
    producer = people["producer"]
    submitted = await deployment.cpu.submit_package(producer, io.BytesIO(gpu_model_zip()))
    await deployment.run_cpu_worker()
    done = await deployment.cpu.get(producer, submitted.id)
    assert done.status == "failed"  # the model's own refusal, exactly what a CPU-only deployment gets
    assert done.error is not None and "needs a GPU" in done.error
    assert "handed to a GPU worker" not in step_log(done, "package")


async def test_a_cpu_listing_stays_on_the_cpu_worker_and_gpu_workers_reverify_only_gpu_listings(
    deployment: Deployment, catalog: CatalogApp, people: dict[str, Actor]
) -> None:
    producer = people["producer"]
    async with deployment.gpu_worker_alive():
        submitted = await deployment.cpu.submit_package(producer, io.BytesIO(gpu_model_zip(gpu=0)))
        await deployment.run_cpu_worker()
        done = await deployment.cpu.get(producer, submitted.id)  # finished by the cpu worker's run
        assert done.status == "failed" and "needs a GPU" in (done.error or "")  # it asked for none

    async with catalog.db.session() as session:
        assert "route" not in (await session.get(Publication, submitted.id)).metadata_json
    assert await deployment.gpu.verify_all(gpu_listings_only=True) == []


async def test_recovery_puts_a_handed_over_publication_back_on_the_gpu_queue(
    deployment: Deployment, people: dict[str, Actor]
) -> None:
    from arq import create_pool

    submitted = await deployment.cpu.submit_package(people["producer"], io.BytesIO(gpu_model_zip()))
    async with deployment.cpu.db.session() as session:  # handed over, then Redis lost everything
        row = await session.get(Publication, submitted.id)
        row.metadata_json = {**row.metadata_json, "route": "gpu"}
    pool = await create_pool(RedisSettings.from_dsn(deployment.redis_url))
    try:
        await pool.flushall()
        assert await deployment.cpu.recover() == 1
        assert await pool.zscore(deployment.gpu_queue, f"publish:{submitted.id}:gpu") is not None
        assert await pool.zscore(deployment.cpu_queue, f"publish:{submitted.id}") is None
    finally:
        await pool.aclose()


def test_gpu_workers_take_handed_publications_and_reverify_the_gpu_listings(settings: Settings) -> None:
    from executor.worker import worker_settings

    queued = settings.model_copy(  # garbage collected daily, the default the test suite turns off
        update={"redis_url": "redis://127.0.0.1:1", "gpu_devices": "", "gc_interval_hours": 24}
    )
    gpu = worker_settings(queued.model_copy(update={"worker_resource_class": "gpu"}))
    cpu = worker_settings(queued)
    assert {func(f).name for f in gpu["functions"]} == {
        "run_job",
        "reconcile_jobs",
        "publish_job",
        "reverify_gpu_job",
    }
    assert [c.coroutine.__name__ for c in gpu["cron_jobs"]] == ["reconcile_jobs", "reverify_gpu_job"]
    cpu_crons = [c.coroutine.__name__ for c in cpu["cron_jobs"]]
    assert cpu_crons == ["reconcile_jobs", "reverify_job", "recover_job", "collect_artifact_garbage"]


async def test_a_redis_that_cannot_answer_means_no_gpu_worker_rather_than_a_failed_publication() -> None:
    queue = ArqQueue("redis://127.0.0.1:1", gpu_queue="mlrepo:jobs:gpu")
    try:
        assert await queue.gpu_workers_alive() is False
    finally:
        await queue.close()
    assert await ArqQueue("redis://127.0.0.1:1").gpu_workers_alive() is False  # no GPU queue: not asked
