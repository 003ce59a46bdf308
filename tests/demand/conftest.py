"""Demand fixtures: a real database (both engines), the real MiniLM encoder, accounts and a clock.

The clock is the one thing replaced: selection windows are half an hour, and tests move time forward
instead of waiting for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from demand_support import WINDOW_S, MovableClock, People

from catalog.actors import Actor
from catalog.demand import DemandService
from infra.db import Database
from infra.settings import Settings
from infra.tables import Account
from search.embeddings import Encoder


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def demand(
    db: Database, settings: Settings, encoder: Encoder, clock: MovableClock
) -> AsyncIterator[DemandService]:
    service = DemandService(
        db, settings.model_copy(update={"demand_window_s": WINDOW_S}), encoder, clock=clock
    )
    yield service
    await service.close()


@pytest.fixture
async def people(db: Database) -> People:
    rows = {
        name: Account(name=name, role=role)
        for name, role in [
            ("pat-producer", "producer"),
            ("olga-producer", "producer"),
            ("rita-requester", "requester"),
            ("ada-admin", "admin"),
        ]
    }
    async with db.session() as session:
        session.add_all(rows.values())
    actor = {name: Actor(account_id=row.id, role=row.role, name=name) for name, row in rows.items()}
    return People(
        producer=actor["pat-producer"],
        other_producer=actor["olga-producer"],
        requester=actor["rita-requester"],
        admin=actor["ada-admin"],
        anonymous=Actor.anonymous(),
    )
