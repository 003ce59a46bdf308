"""GPUs reach a sandbox only as leased: the worker's pool, the device nodes bwrap binds, Docker's device
request, and a job that asks for a GPU seeing exactly the one it was leased.

No GPU exists on the CI machines, so the bwrap tests stand character devices in for GPU nodes (a fake
``/dev`` whose ``nvidia0`` / ``nvidia1`` / ``nvidiactl`` point at /dev/zero and /dev/null): what is tested
is that exactly the leased nodes appear in the real sandbox and can be opened there, and that a GPU run's
memory limit is the data segment, not the address space CUDA needs. ``scripts/check-gpu-sandbox.py``
runs the same sandbox against a real GPU (CUDA initialised, memory allocated) where one exists.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from executor_support import TEST_UID_BASE, TEST_UID_COUNT, outcome, publish_dataset, publish_model

from catalog.enums import JobStatus
from catalog.publishing.sandbox import RunTarget, SandboxLimits
from catalog.publishing.verification import limits_for
from executor.allocation import queue_for
from executor.gpus import GpuPool, device_nodes, discover, leased_gpus, parse_devices, shared_pool
from executor.job_views import JobView
from executor.jobs import JobService
from executor.publish_sandbox import ExecutorSandbox
from executor.runtimes import BwrapRuntime, DockerRuntime, Limits, Package, RunRequest, RuntimeSelector
from executor.worker import ARQ_MAX_JOBS, worker_settings
from infra.errors import BadInput, Unavailable
from infra.settings import Settings
from infra.tables import Account, Listing

# --------------------------------------------------------------------------- device discovery


def test_discover_finds_gpu_nodes_only(fake_dev: Path, tmp_path: Path) -> None:
    (fake_dev / "nvidia12").symlink_to("/dev/zero")
    assert discover(fake_dev) == (0, 1, 12)
    assert discover(tmp_path) == ()
    assert discover(tmp_path / "missing") == ()


def test_parse_devices(fake_dev: Path) -> None:
    assert parse_devices("auto", fake_dev) == (0, 1)
    assert parse_devices(" AUTO ", fake_dev) == (0, 1)
    assert parse_devices("", fake_dev) == ()
    assert parse_devices("1, 0,1", fake_dev) == (1, 0)
    with pytest.raises(BadInput, match="'auto' or GPU indices"):
        parse_devices("gpu0", fake_dev)
    with pytest.raises(BadInput):
        parse_devices("-1", fake_dev)


def test_device_nodes_are_the_controls_present_plus_the_leased_gpus(fake_dev: Path) -> None:
    assert device_nodes((), fake_dev) == []
    names = [node.name for node in device_nodes((1,), fake_dev)]
    assert names == ["nvidiactl", "nvidia-uvm", "nvidia1"]  # no nvidia-uvm-tools / modeset here
    with pytest.raises(Unavailable, match=r"GPU 3 was leased but .*nvidia3 does not exist"):
        device_nodes((3,), fake_dev)


# --------------------------------------------------------------------------- the pool


async def test_leases_are_disjoint_and_a_lease_waits_for_free_devices() -> None:
    pool = GpuPool((0, 1, 2))
    release_first = asyncio.Event()
    seen: dict[str, tuple[int, ...]] = {}

    async def hold(name: str, count: int, until: asyncio.Event | None) -> None:
        async with pool.lease(count) as gpus:
            seen[name] = gpus
            assert leased_gpus() == gpus
            if until is not None:
                await until.wait()

    first = asyncio.create_task(hold("first", 2, release_first))
    await asyncio.sleep(0)
    assert seen["first"] == (0, 1) and pool.free == (2,)
    second = asyncio.create_task(hold("second", 2, None))
    await asyncio.sleep(0.05)
    assert "second" not in seen  # only one device is free: it waits
    release_first.set()
    await asyncio.gather(first, second)
    assert set(seen["second"]) <= {0, 1, 2} and len(seen["second"]) == 2
    assert pool.free == (0, 1, 2) and leased_gpus() == ()


async def test_a_lease_is_returned_when_the_job_fails() -> None:
    pool = GpuPool((0,))
    with pytest.raises(RuntimeError):
        async with pool.lease(1):
            raise RuntimeError("job crashed")
    assert pool.free == (0,)
    async with pool.lease(0) as none:
        assert none == () and pool.free == (0,)


async def test_asking_for_more_gpus_than_the_worker_has_fails_at_once() -> None:
    with pytest.raises(Unavailable, match=r"needs 2 GPU\(s\) and this worker has 1.*\{gpu: 0\}"):
        async with GpuPool((0,)).lease(2):
            pass


# --------------------------------------------------------------------------- the runtimes

LIST_DEVICES = """
import json, os
nodes = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
read = {n: open("/dev/" + n, "rb").read(4).hex() for n in nodes if n[6:].isdigit()}
limits = {
    line[:26].strip(): line[26:].split()[0]
    for line in open("/proc/self/limits") if line.startswith(("Max address space", "Max data size"))
}
print(json.dumps({"nodes": nodes, "read": read, "limits": limits}))
"""


@pytest.fixture
def gpu_bwrap(bwrap_runtime: BwrapRuntime, fake_dev: Path) -> BwrapRuntime:
    return BwrapRuntime(
        work_dir=bwrap_runtime.work_dir, uid_base=TEST_UID_BASE, uid_count=TEST_UID_COUNT, dev_dir=fake_dev
    )


def device_lister(tmp_path: Path) -> Path:
    code = tmp_path / "pkg"
    code.mkdir(exist_ok=True)
    (code / "list.py").write_text(LIST_DEVICES)
    return code


async def sandbox_view(runtime: BwrapRuntime, tmp_path: Path, limits: Limits) -> dict:
    package = Package(entrypoint=("python3", "list.py"), code_dir=device_lister(tmp_path))
    result = await runtime.run(package, RunRequest(command=("python3", "list.py")), limits)
    assert result.ok, result.stderr.decode()
    return json.loads(result.stdout)


async def test_bwrap_binds_exactly_the_leased_gpu_and_caps_the_data_segment(
    gpu_bwrap: BwrapRuntime, tmp_path: Path
) -> None:
    view = await sandbox_view(gpu_bwrap, tmp_path, Limits(memory_mb=256, gpus=(1,)))
    assert view["nodes"] == ["nvidia-uvm", "nvidia1", "nvidiactl"]  # not nvidia0
    assert view["read"] == {"nvidia1": "00000000"}  # opened and read inside the sandbox
    assert view["limits"] == {"Max address space": "unlimited", "Max data size": str(256 << 20)}


async def test_bwrap_without_gpus_shows_none_and_caps_the_address_space(
    gpu_bwrap: BwrapRuntime, tmp_path: Path
) -> None:
    view = await sandbox_view(gpu_bwrap, tmp_path, Limits(memory_mb=256))
    assert view["nodes"] == []
    assert view["limits"] == {"Max address space": str(256 << 20), "Max data size": "unlimited"}


def test_docker_requests_the_leased_gpus_only() -> None:
    runtime = DockerRuntime()  # building options needs no engine
    request = RunRequest(command=("python3", "model.py"))
    assert "device_requests" not in runtime.container_options(request, Limits())
    (wanted,) = runtime.container_options(request, Limits(gpus=(0, 2)))["device_requests"]
    assert wanted["DeviceIDs"] == ["0", "2"] and wanted["Capabilities"] == [["gpu"]]
    assert wanted["Count"] == 0  # ids, not "any N"


async def test_publishing_lends_the_suggested_gpus_up_to_what_the_worker_has(
    settings: Settings, gpu_bwrap: BwrapRuntime, tmp_path: Path
) -> None:
    assert limits_for(5.0, 1, {"gpu": 2}).gpus == 2 and limits_for(5.0, 1, None).gpus == 0
    target = RunTarget(command=("python3", "list.py"), code_dir=device_lister(tmp_path))

    async def nodes_seen(pool: GpuPool, limits: SandboxLimits) -> list[str]:
        sandbox = ExecutorSandbox(settings.model_copy(update={"runtime": "bwrap"}), gpus=pool)
        sandbox.bwrap = gpu_bwrap
        outcome = await sandbox.run(target, b"", limits)
        assert outcome.ok, outcome.reason
        return json.loads(outcome.stdout)["nodes"]

    two = GpuPool((0, 1))
    assert await nodes_seen(two, SandboxLimits(gpus=1)) == ["nvidia-uvm", "nvidia0", "nvidiactl"]
    assert await nodes_seen(two, SandboxLimits(gpus=3)) == ["nvidia-uvm", "nvidia0", "nvidia1", "nvidiactl"]
    assert await nodes_seen(two, SandboxLimits()) == []
    assert two.free == (0, 1)
    assert await nodes_seen(GpuPool(()), SandboxLimits(gpus=1)) == []  # verified without a GPU


def test_a_gpu_worker_takes_no_more_jobs_than_it_has_gpus(settings: Settings) -> None:
    queued = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1"})

    def gpu_worker(devices: str) -> dict:
        update = {"worker_resource_class": "gpu", "gpu_devices": devices}
        return worker_settings(queued.model_copy(update=update))

    assert gpu_worker("0,1")["queue_name"] == queue_for("gpu") and gpu_worker("0,1")["max_jobs"] == 2
    assert gpu_worker("")["max_jobs"] == 1  # takes one at a time and fails it with the reason
    assert worker_settings(queued)["max_jobs"] == ARQ_MAX_JOBS


async def test_jobs_and_publishing_in_one_process_share_one_pool(settings: Settings, catalog) -> None:
    assert shared_pool((0, 1)) is shared_pool([0, 1]) and shared_pool((0,)) is not shared_pool((0, 1))
    one_gpu = settings.model_copy(update={"gpu_devices": "0"})
    assert JobService(one_gpu, catalog).gpus is ExecutorSandbox(one_gpu).gpus


# --------------------------------------------------------------------------- a job end to end

DEVICE_MODEL = """
import json, os, sys
nodes = ",".join(sorted(n for n in os.listdir("/dev") if n.startswith("nvidia")))
for line in sys.stdin:
    record = json.loads(line)
    print(json.dumps({"id": record["id"], "output": {"label": nodes or "none", "confidence": 1.0}}))
"""


@pytest.fixture
async def gpu_people(catalog, people):
    """alice may use one GPU."""
    async with catalog.db.session() as session:
        (await session.get(Account, people["alice"].account_id)).quota_gpu = 1
    return people


@asynccontextmanager
async def gpu_jobs(
    settings: Settings, catalog, runtime: BwrapRuntime, gpus: tuple[int, ...]
) -> AsyncIterator[JobService]:
    """A real in-process JobService whose bwrap finds GPUs in the fake /dev and whose pool is ``gpus``."""
    job_settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    selector = RuntimeSelector(job_settings)
    selector.bwrap = runtime
    jobs = JobService(job_settings, catalog, selector=selector, gpus=GpuPool(gpus))
    try:
        yield jobs
    finally:
        await jobs.queue.close()


async def run_device_model(jobs: JobService, people, listing_id: str, **resources) -> JobView:
    """alice runs the published DEVICE_MODEL on ``resources``; the job's final view."""
    view = await jobs.submit(people["alice"], listing_id, "inference", records=["x"], resources=resources)
    return await outcome(jobs, people["alice"], view.id)


@pytest.fixture
async def device_model(settings: Settings, catalog, gpu_people) -> str:
    return (await publish_model(settings, catalog, gpu_people["producer"], DEVICE_MODEL)).listing_id


async def label(jobs: JobService, view: JobView) -> str:
    return (await jobs.all_outputs(view))[0]["output"]["label"]


async def test_a_gpu_job_sees_the_gpu_it_was_leased_and_a_cpu_job_none(
    settings: Settings, catalog, gpu_people, gpu_bwrap: BwrapRuntime, device_model: str
) -> None:
    async with gpu_jobs(settings, catalog, gpu_bwrap, gpus=(1,)) as jobs:
        on_gpu = await run_device_model(jobs, gpu_people, device_model, gpu=1)
        assert on_gpu.status == JobStatus.SUCCEEDED, on_gpu.error
        assert on_gpu.resource_class == "gpu" and await label(jobs, on_gpu) == "nvidia-uvm,nvidia1,nvidiactl"
        assert on_gpu.metrics["gpus"] == [1]  # which devices ran it, for the requester and the operator
        on_cpu = await run_device_model(jobs, gpu_people, device_model)
        assert (
            on_cpu.resource_class == "cpu"
            and await label(jobs, on_cpu) == "none"
            and on_cpu.metrics["gpus"] == []
        )
        assert jobs.gpus.free == (1,)


async def test_a_gpu_job_on_a_worker_without_gpus_fails_with_the_reason(
    settings: Settings, catalog, gpu_people, gpu_bwrap: BwrapRuntime, device_model: str
) -> None:
    async with gpu_jobs(settings, catalog, gpu_bwrap, gpus=()) as jobs:
        view = await run_device_model(jobs, gpu_people, device_model, gpu=1)
        assert view.status == JobStatus.FAILED
        assert "needs 1 GPU(s) and this worker has 0" in view.error


async def test_the_setting_reaches_the_pool(settings: Settings, catalog) -> None:
    assert JobService(settings.model_copy(update={"gpu_devices": "3,1"}), catalog).gpus.devices == (3, 1)
    assert JobService(settings.model_copy(update={"gpu_devices": ""}), catalog).gpus.devices == ()
    assert JobService(settings, catalog).gpus.devices == discover()  # "auto"


async def test_training_a_pipeline_with_a_gpu_step_on_a_one_gpu_worker_finishes(
    settings: Settings, catalog, gpu_people, gpu_bwrap: BwrapRuntime
) -> None:
    """The pipeline job leases the GPU of its most demanding step, then trains that step as a job of its
    own in the same worker; that job waited for a free GPU, which its own pipeline job held: the two
    stayed RUNNING forever on a worker with one GPU."""
    from test_training import ALGORITHM, EXAMPLES

    algorithm = await publish_model(
        settings, catalog, gpu_people["producer"], ALGORITHM, kind="algorithm", trainable=True
    )
    async with catalog.db.session() as session:
        row = await session.get(Listing, algorithm.listing_id)
        row.training_resources = {"cpu": 1, "memory_mb": 256, "gpu": 1}
        row.input_format = "text@1"
    dataset_id = await publish_dataset(settings, catalog, gpu_people["producer"], EXAMPLES, "reviews")
    async with catalog.db.session() as session:  # labelled: a pipeline step takes no unlabelled data
        (await session.get(Listing, dataset_id)).output_format = "class-label@1"
    alice = gpu_people["alice"]
    pipeline = await catalog.pipelines.create(alice, "gpu training")
    await catalog.pipelines.add_step(
        alice, pipeline.id, algorithm.listing_id, training_data_listing_id=dataset_id
    )
    async with gpu_jobs(settings, catalog, gpu_bwrap, gpus=(0,)) as jobs:
        view = await jobs.submit(alice, task="training", pipeline_id=pipeline.id)
        assert view.resources["gpu"] == 1
        final = await asyncio.wait_for(outcome(jobs, alice, view.id), 120)  # a guard, not a measure
        assert final.status == JobStatus.SUCCEEDED, final.error
        assert jobs.gpus.free == (0,)
