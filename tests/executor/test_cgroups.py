"""bwrap runs in a cgroup of their own: held to their CPU share and resident memory, and cleaned up.

The behaviour tests run real sandboxes in the host's real cgroup hierarchy (v1 on the CI machines; CI
fails if none can be created). The layout tests build both hierarchies' files in a temporary directory,
so the v2 code path is read on every run too; scripts/check_gpu_sandbox.py reports what the kernel does
on a v2 host.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from executor_support import TEST_UID_BASE, TEST_UID_COUNT

from executor.cgroups import CPU_PERIOD_US, PARENT, PROCS_ENV, CgroupTree, RunGroups, detect
from executor.runtimes import BwrapRuntime, FailureKind, Limits, Package, RunRequest
from tests.services import require_service

SPIN = """
import json, time
started = time.monotonic()
while time.monotonic() - started < 1.0:
    pass
print(json.dumps({"cpu_s": time.process_time()}))
"""

# Shared anonymous memory is outside the data segment: only the cgroup can stop it on a GPU run.
SHARED_MEMORY_HOG = """
import mmap
size = 512 << 20
region = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
for offset in range(0, size, 4096):
    region[offset] = 1
print("ALLOCATED")
"""


@pytest.fixture(scope="module")
def tree() -> CgroupTree:
    found = detect()
    require_service("cgroups", found is not None, "cannot create cgroups under /sys/fs/cgroup (root needed)")
    assert found is not None
    return found


def run_groups_left(tree: CgroupTree) -> list[Path]:
    return [d for p in tree.parents if p.exists() for d in p.glob(f"run-{os.getpid()}-*")]


async def run_code(runtime: BwrapRuntime, tmp_path: Path, source: str, limits: Limits):
    code = tmp_path / "pkg"
    code.mkdir(exist_ok=True)
    (code / "main.py").write_text(source)
    package = Package(entrypoint=("python3", "main.py"), code_dir=code)
    return await runtime.run(package, RunRequest(command=package.entrypoint), limits)


@pytest.fixture
def runtime(bwrap_runtime: BwrapRuntime, tree: CgroupTree) -> BwrapRuntime:
    assert bwrap_runtime.cgroup_tree is tree  # the default: every run gets its groups
    return bwrap_runtime


async def test_a_run_gets_only_its_cpu_share(runtime: BwrapRuntime, tree: CgroupTree, tmp_path: Path) -> None:
    result = await run_code(runtime, tmp_path, SPIN, Limits(cpus=0.25, timeout_s=20))
    assert result.ok, result.stderr.decode()
    # A second of spinning on a quarter of a core: ~0.25 s of CPU (the interpreter's start adds a little).
    assert json.loads(result.stdout)["cpu_s"] < 0.6
    assert run_groups_left(tree) == []


async def test_resident_memory_past_the_limit_is_stopped_even_where_rlimits_cannot(
    bwrap_runtime: BwrapRuntime, tree: CgroupTree, tmp_path: Path, fake_dev: Path
) -> None:
    gpu_runtime = BwrapRuntime(
        work_dir=bwrap_runtime.work_dir, uid_base=TEST_UID_BASE, uid_count=TEST_UID_COUNT, dev_dir=fake_dev
    )
    # A GPU run's rlimit is the data segment, which shared mappings escape: the cgroup catches them.
    result = await run_code(gpu_runtime, tmp_path, SHARED_MEMORY_HOG, Limits(memory_mb=128, gpus=(0,)))
    assert b"ALLOCATED" not in result.stdout
    assert result.failure is not None and result.failure.kind == FailureKind.MEMORY
    assert result.failure.reason == "memory limit of 128 MB exceeded (resident memory)"
    assert run_groups_left(tree) == []


async def test_groups_are_removed_after_a_timeout(
    runtime: BwrapRuntime, tree: CgroupTree, tmp_path: Path
) -> None:
    result = await run_code(runtime, tmp_path, "import time\ntime.sleep(60)\n", Limits(timeout_s=0.5))
    assert result.failure is not None and result.failure.kind == FailureKind.TIMEOUT
    assert run_groups_left(tree) == []


async def test_without_cgroups_a_run_keeps_its_rlimits_only(
    bwrap_runtime: BwrapRuntime, tmp_path: Path
) -> None:
    plain = BwrapRuntime(
        work_dir=bwrap_runtime.work_dir, uid_base=TEST_UID_BASE, uid_count=TEST_UID_COUNT, cgroups=False
    )
    assert plain.cgroup_tree is None
    result = await run_code(plain, tmp_path, "print('ran')\n", Limits())
    assert result.ok and result.stdout == b"ran\n"


class TreeThatPauses(CgroupTree):
    """The host's real tree, whose ``create`` (on the runtime's thread) makes a run's real groups, then
    holds on until the test lets it return: the test cancels the run at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.made, self.go_on = threading.Event(), threading.Event()

    def create(self, cpus: float, memory_mb: int) -> RunGroups:
        groups = super().create(cpus, memory_mb)
        self.made.set()
        self.go_on.wait(30)
        return groups


class RuntimeOnTree(BwrapRuntime):
    def __init__(self, tree: CgroupTree, work_dir: Path | None) -> None:
        super().__init__(work_dir=work_dir, uid_base=TEST_UID_BASE, uid_count=TEST_UID_COUNT)
        self.tree = tree

    @property
    def cgroup_tree(self) -> CgroupTree:
        return self.tree


async def test_a_run_cancelled_while_its_groups_are_made_leaves_none(
    bwrap_runtime: BwrapRuntime, tree: CgroupTree, tmp_path: Path
) -> None:
    """A run cancelled (its job cancelled, or the server stopping) while its groups were being made on
    a thread went on without them: nothing removed them once made."""
    pausing = TreeThatPauses()
    runtime = RuntimeOnTree(pausing, bwrap_runtime.work_dir)
    run = asyncio.create_task(run_code(runtime, tmp_path, "print('ran')\n", Limits()))
    try:
        assert await asyncio.to_thread(pausing.made.wait, 30)
        run.cancel()
        await asyncio.sleep(0.1)  # the cancel reaches the run while its groups are still being made
        pausing.go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await run
        for _ in range(100):  # removed once made
            if not run_groups_left(tree):
                break
            await asyncio.sleep(0.02)
        assert run_groups_left(tree) == []
    finally:
        pausing.go_on.set()
        for group in run_groups_left(tree):  # a failure here must not fail the tests after it
            RunGroups((group,), group, "").remove()


def test_groups_left_by_a_dead_worker_are_swept(tree: CgroupTree) -> None:
    dead_pid = 4_194_304 + 1  # above the kernel's largest pid_max: never a live process
    live = tree.create(1.0, 64)
    stale = [parent / f"run-{dead_pid}-deadbeef" for parent in tree.parents]
    for group in stale:
        group.mkdir()
    try:
        assert tree.sweep() == len(stale)
        assert not any(group.exists() for group in stale)
        assert all(d.exists() for d in live.dirs)  # this worker's own groups stay
    finally:
        live.remove()


# --------------------------------------------------------------------------- layout, without a kernel


def test_v1_layout(tmp_path: Path) -> None:
    for controller in ("cpu", "memory"):
        (tmp_path / controller).mkdir()
    groups = CgroupTree(tmp_path).create(cpus=1.5, memory_mb=256)
    cpu, memory = groups.dirs
    assert CgroupTree(tmp_path).version == 1
    assert cpu.parent == tmp_path / "cpu" / PARENT and memory.parent == tmp_path / "memory" / PARENT
    assert (cpu / "cpu.cfs_quota_us").read_text() == str(int(1.5 * CPU_PERIOD_US))
    assert (memory / "memory.limit_in_bytes").read_text() == str(256 << 20)
    launcher, variables = groups.wrap(["prlimit", "--", "true"])
    assert launcher[:2] == ["/bin/sh", "-c"] and launcher[-3:] == ["prlimit", "--", "true"]
    assert variables == {PROCS_ENV: f"{cpu / 'cgroup.procs'}:{memory / 'cgroup.procs'}"}
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert not groups.oom_killed()
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert groups.oom_killed()


def test_v2_layout(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / PARENT).mkdir()
    tree = CgroupTree(tmp_path)
    groups = tree.create(cpus=0.25, memory_mb=64)
    (run,) = groups.dirs
    assert tree.version == 2 and run.parent == tmp_path / PARENT
    assert (run / "cpu.max").read_text() == f"{CPU_PERIOD_US // 4} {CPU_PERIOD_US}"
    assert (run / "memory.max").read_text() == str(64 << 20)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu +memory"
    (run / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert groups.oom_killed() and groups.memory_dir == run
    shutil.rmtree(tmp_path / PARENT)


def test_a_tiny_cpu_share_stays_above_the_kernel_floor(tmp_path: Path) -> None:
    for controller in ("cpu", "memory"):
        (tmp_path / controller).mkdir()
    groups = CgroupTree(tmp_path).create(cpus=0.001, memory_mb=64)
    assert (groups.dirs[0] / "cpu.cfs_quota_us").read_text() == "1000"


def test_oom_reading_tolerates_a_missing_file(tmp_path: Path) -> None:
    assert not RunGroups((tmp_path,), tmp_path, "memory.events").oom_killed()
