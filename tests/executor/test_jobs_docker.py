"""The job paths on the Docker runtime: inference in fresh containers from the published image, training
that builds the trained model's image FROM the algorithm's, and the reconciler removing the containers a
dead worker left running."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import docker.errors
import pytest
from executor_support import BASE_IMAGE, job_service, outcome, publish_dataset, publish_model
from sqlalchemy import update
from test_training import ALGORITHM, EXAMPLES

from catalog.enums import JobStatus
from executor.job_base import JOB_LABEL
from executor.jobs import JobService
from executor.runtimes import Limits
from executor.runtimes.base import FailureKind, RunRequest
from infra.settings import Settings
from infra.tables import Job, ListingVersion, utcnow

MODEL = """
import json, sys
for line in sys.stdin:
    record = json.loads(line)
    print(json.dumps({"id": record["id"], "output": {"label": "positive", "internal": 1}}))
"""


@pytest.fixture
async def jobs(settings: Settings, catalog, docker_runtime) -> AsyncIterator[JobService]:
    async with job_service(settings, catalog, runtime="docker", job_heartbeat_s=0.2) as service:
        yield service


async def test_inference_job_in_docker(jobs, catalog, people, settings, docker_runtime) -> None:
    published = await publish_model(settings, catalog, people["producer"], MODEL, docker=docker_runtime)
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["a", "b", "c"])
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert final.metrics["runtime"] == "docker"
    assert await jobs.all_outputs(final) == [{"output": {"label": "positive"}}] * 3


async def test_training_job_in_docker_builds_the_trained_image(
    jobs, catalog, people, settings, docker_runtime
) -> None:
    algorithm = await publish_model(
        settings,
        catalog,
        people["producer"],
        ALGORITHM,
        kind="algorithm",
        trainable=True,
        docker=docker_runtime,
    )
    dataset_id = await publish_dataset(settings, catalog, people["producer"], EXAMPLES, "reviews-docker")
    view = await jobs.submit(people["alice"], algorithm.listing_id, "training", dataset_listing_id=dataset_id)
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert final.metrics["runtime"] == "docker" and final.result["accuracy"] == 1.0
    trained_id = final.result["trained_listing_id"]
    async with catalog.db.session() as session:
        version = (
            await session.execute(
                ListingVersion.__table__.select().where(ListingVersion.listing_id == trained_id)
            )
        ).one()
    assert version.image_ref and version.image_ref.startswith("mlrepo-trained/")
    run = await jobs.submit(people["alice"], trained_id, "inference", records=["lovely plot"])
    scored = await outcome(jobs, people["alice"], run.id)
    assert await jobs.all_outputs(scored) == [{"output": {"label": "positive"}}]


async def test_reconciler_removes_containers_a_dead_worker_left(
    jobs, catalog, people, settings, docker_runtime
) -> None:
    published = await publish_model(settings, catalog, people["producer"], MODEL, docker=docker_runtime)
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["a"])
    await outcome(jobs, people["alice"], view.id)
    async with catalog.db.session() as session:  # as if its worker died mid-run
        await session.execute(
            update(Job)
            .where(Job.id == view.id)
            .values(status="running", heartbeat_at=utcnow() - timedelta(minutes=5), attempts=1)
        )
    orphan = docker_runtime.client.containers.run(
        BASE_IMAGE, ["sleep", "600"], detach=True, network_mode="none", labels={JOB_LABEL: view.id}
    )
    try:
        assert (await jobs.reconcile())["requeued"] == 1
        left = docker_runtime.client.containers.list(all=True, filters={"label": f"{JOB_LABEL}={view.id}"})
        assert left == []
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            orphan.remove(force=True)
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED and final.attempts == 2


async def test_cancel_kills_the_container_at_once(jobs, catalog, people, settings, docker_runtime) -> None:
    sleeper = "import sys, time\nsys.stdin.read()\ntime.sleep(600)\n"
    published = await publish_model(
        settings, catalog, people["producer"], sleeper, docker=docker_runtime, timeout_s=300
    )
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=["a"])
    label = {"label": f"{JOB_LABEL}={view.id}"}
    for _ in range(200):
        if docker_runtime.client.containers.list(filters=label):
            break
        await asyncio.sleep(0.05)
    assert docker_runtime.client.containers.list(filters=label), "the job's container never started"
    await jobs.cancel(people["alice"], view.id)
    # The low-level listing: the high-level one inspects each container and races with its removal (404).
    for _ in range(100):
        if not docker_runtime.client.api.containers(all=True, filters=label):
            break
        await asyncio.sleep(0.05)
    assert docker_runtime.client.api.containers(all=True, filters=label) == []  # well before its 300 s limit
    assert (await jobs.get(people["alice"], view.id)).status == JobStatus.CANCELLED


async def test_a_cpu_share_beyond_the_engine_runs_on_all_of_it(make_package_docker, docker_runtime) -> None:
    """The engine refuses --cpus above its CPU count ("Range of CPUs is from 0.01 to 2.00, as there are
    only 2 CPUs available") and below 0.01: a listing suggesting 4 cores (within the default quota) failed
    every run on a 2-core Docker worker with "the container engine refused it", while bwrap ran it. A
    share that small was 0 nano-CPUs at 1e-308 cores: no limit at all."""
    package = make_package_docker("import sys; print(sys.stdin.read().upper())")
    engine_cpus = docker_runtime.client.info()["NCPU"]
    for cpus in (engine_cpus + 2.0, 0.001):
        request = RunRequest(command=package.entrypoint, stdin=b"ok")
        result = await docker_runtime.run(package, request, Limits(timeout_s=20, cpus=cpus))
        assert result.ok, (cpus, result.failure)
        assert result.stdout.strip() == b"OK"
    options = docker_runtime.container_options(RunRequest(command=package.entrypoint), Limits(cpus=1e-308))
    assert options["nano_cpus"] == 10_000_000  # 0.01 of a core, the engine's floor: never unlimited


async def test_an_engine_refusal_is_explained_without_the_engines_text(
    make_package_docker, docker_runtime, caplog
) -> None:
    """A container the engine refuses to create (here: a relative bind source, which it reads as a bad volume
    name) failed with the engine's own text, "400 Client Error for http+docker://localhost/v1.41/...",
    shown to the job's owner. The owner reads what failed; the engine's text goes to the worker's log."""
    package = make_package_docker("print('never runs')")
    request = RunRequest(command=package.entrypoint, data_dir=Path("var/relative-data"))
    result = await docker_runtime.run(package, request, Limits(timeout_s=10))
    assert result.failure is not None and result.failure.kind == FailureKind.SANDBOX
    reason = result.failure.reason
    assert "container could not be created" in reason and "log" in reason
    assert "http+docker" not in reason and "relative-data" not in reason, reason
    assert "relative-data" in caplog.text
