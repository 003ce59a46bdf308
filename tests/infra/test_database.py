"""The migrated schema works the same on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Connection, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from infra.db import Database
from infra.settings import Settings
from infra.tables import Account, Listing


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
