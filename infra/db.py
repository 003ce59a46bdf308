"""Async database engine and sessions for SQLite (embedded default) and PostgreSQL (server default)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from infra.settings import Settings

T = TypeVar("T")

logger = logging.getLogger("mlrepo.db")

# SQLSTATEs of a server that is not there for now: class 08 (connection exception) and the operator
# interventions a restart causes (admin shutdown, crash shutdown, "the database system is starting up").
UNREACHABLE_SQLSTATE_CLASS = "08"
UNREACHABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the database server cannot be reached right now — down,
    restarting, its connection cut — rather than that a statement failed. The pool reconnects once the
    server is back (``pool_pre_ping``), so such a failure is worth a retry, not a bug report.

    asyncpg raises the socket's own error when it cannot connect (SQLAlchemy wraps only DBAPI errors):
    ``ConnectionRefusedError``, a failed name lookup, or an ``OSError`` gathering one per address."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | socket.gaierror):
            return True
        if isinstance(current, OSError) and str(current).startswith("Multiple exceptions: "):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and (
            state.startswith(UNREACHABLE_SQLSTATE_CLASS) or state in UNREACHABLE_SQLSTATES
        ):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


async def retry_while_unreachable(
    work: Callable[[], Awaitable[T]],
    budget_s: float,
    what: str,
    first_pause_s: float = 0.1,
    longest_pause_s: float = 2.0,
) -> T:
    """``work()``, tried again, with pauses doubling up to ``longest_pause_s``, while it fails because
    the database cannot be reached (``is_unreachable``), for up to ``budget_s``; then its error is raised.
    Any other error is raised at once.

    For a write that must not be lost to a short outage (a restart, a failover) — a finished job's
    result — when the caller has nothing better to do than wait. ``work`` must be safe to repeat: a
    commit whose acknowledgement was lost may have landed."""
    deadline = time.monotonic() + budget_s
    pause = first_pause_s
    while True:
        try:
            return await work()
        except Exception as exc:
            if not is_unreachable(exc) or time.monotonic() + pause > deadline:
                raise
            logger.warning("%s: the database is unreachable (%s); retrying in %.1f s", what, exc, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, longest_pause_s)


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    """WAL lets the API read while a worker writes; foreign keys are off in SQLite unless asked for."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - driver callback
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


WRITE_STATEMENTS = ("INSERT", "UPDATE", "DELETE", "REPLACE")
HOLDS_WRITER = "mlrepo_holds_writer"  # in a connection's info while its transaction holds the writer turn
SELF_WAIT = "database is locked by this task's own open transaction (nested writing sessions)"


class SqliteWriterQueue:
    """One writing transaction at a time per process, in arrival order.

    SQLite has one write lock per file. A connection that finds it taken sleeps in the busy handler and
    polls again (sleeps growing to 100 ms), so a waiting writer keeps losing to writers that arrive while
    it sleeps: with 10 in-process jobs (heartbeat 0.2 s) and requests (``benchmarks.sqlite_writes``),
    waits reached 1.2 s while no transaction held the lock for more than 0.7 s, and a wait past the busy
    timeout fails with "database is locked". Here a transaction takes a turn (a FIFO ``asyncio.Lock``)
    before its first write and gives it back when it ends, so this process's writers queue instead of
    polling (p99 wait 0.2-0.6 s before, ~20 ms after); the busy handler still waits for writers of other
    processes (the worker, a CLI import). A transaction that only reads takes no turn. A turn not granted
    within the busy timeout fails as SQLite would, and a task that wants a second turn while its own
    transaction holds one fails at once: it could only wait for itself.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # Made on first use in the loop that uses it; a Database used again under a new event loop (a CLI
        # command's second asyncio.run) gets a new one, as its connections are new too.
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._holder: asyncio.Task | None = None

    def attach(self, engine: AsyncEngine) -> None:
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._before_execute)
        event.listen(sync, "commit", self._release)
        event.listen(sync, "rollback", self._release)
        event.listen(sync.pool, "checkin", self._release_record)  # a connection dropped mid-transaction

    def _before_execute(self, conn: Connection, _cursor, statement: str, *_args) -> None:
        if conn.info.get(HOLDS_WRITER) or not statement.lstrip()[:7].upper().startswith(WRITE_STATEMENTS):
            return
        try:
            await_only(self._take_turn())
        except TimeoutError:
            raise OperationalError(statement, None, sqlite3.OperationalError("database is locked")) from None
        conn.info[HOLDS_WRITER] = True

    async def _take_turn(self) -> None:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop, self._holder = asyncio.Lock(), loop, None
        if self._holder is not None and self._holder is task:
            raise OperationalError("a second writing transaction", None, sqlite3.OperationalError(SELF_WAIT))
        async with asyncio.timeout(self.timeout_s):  # a cancelled acquire leaves the lock free
            await self._lock.acquire()
        self._holder = task

    def _release(self, conn: Connection) -> None:
        try:
            info = conn.info
        except (DBAPIError, PendingRollbackError):  # invalidated: the pool's checkin gives the turn back
            return
        self._give_back(info)

    def _release_record(self, _dbapi_connection, record) -> None:
        self._give_back(record.info)

    def _give_back(self, info: dict) -> None:
        if info.pop(HOLDS_WRITER, False) and self._lock is not None and self._lock.locked():
            self._holder = None
            self._lock.release()


def _sqlite_reader(url: str, busy_timeout_ms: int) -> Engine | None:
    """A synchronous engine on the same SQLite file whose connections cannot write; None for an
    in-memory database, which another engine could not see."""
    sync_url = make_url(url).set(drivername="sqlite")
    if sync_url.database in (None, "", ":memory:"):
        return None
    engine = create_engine(sync_url)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - driver callback
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    return engine


class Database:
    """Owns one engine and its session factory; one per process (or per test)."""

    def __init__(self, url: str, echo: bool = False, busy_timeout_s: float = 10.0) -> None:
        """``busy_timeout_s``: how long a SQLite statement waits for the lock another connection holds."""
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict = {"echo": echo}
        if not self.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine, round(busy_timeout_s * 1000))
            SqliteWriterQueue(busy_timeout_s).attach(self.engine)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._reader = _sqlite_reader(url, round(busy_timeout_s * 1000)) if self.is_sqlite else None
        self._reader_thread: ThreadPoolExecutor | None = None  # started by the first read

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        if not settings.database_url:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings.resolved_database_url, busy_timeout_s=settings.sqlite_busy_timeout_s)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on any error."""
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def read(self, work: Callable[[Connection], T]) -> T:
        """What ``work`` returns, given a connection that only reads (rows, not ORM objects: no session,
        identity map or commit), for hot read paths such as hydrating a search page.

        Why not the async engine for SQLite: aiosqlite runs each driver call on its connection's thread,
        and every await crosses threads; a page of 10 listings took ~5 crossings, 1.7 ms in-process and
        ~3.7 ms inside the server at 100k listings, against 0.13 ms for the same query on a plain sqlite3
        connection. So on SQLite ``work`` runs on a synchronous engine on a reader thread of its own (one
        crossing), whose connections are ``query_only``. PostgreSQL's asyncpg crosses no thread: ``work``
        runs through ``AsyncConnection.run_sync`` in a READ ONLY transaction. Either way a write fails.
        """
        if self._reader is None:
            async with self.engine.connect() as connection:
                if not self.is_sqlite:
                    await connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                return await connection.run_sync(work)
        if self._reader_thread is None:
            self._reader_thread = ThreadPoolExecutor(1, "db-reader")
        return await asyncio.wrap_future(self._reader_thread.submit(self._read_here, self._reader, work))

    @staticmethod
    def _read_here(engine: Engine, work: Callable[[Connection], T]) -> T:
        with engine.connect() as connection:
            return work(connection)

    async def dispose(self) -> None:
        await self.engine.dispose()
        # Like the async engine, the database stays usable: a later read starts a new reader thread.
        thread, self._reader_thread = self._reader_thread, None
        if self._reader is not None and thread is not None:
            await asyncio.wrap_future(thread.submit(self._reader.dispose))
            thread.shutdown()
