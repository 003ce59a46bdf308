"""Fencing tokens: a run writes to its job's or publication's row only while the row is still its own.

Recovery re-queues a RUNNING row whose heartbeat stopped (``infra.heartbeat``), but a stopped heartbeat
does not prove a dead worker: one that merely could not beat (a database outage, a long pause, an
overloaded host) runs on while a second run claims the row. Each claim therefore increments the row's
``attempts`` (the token) and the run keeps the number it wrote (a ``Claim``); every later write of the
run is an ``UPDATE ... WHERE id = :id AND attempts = :mine AND status = 'running'``, so a run whose row
was re-queued, claimed again or made final meanwhile changes nothing and learns that it was
``Superseded``: it stops, removes only its own files, and leaves the row to whoever holds it now.
Jobs (``executor.jobs``) and publications (``catalog.publishing``) share this; both rows have ``id``,
``status`` and ``attempts``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from infra.db import Database
from infra.heartbeat import Beat
from infra.tables import utcnow

RUNNING = "running"  # the status of a job or publication that a run holds (JobStatus, PublicationStatus)


class Superseded(Exception):
    """The run's claim no longer holds its row; ``status`` and ``attempt`` are the row's now (None when
    the row is gone), so that a caller can tell a cancel (same attempt, cancelled) from a takeover."""

    def __init__(self, claim: Claim, status: str | None, attempt: int | None) -> None:
        super().__init__(f"{claim} was superseded: the row is {status} at run {attempt}")
        self.claim = claim
        self.status = status
        self.attempt = attempt


@dataclass
class Claim:
    """One run's hold on a row: which row, and the ``attempts`` value its claim wrote there; ``lost``
    once a write found the row no longer held."""

    model: Any  # the ORM class: Job or Publication
    row_id: str
    attempt: int
    lost: Superseded | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.model.__tablename__} {self.row_id} run {self.attempt}"

    def holds(self) -> ColumnElement[bool]:
        """The condition of each of the run's writes: the row is RUNNING under this claim still."""
        row = self.model
        return and_(row.id == self.row_id, row.attempts == self.attempt, row.status == RUNNING)

    async def write(self, session: AsyncSession, **values: Any) -> None:
        """Update the row with ``values`` if this claim holds it (in the caller's transaction, which can
        then add writes of its own that stand or fall with the row); raises ``Superseded`` if not."""
        result = await session.execute(
            update(self.model)
            .where(self.holds())
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 0:
            now = (
                await session.execute(
                    select(self.model.status, self.model.attempts).where(self.model.id == self.row_id)
                )
            ).first()
            self.lost = Superseded(self, *(now or (None, None)))
            raise self.lost

    async def write_now(self, db: Database, **values: Any) -> None:
        """``write`` in a transaction of its own."""
        async with db.session() as session:
            await self.write(session, **values)


def may_still_write(status: str | None, attempts: int | None, attempt: int) -> bool:
    """Whether run ``attempt`` of a row read as ``status`` at ``attempts`` (both None: the row is gone)
    may still write to it: while the row is RUNNING under that run's claim, or when the run claimed it
    after the read (a larger number). Claims only count up, and only a QUEUED row is claimed, so a run
    for which this is False never writes again, and what it left behind (staging directories, images) is
    anyone's to remove, even while it still runs: it stops at its next write."""
    if attempts is None:
        return False
    return attempt > attempts or (status == RUNNING and attempts == attempt)


def beat_under(db: Database, claim: Claim, work: asyncio.Task[Any] | None, **values: Any) -> Beat:
    """A heartbeat (``infra.heartbeat.keep_beating``) of the run holding ``claim``: refreshes the row's
    ``heartbeat_at`` (and ``values``) while the claim holds; once it does not, cancels ``work``, the run's
    task (its sandbox dies with it), so that a superseded run stops now rather than at its next write,
    and ends. The run tells this cancel from others by ``claim.lost``."""

    async def beat() -> bool:
        try:
            await claim.write_now(db, heartbeat_at=utcnow(), **values)
        except Superseded:
            if work is not None:
                work.cancel()
            return False
        return True

    return beat


def lost_claim(stopped: BaseException, claim: Claim) -> Superseded | None:
    """Whether ``stopped``, raised in the run holding ``claim``, means that the claim was lost: a write's
    ``Superseded``, or the cancel of the run's task by ``beat_under`` (taken back here, so that the run
    can clean up and return). None for any other cancel (the worker is stopping): the caller re-raises."""
    if isinstance(stopped, Superseded):
        return stopped
    task = asyncio.current_task()
    if claim.lost is not None and task is not None:
        task.uncancel()
    return claim.lost
