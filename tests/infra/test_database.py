"""The migrated schema works the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import Connection, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from infra.db import Database, is_unreachable, retry_while_unreachable
from infra.settings import Settings
from infra.tables import Account, Listing
from tests.services import free_port


async def test_migrated_schema_round_trips_json_and_binary(settings: Settings) -> None:
    db = Database.from_settings(settings)
    try:
        async with db.session() as session:
            owner = Account(name="ada", role="producer")
            session.add(owner)
            await session.flush()
            session.add(
                Listing(
                    kind="model",
                    name="sentiment",
                    category="Natural Language Processing",
                    subcategories=["Text Classification"],
                    tags=["sentiment", "reviews"],
                    resources={"cpu": 1, "memory_mb": 512, "gpu": 0},
                    embedding=b"\x00\x01\x02",
                    owner_id=owner.id,
                )
            )
        async with db.session() as session:
            listing = (await session.execute(select(Listing))).scalar_one()
            assert listing.subcategories == ["Text Classification"]
            assert listing.resources == {"cpu": 1, "memory_mb": 512, "gpu": 0}
            assert listing.embedding == b"\x00\x01\x02"
            assert listing.visibility == "public"
    finally:
        await db.dispose()


async def test_foreign_keys_are_enforced(settings: Settings) -> None:
    db = Database.from_settings(settings)
    try:
        with pytest.raises(IntegrityError):
            async with db.session() as session:
                session.add(Listing(kind="model", name="orphan", category="x", owner_id="does-not-exist"))
    finally:
        await db.dispose()


async def test_read_sees_committed_writes_and_refuses_to_write(settings: Settings) -> None:
    """``Database.read`` (search pages are hydrated through it) reads the latest commit, on SQLite from a
    reader thread of its own, and a write through it fails on every database."""
    db = Database.from_settings(settings)
    try:
        async with db.session() as session:
            session.add(Account(name="ada", role="producer"))

        def names(connection: Connection) -> tuple[list[str], str]:
            found = list(connection.execute(select(Account.name)).scalars())
            return found, threading.current_thread().name

        found, thread = await db.read(names)
        assert found == ["ada"]
        if db.is_sqlite:
            assert thread.startswith("db-reader")

        def write(connection: Connection) -> None:
            connection.execute(insert(Account).values(id="x", name="eve", role="producer"))

        with pytest.raises(DBAPIError, match=r"(?i)read.?only"):
            await db.read(write)
        assert (await db.read(names))[0] == ["ada"]
        await db.dispose()  # usable afterwards, like the engine itself
        assert (await db.read(names))[0] == ["ada"]
    finally:
        await db.dispose()


async def test_read_on_an_in_memory_sqlite_database_uses_its_one_engine() -> None:
    """Another engine could not see an in-memory database, so ``read`` goes through the async one."""
    db = Database("sqlite+aiosqlite:///:memory:")
    try:
        assert await db.read(lambda connection: connection.execute(text("select 42")).scalar()) == 42
    finally:
        await db.dispose()


async def test_writers_of_one_process_take_turns_instead_of_starving(settings: Settings) -> None:
    """Each writer holds the write lock across an await (as a job's transaction does while the event
    loop serves others) and starts its next transaction at once. On SQLite a waiter polls the lock and
    keeps losing it to the writer that just committed, until its busy timeout fails it with "database is
    locked"; taking turns in arrival order, every wait is a few holds long and every write lands."""
    db = Database.from_settings(settings.model_copy(update={"sqlite_busy_timeout_s": 1.0}))
    writers, rounds = 8, 6
    try:
        async with db.session() as session:
            session.add(Account(name="ada", role="producer", quota_cpu=0.0))

        async def write(rounds_left: int) -> None:
            for _ in range(rounds_left):
                async with db.session() as session:
                    await session.execute(
                        update(Account).where(Account.name == "ada").values(quota_cpu=Account.quota_cpu + 1)
                    )
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(write(rounds) for _ in range(writers)))
        async with db.session() as session:
            assert await session.scalar(select(Account.quota_cpu)) == writers * rounds
    finally:
        await db.dispose()


async def test_a_transaction_that_only_reads_does_not_wait_for_writers(settings: Settings) -> None:
    db = Database.from_settings(settings.model_copy(update={"sqlite_busy_timeout_s": 1.0}))
    try:
        async with db.session() as session:
            session.add(Account(name="ada", role="producer", quota_cpu=0.0))
        async with db.session() as writer:
            await writer.execute(update(Account).values(quota_cpu=1.0))
            async with db.session() as reader:  # same task, lock held: a read must not queue behind it
                assert await reader.scalar(select(Account.quota_cpu)) == 0.0
    finally:
        await db.dispose()


async def test_a_write_waiting_on_its_own_transaction_fails_instead_of_hanging(
    sqlite_settings: Settings,
) -> None:
    """A second session that writes while the task's first one holds the lock can never get its turn:
    it fails at once (SQLite would wait out its busy timeout, stalling every writer of the process), and
    the first transaction still commits."""
    db = Database.from_settings(sqlite_settings.model_copy(update={"sqlite_busy_timeout_s": 0.3}))
    try:
        async with db.session() as outer:
            outer.add(Account(name="ada", role="producer"))
            await outer.flush()
            with pytest.raises(DBAPIError, match="database is locked"):
                async with db.session() as inner:
                    inner.add(Account(name="bob", role="producer"))
        async with db.session() as session:  # the turn was given back: writes go on
            session.add(Account(name="cy", role="producer"))
        async with db.session() as session:
            assert set(await session.scalars(select(Account.name))) == {"ada", "cy"}
    finally:
        await db.dispose()


def test_a_database_writes_again_under_a_new_event_loop(sqlite_settings: Settings) -> None:
    """The CLI may run several ``asyncio.run`` calls on one ``Database``: the writers' turns follow."""
    db = Database.from_settings(sqlite_settings)

    async def add(name: str) -> None:
        async with db.session() as session:
            session.add(Account(name=name, role="producer"))
        await asyncio.gather(*(bump(name) for _ in range(3)))  # contended: the lock binds to this loop
        await db.engine.dispose()

    async def bump(name: str) -> None:
        async with db.session() as session:
            await session.execute(update(Account).where(Account.name == name).values(quota_cpu=1.0))
            await asyncio.sleep(0.01)

    asyncio.run(add("ada"))
    asyncio.run(add("bob"))


async def test_a_writer_cancelled_while_holding_or_awaiting_its_turn_gives_it_back(
    sqlite_settings: Settings,
) -> None:
    """Job heartbeats are cancelled mid-transaction when their job ends; their turn must not leak."""
    db = Database.from_settings(sqlite_settings.model_copy(update={"sqlite_busy_timeout_s": 1.0}))
    holding = asyncio.Event()

    async def write(name: str, hold_s: float = 0.0) -> None:
        async with db.session() as session:
            session.add(Account(name=name, role="producer"))
            await session.flush()
            holding.set()
            await asyncio.sleep(hold_s)

    try:
        holder = asyncio.create_task(write("ada", hold_s=30))
        await holding.wait()
        waiter = asyncio.create_task(write("bob"))
        await asyncio.sleep(0.1)  # bob now awaits his turn
        for task in (waiter, holder):
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await write("cy")  # the turn is free: this write neither waits nor fails
        async with db.session() as session:
            assert set(await session.scalars(select(Account.name))) == {"cy"}
    finally:
        await db.dispose()


async def test_a_write_retried_while_the_database_is_unreachable_gives_up_after_its_budget() -> None:
    """``retry_while_unreachable`` waits out an outage for a bounded time only, then raises the error; a
    statement that fails for any other reason is not retried at all."""
    down = Database(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/mlrepo")  # nothing listens
    tries = 0

    async def write() -> None:
        nonlocal tries
        tries += 1
        async with down.session() as session:
            await session.execute(text("SELECT 1"))

    started = time.monotonic()
    try:
        with pytest.raises(OSError) as refused:
            await retry_while_unreachable(write, 0.6, "test write", first_pause_s=0.05, longest_pause_s=0.2)
    finally:
        await down.dispose()
    assert is_unreachable(refused.value) and tries >= 3
    assert 0.4 <= time.monotonic() - started < 5

    async def bad_statement() -> None:
        nonlocal tries
        tries += 1
        raise ValueError("not an outage")

    tries = 0
    with pytest.raises(ValueError):
        await retry_while_unreachable(bad_statement, 5.0, "test write")
    assert tries == 1
