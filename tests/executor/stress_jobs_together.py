"""Stress runs of in-process jobs, outside the suite (the name keeps pytest from collecting it): run it
on purpose, repeatedly, ideally with the CPUs busy, e.g.

    for i in 1 2; do yes > /dev/null & done          # two CPU hogs; kill them by pid afterwards
    MLREPO_STRESS_ROUNDS=5 pytest tests/executor/stress_jobs_together.py -s -rA

- jobs submitted together through the real API (uvicorn, the in-process queue, real bwrap sandboxes in
  cgroups) on SQLite and PostgreSQL: every round, each job must end within a minute and leave no cgroup;
  it prints the round's slowest request and longest event-loop stall;
- sandboxes cancelled at random moments (a cancelled job, a server stopping): each run must end and
  leave no cgroup.

The regression tests that force each interleaving found here are in test_usage_and_reviews.py (deadlock),
test_jobs.py (a finish that meets a database error), test_process.py and test_cgroups.py (cancels).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from pathlib import Path

import httpx
from executor_support import publish_model
from test_api_jobs import MODEL, RUN, people, server  # noqa: F401

from executor.cgroups import RunGroups, detect
from executor.runtimes import BwrapRuntime, Limits, Package, RunRequest
from search.embeddings import Encoder

ROUNDS = int(os.environ.get("MLREPO_STRESS_ROUNDS", "3"))
JOBS = int(os.environ.get("MLREPO_STRESS_JOBS", "6"))
JOB_DEADLINE_S = 60.0
STATUS = "query($id: ID!) { job(id: $id) { status error } }"


def groups_left() -> list[Path]:
    tree = detect()
    assert tree is not None, "no cgroups here"
    return [d for p in tree.parents if p.exists() for d in p.glob(f"run-{os.getpid()}-*")]


class LoopStalls:
    """The longest time the event loop went without running a tick (a thread watches it)."""

    def __init__(self) -> None:
        self.last_tick = time.monotonic()
        self.worst = 0.0
        self._stop = threading.Event()

    async def __aenter__(self) -> LoopStalls:
        self._ticking = asyncio.create_task(self._tick())
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        self._ticking.cancel()

    async def _tick(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(0.05)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self.worst = max(self.worst, time.monotonic() - self.last_tick)


async def test_jobs_submitted_together_all_end(server, encoder: Encoder) -> None:  # noqa: F811
    address, settings, app = server
    # The model loaded, as in a server up for a while: the session's model loads on first use, and here
    # that first use came from the event loop (a job's usage update teaching query understanding a new
    # label), which it stalled for 10-25 s under two CPU hogs.
    await asyncio.to_thread(encoder.encode_documents, ["warm up"])
    who = await people(app)
    catalog = app.state.services.catalog
    models = [
        (await publish_model(settings, catalog, who["producer"][0], MODEL, name=f"m{i}")).listing_id
        for i in range(2)
    ]
    tokens = [who["alice"][1], who["bob"][1]]
    slowest = 0.0

    async def gql(query: str, variables: dict, token: str) -> dict:
        nonlocal slowest
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as http:
            response = await http.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            )
        slowest = max(slowest, time.monotonic() - started)
        return response.json()

    async def submit(i: int) -> tuple[str, str]:
        token = tokens[(i // 2) % 2]
        body = await gql(RUN, {"input": {"listingId": models[i % 2], "records": ["a"]}}, token)
        assert not body.get("errors"), body
        return body["data"]["runJob"]["id"], token

    async with LoopStalls() as stalls:
        for round_no in range(ROUNDS):
            started, slowest, stalls.worst = time.monotonic(), 0.0, 0.0
            pending = dict(await asyncio.gather(*(submit(i) for i in range(JOBS))))
            statuses: dict[str, dict] = {}
            while pending and time.monotonic() - started < JOB_DEADLINE_S:
                await asyncio.sleep(0.2)
                for job_id, token in list(pending.items()):
                    statuses[job_id] = (await gql(STATUS, {"id": job_id}, token))["data"]["job"]
                    if statuses[job_id]["status"] not in ("QUEUED", "RUNNING"):
                        del pending[job_id]
            failed = sum(s["status"] != "SUCCEEDED" for s in statuses.values())
            print(
                f"round {round_no}: {time.monotonic() - started:.1f} s, unfinished {len(pending)}, "
                f"failed {failed}, slowest request {slowest:.2f} s, longest loop stall {stalls.worst:.2f} s"
            )
            assert not pending, {job_id: statuses.get(job_id) for job_id in pending}
            assert groups_left() == []


async def test_cancelled_sandboxes_end_and_leave_no_groups(bwrap_runtime: BwrapRuntime, tmp_path) -> None:
    code = tmp_path / "pkg"
    code.mkdir()
    (code / "main.py").write_text("import time\ntime.sleep(5)\n")
    package = Package(entrypoint=("python3", "main.py"), code_dir=code)
    leaks = []
    for round_no in range(ROUNDS * 30):
        runs = [
            asyncio.create_task(bwrap_runtime.run(package, RunRequest(command=package.entrypoint), Limits()))
            for _ in range(3)
        ]
        await asyncio.sleep(random.uniform(0, 0.15))
        for run in runs:
            run.cancel()
        _, hung = await asyncio.wait(runs, timeout=15)
        assert not hung, f"round {round_no}: {len(hung)} cancelled run(s) still running after 15 s"
        for _ in range(50):  # a group being made when its run was cancelled is removed once made
            if not groups_left():
                break
            await asyncio.sleep(0.05)
        if left := groups_left():
            leaks.append(round_no)
            for group in left:
                RunGroups((group,), group, "").remove()
    print(f"{ROUNDS * 30} rounds of 3 cancelled sandboxes: groups left behind in {len(leaks)}")
    assert leaks == []
