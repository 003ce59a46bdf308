"""Helpers for the demand tests: a movable clock, the test accounts, and catalog rows to select."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from catalog.actors import Actor
from infra.db import Database
from infra.tables import Listing, UsageEvent, utcnow

WINDOW_S = 600


class MovableClock:
    """Now, or later: ``advance`` moves it forward so a selection window can close at once."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class People:
    producer: Actor
    other_producer: Actor
    requester: Actor
    admin: Actor
    anonymous: Actor


async def add_listing(db: Database, name: str, category: str = "Computer Vision") -> str:
    async with db.session() as session:
        row = Listing(kind="model", name=name, category=category)
        session.add(row)
    return row.id


async def add_usage(db: Database, listing_id: str, search_id: str, kind: str = "view") -> None:
    """What the catalog's usage log writes when a view/run/pipeline step came from a search."""
    async with db.session() as session:
        session.add(UsageEvent(listing_id=listing_id, kind=kind, search_id=search_id))
