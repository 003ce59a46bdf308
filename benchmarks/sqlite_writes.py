"""How long SQLite's write lock is held, and waited for, when jobs run inside the API process.

``make run`` serves on SQLite and runs up to ``job_max_concurrent`` jobs in the API process; every writer
(job claim, heartbeat, progress, finish with its usage and index update, search-log batches, usage events,
reviews, a token's first use) shares one write lock. This drives the real services of one process at once
— ``--jobs`` jobs that claim, report progress and heartbeats and finish, next to a stream of API writes
and searches — and prints, per writer, the wall time of the call and, per transaction, how long it waited
for the lock (its first write statement) and held it (first write to commit). Lock figures come from
engine events on the process's own connections.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.sqlite_writes --seconds 30 --jobs 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.synthetic_catalog import queries, write_listings

WRITE_PREFIXES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
RUN = os.urandom(3).hex()  # account names of this run (a data dir may be measured again)


class LockClock:
    """Per connection: when its transaction's first write was sent, when it came back, when it ended."""

    def __init__(self) -> None:
        self.pending: dict[int, float] = {}
        self.holding: dict[int, tuple[float, str]] = {}
        self.first_write: dict[int, str] = {}
        self.waits: list[float] = []
        self.holds: list[float] = []
        self.holds_by_first_write: dict[str, list[float]] = defaultdict(list)

    def attach(self, engine: Any) -> None:
        from sqlalchemy import event

        sync = engine.sync_engine

        @event.listens_for(sync, "before_cursor_execute", insert=True)  # before the writer queue
        def _before(conn, _cursor, statement, *_args) -> None:
            key = id(conn)
            if key not in self.holding and statement.lstrip().upper().startswith(WRITE_PREFIXES):
                self.pending[key] = time.perf_counter()
                self.first_write[key] = " ".join(statement.split()[:3])

        @event.listens_for(sync, "after_cursor_execute")
        def _after(conn, *_args) -> None:
            key = id(conn)
            started = self.pending.pop(key, None)
            if started is not None:
                now = time.perf_counter()
                self.waits.append(now - started)
                self.holding[key] = (now, self.first_write.pop(key, "?"))

        @event.listens_for(sync, "handle_error")
        def _error(context) -> None:
            started = self.pending.pop(id(context.connection), None)
            if started is not None:
                self.waits.append(time.perf_counter() - started)

        def _end(conn) -> None:
            held = self.holding.pop(id(conn), None)
            if held is not None:
                self.holds.append(time.perf_counter() - held[0])
                self.holds_by_first_write[held[1]].append(self.holds[-1])

        event.listen(sync, "commit", _end)
        event.listen(sync, "rollback", _end)


class Calls:
    """Wall times and failures of each writer's calls."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)

    async def timed(self, name: str, call: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call
        except Exception as exc:
            self.errors[name].append(f"{type(exc).__name__}: {str(exc)[:120]}")
            return None
        finally:
            self.times[name].append(time.perf_counter() - started)


def figures(values: list[float]) -> str:
    if not values:
        return "n=0"
    ordered = sorted(values)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    top = ordered[-1]
    return f"n={len(ordered):5d} p50={p50 * 1000:8.1f} ms p99={p99 * 1000:8.1f} ms max={top * 1000:8.1f} ms"


def timed_index_puts(index: Any) -> list[float]:
    """Durations of the index updates ``ListingIndex.atomic`` makes before its commit."""
    durations: list[float] = []
    put = index.put

    def timed(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        put(*args, **kwargs)
        durations.append(time.perf_counter() - started)

    index.put = timed
    return durations


async def prepare(data_dir: Path, listings: int) -> None:
    from catalog.app import CatalogApp
    from infra.migrate import upgrade_async
    from infra.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=None, redis_url=None)
    await upgrade_async(settings)
    source = write_listings(data_dir / "listings.jsonl", listings)
    async with await CatalogApp.open(settings, with_index=False) as catalog:
        report = await catalog.importer.import_file(source, batch_size=256)
    if report.errors:
        raise SystemExit(f"synthetic data did not import cleanly: {report.errors[:3]}")


async def run_job(jobs: Any, calls: Calls, owner: str, listing_id: str, stop: float, pace_s: float) -> None:
    """One in-process job after another: claim, heartbeats, progress per batch, finish with its usage."""
    from catalog.enums import JobStatus
    from executor.job_claims import claim_of
    from infra.tables import Job, UsageEvent

    rng = random.Random(listing_id)
    while time.perf_counter() < stop:
        async with jobs.db.session() as session:
            row = Job(owner_id=owner, listing_id=listing_id, task="inference", status="queued")
            session.add(row)
        claimed = await calls.timed("job claim", jobs.claim(row.id))
        if claimed is None:
            continue
        heartbeat = asyncio.create_task(jobs._heartbeat(claim_of(claimed), None))
        try:
            for batch in range(rng.randint(3, 12)):
                await asyncio.sleep(pace_s * rng.uniform(0.5, 1.5))
                progress = {"batches_done": batch + 1, "records_done": (batch + 1) * 16}
                await calls.timed("job progress", jobs.report_progress(claimed, progress))
        finally:
            heartbeat.cancel()
        use = UsageEvent(listing_id=listing_id, account_id=owner, kind="inference", success=True)
        await calls.timed("job finish", jobs.finish(row.id, JobStatus.SUCCEEDED, uses=[use]))


async def api_stream(
    catalog: Any, calls: Calls, listing_ids: list[str], stop: float, pace_s: float, stream: int
) -> None:
    """What requesters do meanwhile: new accounts' first requests, searches, usage events, reviews."""
    from catalog.search_service import SearchRequest

    rng = random.Random(stream)
    texts = queries(2000)
    step = 0
    while time.perf_counter() < stop:
        step += 1
        account = await catalog.accounts.create(f"user-{RUN}-{stream}-{step}", "requester")
        issued = await catalog.accounts.create_token(account.id)
        actor = await calls.timed("token first use", catalog.accounts.authenticate(issued.secret))
        if actor is None:
            actor = account.as_actor()
        request = SearchRequest(text=texts[step % len(texts)])
        await calls.timed("search", catalog.search.search(actor, request))
        listing_id = rng.choice(listing_ids)
        await calls.timed("usage view", catalog.usage.record(listing_id, "view", account_id=actor.account_id))
        await calls.timed("review", catalog.reviews.add(actor, listing_id, rng.randint(1, 5), "fine"))
        await asyncio.sleep(pace_s * rng.uniform(0.5, 1.5))


async def measure(data_dir: Path, seconds: float, job_count: int, heartbeat_s: float) -> None:
    from sqlalchemy import select

    from catalog.app import CatalogApp
    from catalog.search_service import SearchRequest
    from executor.jobs import JobService
    from infra.settings import Settings
    from infra.tables import Listing

    settings = Settings(data_dir=data_dir, database_url=None, redis_url=None, job_heartbeat_s=heartbeat_s)
    async with await CatalogApp.open(settings) as catalog:
        clock = LockClock()
        clock.attach(catalog.db.engine)
        jobs = JobService(settings, catalog)
        index_puts = timed_index_puts(catalog.index)
        producer = await catalog.accounts.create(f"runner-{RUN}", "admin")
        async with catalog.db.session() as session:
            listing_ids = list((await session.scalars(select(Listing.id).limit(50))).all())
        calls = Calls()
        await catalog.search.search(producer.as_actor(), SearchRequest(text="warm up"))  # loads the model
        stop = time.perf_counter() + seconds
        workers = [
            run_job(jobs, calls, producer.id, listing_ids[i % len(listing_ids)], stop, pace_s=0.3)
            for i in range(job_count)
        ]
        workers += [api_stream(catalog, calls, listing_ids, stop, pace_s=0.1, stream=n) for n in range(2)]
        await asyncio.gather(*workers)
        await catalog.demand.flush()
    print(f"{job_count} in-process jobs, heartbeat {heartbeat_s} s, {seconds:.0f} s")
    for name in sorted(calls.times):
        print(f"  {name:16s} {figures(calls.times[name])} errors={len(calls.errors[name])}")
        for error in calls.errors[name][:2]:
            print(f"      {error}")
    print(f"  index put        {figures(index_puts)} (inside the transaction, lock held)")
    print(f"  lock wait        {figures(clock.waits)}")
    print(f"  lock hold        {figures(clock.holds)}")
    print("  lock hold by the transaction's first write:")
    for name, holds in sorted(clock.holds_by_first_write.items(), key=lambda item: -max(item[1])):
        print(f"    {name[:40]:40s} {figures(holds)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--heartbeat", type=float, default=None, help="job_heartbeat_s (default: settings)")
    parser.add_argument("--listings", type=int, default=300)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    from infra.settings import Settings

    heartbeat = args.heartbeat if args.heartbeat is not None else Settings().job_heartbeat_s
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="sqlite-writes-"))
    if not (data_dir / "mlrepo.db").exists():
        asyncio.run(prepare(data_dir, args.listings))
    asyncio.run(measure(data_dir, args.seconds, args.jobs, heartbeat))


if __name__ == "__main__":
    main()
