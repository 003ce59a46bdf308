"""Sandbox uids are leased host-wide: REAL bwrap sandboxes started at once from two processes never run
as one uid, a crashed holder's uid is free again, and a sandbox finding the range used up says so."""

from __future__ import annotations

import asyncio
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
