"""The migrated schema works the same on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

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
