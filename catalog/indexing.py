"""Keeps the search index a faithful projection of the ``listings`` table.

The database is the truth; the index is rebuilt from it at startup (embeddings are stored in the rows, so
no re-encoding is needed) and after ``mlrepo reindex``. Writes through ``ListingService`` update the index
inside the same transaction. Other processes (the worker records usage and metrics) only write rows, so a
process holding an index calls ``sync()`` — cheap and throttled — to pick up rows changed since its last
look (by ``updated_at``, with an overlap window because transactions commit out of timestamp order), and
notices deletions when the row count and its own count disagree. Until then this process's searches see
the other process's change late (``catalog.search_service`` says how late).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Connection, Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.clock import as_utc
from catalog.listing_view import embedding_text, project, vector_bytes
from infra.db import Database
from infra.tables import Listing, ListingShare, utcnow
from search.embeddings import Encoder
from search.types import IndexedListing, SearchBackend

logger = logging.getLogger("mlrepo.catalog")

LOAD_BATCH = 2000
ENCODE_BATCH = 64
SYNC_INTERVAL_S = 1.0
DELETION_CHECK_INTERVAL_S = 10.0  # deletions by other processes are rare; counting rows is not free
# A row committed this long after its updated_at was stamped would be missed; transactions are short.
SYNC_OVERLAP = timedelta(seconds=30)


SHARES_PER_QUERY = 500  # ids per IN (...) list


def _shares_statements(ids: Sequence[str]) -> Iterator[Select[tuple[str, str]]]:
    for start in range(0, len(ids), SHARES_PER_QUERY):
        chunk = list(ids[start : start + SHARES_PER_QUERY])
        columns = (ListingShare.listing_id, ListingShare.account_id)
        yield select(*columns).where(ListingShare.listing_id.in_(chunk))


def _add_shares(found: dict[str, list[str]], rows: Iterable[Any]) -> None:
    for listing_id, account_id in rows:
        found.setdefault(listing_id, []).append(account_id)


async def shares_of(session: AsyncSession, ids: Sequence[str]) -> dict[str, list[str]]:
    """Account ids each listing is shared with (read in the caller's transaction)."""
    found: dict[str, list[str]] = {}
    for statement in _shares_statements(ids):
        _add_shares(found, await session.execute(statement))
    return found


def shares_read(connection: Connection, ids: Sequence[str]) -> dict[str, list[str]]:
    """``shares_of`` on a synchronous connection (``Database.read``)."""
    found: dict[str, list[str]] = {}
    for statement in _shares_statements(ids):
        _add_shares(found, connection.execute(statement))
    return found


class IndexListener(Protocol):
    """Something derived from the index projections (the ranker's query understanding)."""

    def rebuild(self, listings: Iterable[IndexedListing]) -> None: ...

    def update(self, upserted: Iterable[IndexedListing] = (), removed: Iterable[str] = ()) -> None: ...


@dataclass
class IndexChanges:
    """Rows a transaction changed, to be projected into the index just before it commits."""

    rows: dict[str, Listing] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    def put(self, *rows: Listing) -> None:
        for row in rows:
            self.rows[row.id] = row
            self.removed.discard(row.id)

    def remove(self, *ids: str) -> None:
        for listing_id in ids:
            self.rows.pop(listing_id, None)
            self.removed.add(listing_id)


class ListingIndex:
    """The catalog's handle on the search backend and the encoder."""

    def __init__(self, db: Database, backend: SearchBackend | None, encoder: Encoder) -> None:
        """``backend=None``: a process that only writes rows (the worker, a CLI import while ``serve``
        runs — the embedded index has one writer); processes holding an index pick the rows up by sync."""
        self.db = db
        self.backend = backend
        self.encoder = encoder
        # id -> updated_at of the row version in the index (None: unknown, re-read at the next sync)
        self._seen: dict[str, datetime | None] = {}
        self._high_water: datetime | None = None  # None: the next sync reads every row (a repair)
        self._read_at: datetime | None = None  # when the last complete read of changed rows began
        self._last_sync = 0.0
        self._last_deletion_check = 0.0
        self._sync_lock = asyncio.Lock()
        self.listeners: list[IndexListener] = []
        # Awaited with the projections before each incremental write (not a rebuild), off the event loop's
        # critical path: slow work a listener would otherwise do inside the write (embedding a new label).
        self.preparers: list[Callable[[Sequence[IndexedListing]], Awaitable[None]]] = []

    # ------------------------------------------------------------------ encoding

    def encode_rows(self, rows: Sequence[Listing]) -> np.ndarray:
        """One batched encode for many rows (imports depend on batching for throughput)."""
        return self.encoder.encode_documents([embedding_text(r) for r in rows], batch_size=ENCODE_BATCH)

    async def embed(self, rows: Sequence[Listing]) -> None:
        """Compute and store embeddings on ``rows`` (off the event loop: encoding is CPU-bound)."""
        if not rows:
            return
        vectors = await asyncio.to_thread(self.encode_rows, rows)
        for row, vector in zip(rows, vectors, strict=True):
            row.embedding = vector_bytes(vector)
            row.embedding_model = self.encoder.model_name

    # ------------------------------------------------------------------ writes (called inside transactions)

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[tuple[AsyncSession, IndexChanges]]:
        """A transaction whose listing changes reach the index together with the commit, or not at all.

        The body changes rows and notes them in ``IndexChanges``; after the body, the rows are flushed and
        projected into the index *before* the commit; if the commit (or anything else) fails, the index
        entries are put back as they were.
        """
        changes = IndexChanges()
        touched: list[str] = []
        previous: dict[str, IndexedListing] = {}
        try:
            async with self.db.session() as session:
                yield session, changes
                await session.flush()
                ids = [*changes.rows, *changes.removed]
                previous = self.current(ids) if ids else {}
                touched = ids  # only from here on can the index have changed: undo it on failure
                rows = list(changes.rows.values())
                shared = await shares_of(session, [r.id for r in rows if r.visibility == "shared"])
                if rows:
                    docs = [project(r, shared.get(r.id, ())) for r in rows]
                    await self.prepare(docs)
                    self.put(docs, [r.updated_at for r in rows])
                if changes.removed:
                    self.remove(list(changes.removed))
        except BaseException:
            if touched:
                self.restore(previous, touched)
            raise

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    async def prepare(self, docs: Sequence[IndexedListing]) -> None:
        """Let the listeners do their slow part of writing ``docs`` before ``put`` (``preparers``)."""
        if self.backend is None:
            return
        for preparer in self.preparers:
            await preparer(docs)

    def put(self, docs: Sequence[IndexedListing], updated_at: Iterable[datetime | None] = ()) -> None:
        if self.backend is None:
            return
        self.backend.upsert(docs)
        for listener in self.listeners:
            listener.update(docs, ())
        for doc, stamp in zip(docs, updated_at, strict=False):
            if stamp is not None:
                self._seen[doc.id] = as_utc(stamp)

    def remove(self, ids: Sequence[str]) -> None:
        if self.backend is None:
            return
        self.backend.delete(ids)
        for listener in self.listeners:
            listener.update((), ids)
        for listing_id in ids:
            self._seen.pop(listing_id, None)

    def version_of(self, listing_id: str) -> datetime | None:
        """The ``updated_at`` of the row version the index holds for ``listing_id`` (None if unknown)."""
        return self._seen.get(listing_id)

    def current(self, ids: Sequence[str]) -> dict[str, IndexedListing]:
        return self.backend.get(ids) if self.backend is not None else {}

    def restore(self, previous: dict[str, IndexedListing], ids: Sequence[str]) -> None:
        """Undo an index write whose transaction raised: put back what was there before.

        Raising does not prove that nothing committed (the connection may drop, or the task be cancelled,
        after the database committed), so the entries are then of an unknown version: the next sync
        compares every row version and runs the deletion check, and repairs whichever way it went."""
        if self.backend is None:
            return
        try:
            gone = [i for i in ids if i not in previous]
            if gone:
                self.remove(gone)
            if previous:
                self.put(list(previous.values()))
        except Exception:  # the next sync() repairs from the database; never mask the original error
            logger.exception("could not restore index entries %s; the next sync will repair them", ids)
        finally:
            for listing_id in ids:
                self._seen[listing_id] = None  # indexed or not, in an unknown version
            self._high_water = None
            self._last_deletion_check = 0.0

    # ------------------------------------------------------------------ bulk paths

    async def rebuild(
        self, progress: Callable[[int, int], None] | None = None, *, force: bool = False
    ) -> int:
        """Replace the index with every listing in the database (startup and ``mlrepo reindex``).

        The rows carry their embeddings, so this is a read and a bulk load, not a re-encode (rows without
        one, or embedded by another model, are encoded and stored back). At startup a backend may keep an
        index it judges current; ``force`` (``mlrepo reindex``, the operator's repair) rewrites it anyway.
        """
        if self.backend is None:
            return 0
        self._seen.clear()
        self._high_water = None
        started = utcnow()
        docs: list[IndexedListing] = []
        stamps: list[datetime] = []
        async for rows in self._changed_rows(None, progress):
            docs.extend(await self._project(rows))
            stamps.extend(as_utc(r.updated_at) for r in rows)
        await asyncio.to_thread(self._load_all, docs, force)
        self._seen = {doc.id: stamp for doc, stamp in zip(docs, stamps, strict=True)}
        # Rows other processes changed or deleted while the snapshot was read and loaded are stale in it
        # (with OpenSearch their own index writes went to the physical index the alias swap dropped, and
        # they believe them done): catch up now, not at some later sync — ``mlrepo reindex`` exits here.
        caught_up_at = utcnow()
        await self._load(started - SYNC_OVERLAP)
        self._read_at = caught_up_at
        await self._drop_deleted()
        return len(docs)

    def _load_all(self, docs: list[IndexedListing], force: bool = False) -> None:
        assert self.backend is not None
        load = getattr(self.backend, "load", None)
        if load is not None:  # the backends' bulk path (may reuse an index that is up to date)
            load(docs, rebuild=force)
        else:
            self.backend.clear()
            for start in range(0, len(docs), LOAD_BATCH):
                self.backend.upsert(docs[start : start + LOAD_BATCH])
        for listener in self.listeners:
            listener.rebuild(docs)

    async def load(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Fill the index at startup from the rows' stored embeddings."""
        return await self.rebuild(progress)

    async def sync(self, force: bool = False) -> int:
        """Pick up rows other processes changed; at most once per ``SYNC_INTERVAL_S`` unless forced."""
        if self.backend is None:
            return 0
        now = time.monotonic()
        if not force and now - self._last_sync < SYNC_INTERVAL_S:
            return 0
        async with self._sync_lock:
            if not force and time.monotonic() - self._last_sync < SYNC_INTERVAL_S:
                return 0
            self._last_sync = time.monotonic()
            started = utcnow()
            changed = await self._load(self._sync_since())
            self._read_at = started
            if force or time.monotonic() - self._last_deletion_check >= DELETION_CHECK_INTERVAL_S:
                self._last_deletion_check = time.monotonic()
                changed += await self._drop_deleted()
            return changed

    def _sync_since(self) -> datetime | None:
        """Where a sync starts reading (None: every row).

        A row committed after the last read began was stamped at most ``SYNC_OVERLAP`` before its
        commit (transactions are short, clocks roughly agree), and rows committed before were read then.
        So the window is the overlap plus the time since the last read, not the last 30 s of writes
        wherever they fell: after a bulk import those held thousands of rows, re-read every second.
        """
        if self._high_water is None or self._read_at is None:
            return None
        return self._read_at - SYNC_OVERLAP

    async def _drop_deleted(self) -> int:
        async with self.db.session() as session:
            total = await session.scalar(select(func.count()).select_from(Listing)) or 0
            if total == len(self._seen):
                return 0
            ids = set((await session.scalars(select(Listing.id))).all())
        gone = [i for i in self._seen if i not in ids]
        if gone:
            self.remove(gone)
        missing = ids - set(self._seen)
        if missing:  # rows committed with an updated_at older than the overlap window
            self._high_water = None
            return len(gone) + await self._load(None)
        return len(gone)

    async def _load(self, since: datetime | None) -> int:
        """Upsert rows changed since ``since`` (all rows when None) whose version the index lacks.

        Reads ids and versions first, so rows the index already holds (the overlap window) cost no
        row transfer.
        """
        query = select(Listing.id, Listing.updated_at).order_by(Listing.updated_at)
        if since is not None:
            query = query.where(Listing.updated_at >= since)
        async with self.db.session() as session:
            versions = (await session.execute(query)).all()
        stale = [listing_id for listing_id, stamp in versions if self._seen.get(listing_id) != as_utc(stamp)]
        if versions:
            stamp = as_utc(versions[-1][1])
            if self._high_water is None or stamp > self._high_water:
                self._high_water = stamp
        written = 0
        for start in range(0, len(stale), LOAD_BATCH):
            async with self.db.session() as session:
                rows = list(
                    await session.scalars(
                        select(Listing).where(Listing.id.in_(stale[start : start + LOAD_BATCH]))
                    )
                )
            if rows:
                docs = await self._project(rows)
                await self.prepare(docs)
                self.put(docs, [r.updated_at for r in rows])
                written += len(rows)
        return written

    async def _changed_rows(
        self, since: datetime | None, progress: Callable[[int, int], None] | None = None
    ) -> AsyncIterator[list[Listing]]:
        """Rows in ``updated_at`` order, in batches, advancing the high-water mark as they come."""
        query = select(Listing).order_by(Listing.updated_at, Listing.id)
        count_query = select(func.count()).select_from(Listing)
        if since is not None:
            query = query.where(Listing.updated_at >= since)
            count_query = count_query.where(Listing.updated_at >= since)
        async with self.db.session() as session:
            total = (await session.scalar(count_query) or 0) if progress else 0
            if progress:
                progress(0, total)
            done = 0
            result = await session.stream(query.execution_options(yield_per=LOAD_BATCH))
            async for partition in result.scalars().partitions(LOAD_BATCH):
                rows = list(partition)
                if not rows:
                    continue
                stamp = as_utc(rows[-1].updated_at)
                if self._high_water is None or stamp > self._high_water:
                    self._high_water = stamp
                yield rows
                done += len(rows)
                if progress:
                    progress(done, total)

    async def _project(self, rows: list[Listing]) -> list[IndexedListing]:
        stale = [r for r in rows if not r.embedding or r.embedding_model != self.encoder.model_name]
        if stale:  # rows written without an embedding, or by another model: encode and store them
            await self.embed(stale)
            async with self.db.session() as session:
                for row in stale:
                    await session.execute(
                        update(Listing)
                        .where(Listing.id == row.id)
                        # keep updated_at: this is bookkeeping, not a change other syncs need to see
                        .values(
                            embedding=row.embedding,
                            embedding_model=row.embedding_model,
                            updated_at=row.updated_at,
                        )
                    )
        async with self.db.session() as session:
            shares = await shares_of(session, [r.id for r in rows if r.visibility == "shared"])
        return [project(r, shares.get(r.id, ())) for r in rows]
