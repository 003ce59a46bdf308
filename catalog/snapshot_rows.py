"""Where search snapshot chunks are stored: the database, or Redis when ``MLREPO_REDIS_URL`` is set.

Every API process must read every other's snapshots (``catalog.search_snapshots``). The database always
can; Redis, when the deployment has one, takes that traffic off the database (one write per search with
a next page, one read per later page) and expires each snapshot itself at its ``expires_at``. A snapshot
is disposable: if Redis restarts and loses it, its cursors are refused and the requester searches again.

Both hold the same rows (``infra.tables.SearchSnapshot``, one per chunk, keyed by snapshot id and
``seq``); in Redis a snapshot is one hash, a field per chunk.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from infra.db import Database
from infra.settings import Settings
from infra.tables import SearchSnapshot

REDIS_KEY_PREFIX = "mlrepo:search-snapshot:"
_COLUMNS = tuple(column.name for column in SearchSnapshot.__table__.columns)


class SnapshotRows(Protocol):
    async def add(self, rows: list[SearchSnapshot]) -> None:
        """Store new snapshots' first chunks."""

    async def add_if_absent(self, row: SearchSnapshot) -> bool:
        """Store a further chunk unless one with its ``seq`` exists already (False then)."""

    async def load(self, snapshot_id: str) -> list[SearchSnapshot]:
        """The snapshot's chunks by ``seq``; none when it is unknown or expired and gone."""

    async def purge(self, now: datetime) -> int:
        """Delete the chunks of snapshots expired by ``now``; how many went."""

    async def close(self) -> None: ...


class DatabaseRows:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, rows: list[SearchSnapshot]) -> None:
        async with self.db.session() as session:
            session.add_all(rows)

    async def add_if_absent(self, row: SearchSnapshot) -> bool:
        try:
            async with self.db.session() as session:
                session.add(row)
        except IntegrityError:
            return False
        return True

    async def load(self, snapshot_id: str) -> list[SearchSnapshot]:
        async with self.db.session() as session:
            chunks = select(SearchSnapshot).where(SearchSnapshot.id == snapshot_id)
            return list((await session.scalars(chunks.order_by(SearchSnapshot.seq))).all())

    async def purge(self, now: datetime) -> int:
        async with self.db.session() as session:
            result = await session.execute(delete(SearchSnapshot).where(SearchSnapshot.expires_at <= now))
            return int(result.rowcount or 0)

    async def close(self) -> None:
        return None


class RedisRows:
    def __init__(self, redis_url: str) -> None:
        from redis.asyncio import Redis

        self.redis = Redis.from_url(redis_url)

    async def add(self, rows: list[SearchSnapshot]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.hset(_key(row.id), str(row.seq), _encoded(row))
            pipe.pexpireat(_key(row.id), _expiry_ms(row))
        await pipe.execute()

    async def add_if_absent(self, row: SearchSnapshot) -> bool:
        added = bool(await self.redis.hsetnx(_key(row.id), str(row.seq), _encoded(row)))
        await self.redis.pexpireat(_key(row.id), _expiry_ms(row))
        return added

    async def load(self, snapshot_id: str) -> list[SearchSnapshot]:
        chunks = await self.redis.hgetall(_key(snapshot_id))
        return sorted((_decoded(value) for value in chunks.values()), key=lambda row: row.seq)

    async def purge(self, now: datetime) -> int:
        return 0  # each snapshot's key expires at its expires_at

    async def close(self) -> None:
        await self.redis.aclose()


def snapshot_rows(db: Database, settings: Settings) -> SnapshotRows:
    return RedisRows(settings.redis_url) if settings.redis_url else DatabaseRows(db)


def _key(snapshot_id: str) -> str:
    return REDIS_KEY_PREFIX + snapshot_id


def _expiry_ms(row: SearchSnapshot) -> int:
    return int(row.expires_at.timestamp() * 1000)


def _encoded(row: SearchSnapshot) -> bytes:
    values: dict[str, Any] = {name: getattr(row, name) for name in _COLUMNS}
    values["entries"] = base64.b64encode(row.entries).decode()
    values["expires_at"] = row.expires_at.isoformat()
    return json.dumps(values, separators=(",", ":")).encode()


def _decoded(raw: bytes) -> SearchSnapshot:
    values = json.loads(raw)
    values["entries"] = base64.b64decode(values["entries"])
    values["expires_at"] = datetime.fromisoformat(values["expires_at"])
    return SearchSnapshot(**values)
