"""Sandbox uids are leased host-wide: REAL bwrap sandboxes started at once from two processes never run
as one uid, a crashed holder's uid is free again, and a sandbox finding the range used up says so."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from executor_support import TEST_UID_BASE, TEST_UID_COUNT

from executor.runtimes import BwrapRuntime, FailureKind, Limits, Package, RunRequest
from executor.uid_leases import UidLeases

REPO = Path(__file__).resolve().parents[2]
# The last uids of this test session's own range (``executor_support``): no other suite uses them.
UID_BASE = TEST_UID_BASE + TEST_UID_COUNT - 8
LIMITS = Limits(timeout_s=30.0, memory_mb=256, pids=16)
# Reports the uid it runs as and when it ran (the host's clock: bwrap shares it) around a 2 s nap.
REPORT_UID = """
import json, os, time
start = time.time()
time.sleep(2.0)
print(json.dumps({"uid": os.getuid(), "start": start, "end": time.time()}))
"""
SLEEP = "import time\ntime.sleep(120)\n"
# The second process: runs ``count`` sandboxes at once with the same uid range and lease dir.
OTHER_PROCESS = """
import asyncio, json, sys
from pathlib import Path
from executor.runtimes import BwrapRuntime, Limits, Package, RunRequest

work, leases, code, base, count, runs = sys.argv[1:7]
runtime = BwrapRuntime(work_dir=Path(work), uid_base=int(base), uid_count=int(count),
                       uid_lease_dir=Path(leases), cgroups=False)
package = Package(entrypoint=("python3", "model.py"), code_dir=Path(code))
request = RunRequest(command=("python3", "model.py"))

async def main():
    print("ready", flush=True)
    results = await asyncio.gather(*(runtime.run(package, request, Limits(timeout_s=30.0, memory_mb=256,
                                                                         pids=16)) for _ in range(int(runs))))
    for result in results:
        print(json.dumps({"ok": result.ok, "stdout": result.stdout.decode(), "why": str(result.failure)}))

asyncio.run(main())
"""


def package_of(tmp_path: Path, source: str) -> Package:
    code = tmp_path / f"pkg-{len(list(tmp_path.iterdir()))}"
    code.mkdir()
    (code / "model.py").write_text(textwrap.dedent(source))
    return Package(entrypoint=("python3", "model.py"), code_dir=code)


def runtime_for(bwrap_runtime: BwrapRuntime, leases: Path, count: int, wait_s: float = 30.0) -> BwrapRuntime:
    return BwrapRuntime(
        work_dir=bwrap_runtime.work_dir,
        uid_base=UID_BASE,
        uid_count=count,
        uid_lease_dir=leases,
        uid_wait_s=wait_s,
        cgroups=False,
    )


def start_other(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


async def test_sandboxes_of_two_processes_at_once_never_share_a_uid(
    bwrap_runtime: BwrapRuntime, tmp_path: Path
) -> None:
    """8 sandboxes at once (4 per process) over 4 uids: drawn at random, two running at the same time
    always shared one (pigeonhole); leased, each uid runs one sandbox at a time and the rest wait."""
    leases, count, per_process = tmp_path / "leases", 4, 4
    package = package_of(tmp_path, REPORT_UID)
    runtime = runtime_for(bwrap_runtime, leases, count)
    args = [str(runtime.work_dir), str(leases), str(package.code_dir), str(UID_BASE), str(count)]
    other = start_other([*args, str(per_process)])
    try:
        assert other.stdout is not None
        ready = await asyncio.to_thread(other.stdout.readline)
        assert ready.strip() == "ready", other.stderr.read() if other.stderr else ""
        request = RunRequest(command=package.entrypoint)
        mine = await asyncio.gather(*(runtime.run(package, request, LIMITS) for _ in range(per_process)))
        out, err = await asyncio.to_thread(other.communicate, timeout=120)
    finally:
        if other.poll() is None:
            os.killpg(other.pid, signal.SIGKILL)
    assert other.returncode == 0, err
    theirs = [json.loads(line) for line in out.splitlines()]
    assert all(r["ok"] for r in theirs), theirs
    assert all(r.ok for r in mine), [r.failure for r in mine]
    runs = [json.loads(r.stdout) for r in mine] + [json.loads(r["stdout"]) for r in theirs]
    assert {run["uid"] for run in runs} <= set(range(UID_BASE, UID_BASE + count))
    overlapping_same_uid = [
        (a, b)
        for a, b in itertools.combinations(runs, 2)
        if a["uid"] == b["uid"] and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping_same_uid == []


async def test_a_crashed_holders_uid_is_free_again_and_a_used_up_range_says_so(
    bwrap_runtime: BwrapRuntime, tmp_path: Path
) -> None:
    leases = tmp_path / "leases"
    sleeper = package_of(tmp_path, SLEEP)
    runtime = runtime_for(bwrap_runtime, leases, count=1, wait_s=0.5)
    args = [str(runtime.work_dir), str(leases), str(sleeper.code_dir), str(UID_BASE), "1", "1"]
    holder = start_other(args)
    try:
        probe = UidLeases(leases, UID_BASE, 1)
        deadline = time.monotonic() + 30
        while (taken := probe.try_take()) is not None:  # until the other process's sandbox holds the uid
            os.close(taken[1])
            assert holder.poll() is None and time.monotonic() < deadline, "the sandbox never took its uid"
            await asyncio.sleep(0.05)
        reporter = package_of(tmp_path, REPORT_UID)
        request = RunRequest(command=reporter.entrypoint)

        refused = await runtime.run(reporter, request, LIMITS)
        assert refused.failure is not None and refused.failure.kind == FailureKind.SANDBOX
        assert "all 1 sandbox user IDs" in refused.failure.reason
        assert "stayed in use" in refused.failure.reason

        os.kill(holder.pid, signal.SIGKILL)  # the worker crashes mid-run; its sandbox dies with it
        await asyncio.to_thread(holder.wait, 30)
        after = await runtime_for(bwrap_runtime, leases, count=1, wait_s=10).run(reporter, request, LIMITS)
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    assert after.ok, after.failure
    assert json.loads(after.stdout)["uid"] == UID_BASE


def test_a_uid_range_needs_a_uid(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one uid"):
        UidLeases(tmp_path, UID_BASE, 0)


def children() -> set[int]:
    """This process's child processes now (any thread's)."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


async def test_a_run_cancelled_while_its_sandbox_starts_keeps_its_uid_until_the_launcher_is_gone(
    bwrap_runtime: BwrapRuntime, tmp_path: Path
) -> None:
    """Cancelled while its launcher was still being started, a run gave its uid back at once and killed
    the launcher later (once started): meanwhile another run could take the uid the half-started
    launcher was about to run as. Now the cancel ends the run only once the launcher is dead."""
    leases = tmp_path / "leases"
    runtime = runtime_for(bwrap_runtime, leases, count=1)
    sleeper = package_of(tmp_path, SLEEP)
    before = children()
    run = asyncio.ensure_future(runtime.run(sleeper, RunRequest(command=sleeper.entrypoint), LIMITS))
    deadline = time.monotonic() + 30
    while not (started := children() - before):  # the launcher exists; its start is still being awaited
        assert not run.done() and time.monotonic() < deadline, "the launcher never started"
        await asyncio.sleep(0)
    watching = asyncio.ensure_future(asyncio.to_thread(launcher_alive_when_free, leases, started))
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert await asyncio.wait_for(watching, 30) == set(), "the uid was free while its launcher still ran"


def launcher_alive_when_free(leases: Path, launcher: set[int]) -> set[int]:
    """The launcher processes still there (zombies included) at the moment the uid's lease is first free."""
    probe = UidLeases(leases, UID_BASE, 1)
    while (taken := probe.try_take()) is None:
        time.sleep(0.0002)
    try:
        return {pid for pid in launcher if Path(f"/proc/{pid}").exists()}
    finally:
        os.close(taken[1])


async def test_a_lease_dir_that_cannot_be_written_fails_the_run_clearly(tmp_path: Path) -> None:
    """A worker that is not root cannot make the default lease dir (root's, under /run): the run failed
    with a bare PermissionError traceback; it now fails as a sandbox failure naming the directory, this
    process's uid and the setting to change. Any OSError of the dir takes that path, so a lease dir under
    a regular file stands in for the unwritable one: a run as another user would need the checkout and
    its virtualenv readable by that user, which a CI checkout under a private temporary dir is not."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    lease_dir = blocker / "sandbox-uids"
    runtime = BwrapRuntime(work_dir=tmp_path / "work", cgroups=False, uid_lease_dir=lease_dir)
    code = tmp_path / "code"
    code.mkdir()
    (code / "model.py").write_text("print('ran')\n")
    package = Package(entrypoint=("python3", "model.py"), code_dir=code)
    result = await runtime.run(package, RunRequest(command=package.entrypoint), Limits(timeout_s=5.0))
    assert result.failure is not None, "the run went ahead without a uid lease"
    assert result.failure.kind == FailureKind.SANDBOX
    reason = result.failure.reason
    assert f"lease directory {lease_dir} cannot be written" in reason
    assert f"uid {os.geteuid()}" in reason and "MLREPO_SANDBOX_UID_LEASE_DIR" in reason
