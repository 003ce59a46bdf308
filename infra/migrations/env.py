"""Alembic environment: runs migrations over the async engine of the configured URL."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import context
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.tables import Base

target_metadata = Base.metadata

# Any constant both processes agree on: the key of the PostgreSQL advisory lock migrations hold.
MIGRATION_LOCK_KEY = 0x6D6C7265706F  # "mlrepo"
SQLITE_LOCK_SUFFIX = ".migrate-lock"  # beside the database file: mlrepo.db.migrate-lock


@contextlib.contextmanager
def sqlite_migration_lock(url: str) -> Iterator[None]:
    """For a SQLite file, an exclusive lock on a file beside it, held while migrating (PostgreSQL's
    migrations take an advisory lock instead, in ``_run``). Processes started together on a new file each
    found it empty and created the tables; all but one failed ("table accounts already exists"): each read
    the empty schema before another wrote it. Now the next one in finds the schema current. It waits as
    long as the migration holding the lock takes."""
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    path = Path(database)
    with open(path.with_name(path.name + SQLITE_LOCK_SUFFIX), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two `mlrepo serve` (or a `mlrepo migrate` beside one) started together each saw no
        # alembic_version table and created it: the loser failed on a duplicate key and did not start.
        # Held until the migration transaction commits, so the next one finds the schema current.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


def run_migrations_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    # Called from sync code (alembic command API); there is no running loop here.
    with sqlite_migration_lock(context.config.get_main_option("sqlalchemy.url") or ""):
        asyncio.run(_run_async())
