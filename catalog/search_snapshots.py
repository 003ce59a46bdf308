"""Point-in-time paging: the ranked list behind a search, kept for its later pages (like a search_after PIT).

A search that has a next page keeps what it ranked — ids in order, each with its score and the parts that
explain it — under a snapshot id, for ``search_snapshot_ttl_s``. Its cursors name the snapshot and a
position in it, so a later page reads the list instead of searching again: a listing published, edited,
boosted or re-ranked in between cannot move from one page to another, and none repeats or is skipped.
Listings that became invisible to the requester are dropped when the page is hydrated, as on any page.

The snapshot lives in the database (``search_snapshots``), or in Redis when one is configured
(``catalog.snapshot_rows``), so every API process pages every other's searches. It is written off the
first page's path, in batches gathered for ``search_snapshot_batch_s`` (like the search log,
``catalog.demand``): a cursor comes back before its snapshot is stored, so a reader that does not find one
yet flushes its own queue and, for a cursor younger than the batch interval plus ``WRITE_GRACE_S``, waits
for another process's batch. Expired rows are purged by the writer (Redis expires them itself).

A text search's snapshot holds every candidate it ranked (``candidate_depth`` from each list, so a couple
of hundred). They are kept unexplained, in the search's order (by relevance, or by a field: the sort only
reorders the same candidates), as the numbers their explanations are built from
(``ranking.pending``: float64 columns packed as bytes, no JSON of floats), and each later page explains
its own results: packing explained entries, or even each candidate's ``reasons`` as JSON, cost about
1.5 ms of CPU per search, which set the p95 of search at catalog scale. Rows written by earlier versions
(zlib JSON, the later candidates with their ``reasons``) are still read, and explained the same way.

A facet-only search may match the whole catalog: its snapshot holds ``search_snapshot_chunk`` listings,
and paging past them appends the next chunk — the first listings of the current order that the snapshot
does not hold yet. Listings already held keep their place, so nothing repeats, and every visible listing
not yet held is still ahead, so nothing is skipped; a chunk appended later is ordered as of then.

Cursors are opaque (base64 of JSON) and signed with the snapshot's own secret (HMAC over snapshot id,
position and the request's fingerprint: ``infra.cursor_signing.mac``, as every cursor's), so a cursor
whose position was changed is refused rather than answered with a page the search never reached. A
snapshot belongs to the account that searched (or to anonymous callers): another account's cursor is
refused like an unknown one, without saying it exists.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from catalog.snapshot_rows import SnapshotRows
from infra.batching import BatchWriter
from infra.cursor_signing import mac, mac_matches
from infra.errors import BadInput, CursorExpired
from infra.settings import Settings
from infra.tables import SearchSnapshot, new_id, utcnow
from ranking.pending import PendingResults, is_packed, unpack
from ranking.types import Constraints, Interpretation, LabelGuess, RankedResult, ScorePart

logger = logging.getLogger("mlrepo.catalog")

CURSOR_PREFIX = "p1."
WRITE_GRACE_S = 2.0  # how long past the batch interval a reader waits for another process's write
POLL_S = 0.1  # each poll is one primary-key read
PURGE_EVERY_S = 60.0
NOT_ISSUED = "'after' is not a cursor this service issued to you; search again without it"


@dataclass(frozen=True, slots=True)
class Cursor:
    snapshot_id: str
    position: int
    issued_at: float  # epoch seconds: tells an expired snapshot from one not written yet
    mac: str


@dataclass(slots=True)
class Snapshot:
    """What a search ranked, as later pages read it (chunks concatenated in ``entries``)."""

    id: str
    account_id: str | None
    fingerprint: str
    total: int
    entries: list[RankedResult]  # explained (in rows of earlier versions, some with ``reasons`` only)
    expires_at: datetime
    secret: str = field(default_factory=lambda: secrets.token_hex(16))
    browse_order: str | None = None  # facet-only searches: the order further chunks are taken in
    exhausted: bool = True
    interpretation: Interpretation | None = None
    chunks: int = 1
    # A text search (by any sort) keeps its results unexplained instead of ``entries`` (each later
    # page explains its own, ``Ranker.explain_reasons``); until the snapshot is written, as the function
    # giving them and their count.
    pending: PendingResults | None = None
    later: tuple[Callable[[], PendingResults], int] | None = None

    @property
    def held(self) -> int:
        """How many ranked listings the snapshot holds (those still to be explained included)."""
        if self.later is not None:
            return self.later[1]
        return len(self.pending) if self.pending is not None else len(self.entries)

    def page(self, start: int, end: int) -> list[RankedResult]:
        """Entries ``start`` to ``end``; those not explained yet carry their ``reasons`` and no parts."""
        if self.pending is not None:
            return self.pending.results(start, end)
        return self.entries[start:end]

    def complete(self) -> Snapshot:
        """The snapshot with its pending results gathered (runs on the writer's thread)."""
        if self.later is not None:
            rest, _ = self.later
            self.pending = rest()
            self.later = None
        return self

    def cursor(self, position: int, issued_at: float) -> str:
        raw = json.dumps(
            {"s": self.id, "p": position, "t": int(issued_at), "m": self._mac(position)},
            separators=(",", ":"),
        ).encode()
        return CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _message(self, position: int) -> bytes:
        return f"{self.id}:{position}:{self.fingerprint}".encode()

    def _mac(self, position: int) -> str:
        return mac(self.secret.encode(), self._message(position))

    def check(self, cursor: Cursor, account_id: str | None, fingerprint: str, now: datetime) -> None:
        """BadInput unless ``cursor`` was issued by this snapshot, to this account, for this request."""
        if self.account_id != account_id:
            raise BadInput(NOT_ISSUED, field="after")
        if self.fingerprint != fingerprint:
            raise BadInput("'after' belongs to a different search; start again without it", field="after")
        if not mac_matches(self.secret.encode(), self._message(cursor.position), cursor.mac):
            raise BadInput(NOT_ISSUED, field="after")
        if self.expires_at <= now:
            raise CursorExpired(_expired_message(self.expires_at), field="after")

    def rows(
        self,
        first_seq: int,
        entries: Sequence[RankedResult],
        exhausted: bool,
        pending: PendingResults | None = None,
    ) -> SearchSnapshot:
        return SearchSnapshot(
            id=self.id,
            seq=first_seq,
            account_id=self.account_id,
            fingerprint=self.fingerprint,
            secret=self.secret,
            total=self.total,
            browse_order=self.browse_order,
            exhausted=exhausted,
            interpretation=asdict(self.interpretation) if self.interpretation is not None else None,
            entries=pack_entries(entries, pending),
            expires_at=self.expires_at,
        )


# ---------------------------------------------------------------------------- encoding (pure)


def pack_entries(entries: Sequence[RankedResult], pending: PendingResults | None = None) -> bytes:
    """A row's entries: ``pending`` packed (``ranking.pending``) when given, else zlib JSON of each
    explained entry's id, score and parts."""
    if pending is not None:
        return pending.pack()
    raw = [[r.id, r.score, [[p.name, p.value, p.detail] for p in r.parts]] for r in entries]
    return zlib.compress(json.dumps(raw, separators=(",", ":")).encode(), 1)


def unpack_entries(blob: bytes) -> tuple[list[RankedResult], PendingResults | None]:
    """The explained entries or the pending results ``pack_entries`` wrote. A row of an earlier version
    (zlib JSON whose later entries carry ``reasons``) gives its entries, those with their ``reasons``."""
    if is_packed(blob):
        return [], unpack(blob)
    entries = json.loads(zlib.decompress(blob))
    explained = [
        RankedResult(e[0], e[1], tuple(ScorePart(n, v, d) for n, v, d in e[2]), _legacy_reasons(e))
        for e in entries
    ]
    return explained, None


def _legacy_reasons(entry: list[Any]) -> tuple | None:
    """The ``reasons`` an earlier version stored in the JSON itself (the shape ``PendingResults.result``
    gives)."""
    if len(entry) < 4 or entry[3] is None:
        return None
    contributions, share, words = entry[3]
    return tuple(tuple(c) for c in contributions), share, tuple(tuple(w) for w in words)


def interpretation_from(data: dict[str, Any] | None) -> Interpretation | None:
    if data is None:
        return None
    return Interpretation(
        labels=tuple(LabelGuess(**guess) for guess in data.get("labels", ())),
        input_format=data.get("input_format"),
        output_format=data.get("output_format"),
        constraints=Constraints(**data.get("constraints", {})),
    )


def decode_cursor(cursor: str) -> Cursor:
    """The parts of a cursor (BadInput when it is not one this service could have issued)."""
    try:
        if not cursor.startswith(CURSOR_PREFIX):
            raise ValueError(cursor)
        body = cursor[len(CURSOR_PREFIX) :]
        data = json.loads(base64.urlsafe_b64decode((body + "=" * (-len(body) % 4)).encode()))
        parsed = Cursor(str(data["s"]), int(data["p"]), float(data["t"]), str(data["m"]))
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        message = f"'after' is not a cursor this service issued: {cursor[:80]!r}"
        raise BadInput(message, field="after") from None
    if parsed.position < 0 or len(parsed.snapshot_id) != 32:
        raise BadInput(NOT_ISSUED, field="after")
    return parsed


def _first_chunks(snapshots: Sequence[Snapshot]) -> list[SearchSnapshot]:
    completed = [snapshot.complete() for snapshot in snapshots]
    return [s.rows(0, s.entries, s.exhausted, s.pending) for s in completed]


def _expired_message(expired_at: datetime) -> str:
    return (
        f"'after' expired at {expired_at.isoformat(timespec='seconds')} (search results are kept for "
        "paging for a limited time); search again without it"
    )


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite drops the zone


# ---------------------------------------------------------------------------- storage


class SnapshotStore:
    """Snapshots written in batches off the search path, read by every process (``snapshot_rows``:
    in the database, or in Redis when configured)."""

    def __init__(
        self, rows: SnapshotRows, settings: Settings, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.rows = rows
        self.settings = settings
        self.clock = clock
        # Packed when written: gathering the later results and packing are off the first page too.
        self._batches = BatchWriter(
            self._insert, lambda: self.settings.search_snapshot_batch_s, "could not store %d search snapshots"
        )
        self._purged_at: datetime | None = None

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.search_snapshot_ttl_s)

    def keep_soon(
        self,
        account_id: str | None,
        fingerprint: str,
        entries: Sequence[RankedResult],
        total: int,
        *,
        browse_order: str | None = None,
        exhausted: bool = True,
        interpretation: Interpretation | None = None,
        later: tuple[Callable[[], PendingResults], int] | None = None,
    ) -> Snapshot:
        """A new snapshot, queued for the next batch; its cursors may be handed out at once.

        ``later``: instead of ``entries``, a function giving the results unexplained, and their count."""
        if later is not None and entries:
            raise ValueError("a snapshot keeps explained entries or unexplained results, not both")
        snapshot = Snapshot(
            id=new_id(),
            account_id=account_id,
            fingerprint=fingerprint,
            total=total,
            entries=list(entries),
            expires_at=self.clock() + self.ttl,
            browse_order=browse_order,
            exhausted=exhausted,
            interpretation=interpretation,
            later=later,
        )
        self._batches.add(snapshot)
        return snapshot

    async def _insert(self, snapshots: list[Snapshot]) -> None:
        """One batch (if it fails, later pages of these searches get an error, never a wrong page);
        storage grows only here, so expired snapshots are purged here too, now and then."""
        # on a thread: zlib lets go of the GIL, and the first page is answered without waiting for it
        await self.rows.add(await asyncio.to_thread(_first_chunks, snapshots))
        await self._purge_now_and_then()

    async def flush(self) -> None:
        """Write every queued snapshot now (a reader of this process's cursors, tests, shutdown)."""
        await self._batches.flush()

    async def _purge_now_and_then(self) -> None:
        now = self.clock()
        if self._purged_at is not None and (now - self._purged_at).total_seconds() < PURGE_EVERY_S:
            return
        self._purged_at = now
        try:
            await self.purge()
        except Exception:
            logger.exception("could not purge expired search snapshots")

    async def purge(self) -> int:
        """Delete expired snapshots (every process's): storage holds only those still pageable."""
        return await self.rows.purge(self.clock())

    async def open(self, cursor: Cursor, account_id: str | None, fingerprint: str) -> Snapshot:
        """The snapshot ``cursor`` pages, checked for this account and request (BadInput, CursorExpired)."""
        now = self.clock()
        snapshot = await self._load(cursor.snapshot_id)
        if snapshot is None:
            await self.flush()  # issued by this process and still queued
            snapshot = await self._load(cursor.snapshot_id)
        age = now.timestamp() - cursor.issued_at
        if snapshot is None and age > self.settings.search_snapshot_ttl_s:
            expired_at = datetime.fromtimestamp(cursor.issued_at, UTC) + self.ttl
            raise CursorExpired(_expired_message(expired_at), field="after")
        wait_s = self.settings.search_snapshot_batch_s + WRITE_GRACE_S
        polls = int(wait_s / POLL_S) if -1 <= age <= wait_s else 0
        while snapshot is None and polls:
            await asyncio.sleep(POLL_S)  # another process's batch may not be written yet
            polls -= 1
            snapshot = await self._load(cursor.snapshot_id)
        if snapshot is None:
            raise BadInput(NOT_ISSUED, field="after")
        snapshot.check(cursor, account_id, fingerprint, now)
        return snapshot

    async def _load(self, snapshot_id: str) -> Snapshot | None:
        rows = await self.rows.load(snapshot_id)
        if not rows:
            return None
        first, last = rows[0], rows[-1]
        chunks = [unpack_entries(row.entries) for row in rows]  # pending: only a text search's one chunk
        return Snapshot(
            id=first.id,
            account_id=first.account_id,
            fingerprint=first.fingerprint,
            total=first.total,
            entries=[entry for explained, _ in chunks for entry in explained],
            pending=chunks[-1][1],
            expires_at=_as_utc(first.expires_at),
            secret=first.secret,
            browse_order=first.browse_order,
            exhausted=last.exhausted,
            interpretation=interpretation_from(first.interpretation),
            chunks=len(rows),
        )

    async def append(self, snapshot: Snapshot, entries: Sequence[RankedResult], exhausted: bool) -> Snapshot:
        """Add the next chunk of a facet-only search, now (the next page may come to another process).

        Two requests extending the same snapshot at once both try to write chunk ``snapshot.chunks``;
        the loser reads the winner's, so both hand out the same continuation."""
        if not await self.rows.add_if_absent(snapshot.rows(snapshot.chunks, entries, exhausted)):
            stored = await self._load(snapshot.id)
            if stored is None:
                raise CursorExpired(_expired_message(snapshot.expires_at), field="after") from None
            return stored
        snapshot.entries.extend(entries)
        snapshot.exhausted = exhausted
        snapshot.chunks += 1
        return snapshot

    async def close(self) -> None:
        await self._batches.close()
        await self.rows.close()
