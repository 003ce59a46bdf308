"""What a requester reads of jobs: one job, a page of their own, a final job's outputs, and a stream of
a job's changes until it is final.

Separate because reads only check access and shape views: they write nothing and never touch a run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import defer

from catalog.actors import Actor
from catalog.choices import parse_choices
from catalog.enums import JobStatus
from catalog.keyset import check_page_size, decode_cursor, encode_cursor, newest_first
from executor.job_base import JobServiceParts
from executor.job_outputs import START, OutputsCursor, OutputsPage, read_all, read_page
from executor.job_views import JobPage, JobView
from infra.errors import BadInput, Gone, NotFound, Unauthenticated
from infra.tables import Job

MY_JOBS_CURSOR = "my-jobs"  # what a cursor of ``list_mine`` is signed for: no other list takes it


class JobReads(JobServiceParts):
    async def get(self, actor: Actor, job_id: str) -> JobView:
        """Jobs (and their results) are visible to their owner and admins only; others get NOT_FOUND.
        The job's inputs are not loaded: a view never shows them, and they may be many records."""
        async with self.db.session() as session:
            row = await session.scalar(select(Job).options(defer(Job.inputs)).where(Job.id == job_id))
            if row is None or not (actor.is_admin or row.owner_id == actor.account_id):
                raise NotFound(f"no job with id {job_id!r}")
            return JobView.of(row)

    async def list_mine(
        self,
        actor: Actor,
        *,
        statuses: Sequence[object] | None = None,
        listing_id: str | None = None,
        first: int = 20,
        after: str | None = None,
        max_page_size: int = 100,
    ) -> JobPage:
        """The actor's own jobs, newest first, so a requester can find a job whose id they lost; an
        admin reaches others' jobs by id (``get``), not through this list."""
        if actor.account_id is None:
            raise Unauthenticated("sign in to list your jobs")
        check_page_size(first, max_page_size)
        owner = actor.account_id
        position = decode_cursor(self.catalog.cursors, MY_JOBS_CURSOR, after, owner) if after else None
        query = select(Job).options(defer(Job.inputs)).where(Job.owner_id == actor.account_id)
        wanted = parse_choices(JobStatus, statuses, "status")
        if wanted:
            query = query.where(Job.status.in_(wanted))
        if listing_id:
            query = query.where(Job.listing_id == listing_id)
        async with self.db.session() as session:
            rows = list((await session.scalars(newest_first(query, Job, position, first))).all())
        has_next = len(rows) > first
        rows = rows[:first]
        cursors = [
            encode_cursor(self.catalog.cursors, MY_JOBS_CURSOR, r.created_at, r.id, owner) for r in rows
        ]
        return JobPage([JobView.of(r) for r in rows], cursors[-1] if has_next else None, has_next, cursors)

    async def outputs(self, actor: Actor, job_id: str, first: int, after: str | None = None) -> OutputsPage:
        """A page of a final job's per-record outputs (``{output}`` or ``{error}``, in input order) from
        ``after`` (a cursor ``outputs_cursor`` sealed for this job); an empty page for a job that has none
        (not final yet, cancelled, training); GONE once retention dropped them."""
        view = await self.get(actor, job_id)
        start = OutputsCursor.open(self.catalog.cursors, view.id, after) if after is not None else START
        if first < 1 or first > self.settings.job_outputs_page_size:
            raise BadInput(
                f"first must be between 1 and {self.settings.job_outputs_page_size}; got {first}",
                field="first",
            )
        _check_outputs_kept(view)
        if view.outputs_digest is None:
            if start != START:
                raise BadInput("this job has no outputs to page through", field="after")
            return OutputsPage(START, [], [], 0)
        return await asyncio.to_thread(
            read_page, self.artifacts, view.outputs_digest, view.outputs_count or 0, start, first
        )

    def outputs_cursor(self, job_id: str, position: OutputsCursor) -> str:
        """The opaque cursor of ``position`` in job ``job_id``'s outputs (valid for that job only)."""
        return position.seal(self.catalog.cursors, job_id)

    async def all_outputs(self, view: JobView) -> list[dict[str, Any]]:
        """Every output of a job its caller may see (``view`` came from ``get``); GONE once expired."""
        _check_outputs_kept(view)
        if view.outputs_digest is None:
            return []
        return await asyncio.to_thread(read_all, self.artifacts, view.outputs_digest)

    async def watch(self, actor: Actor, job_id: str) -> AsyncIterator[JobView]:
        """The job's current state, then every change, until it is final. Subscribes before reading, so no
        change between the read and the subscription is missed; events only trigger a re-read."""
        await self.get(actor, job_id)
        async with self.events.subscribe(job_id) as stream:
            wake = asyncio.Event()

            async def pump() -> None:
                async for _ in stream:
                    wake.set()

            pumping = asyncio.create_task(pump())
            try:
                view = await self.get(actor, job_id)
                yield view
                last = _change_key(view)
                while not view.is_final:
                    # Re-read on every event, and now and then anyway: events may be lost (Redis restart).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=self.settings.job_heartbeat_s)
                    wake.clear()
                    view = await self.get(actor, job_id)
                    if _change_key(view) != last:
                        last = _change_key(view)
                        yield view
            finally:
                pumping.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pumping


def _change_key(view: JobView) -> tuple[Any, ...]:
    """What a status stream reports a change of. ``attempts`` too: a job whose worker died is re-queued
    and claimed again, often between two looks, and is then RUNNING again, from the start."""
    return (view.status, view.progress, view.attempts)


def _check_outputs_kept(view: JobView) -> None:
    """A job whose outputs passed their retention answers GONE, not an empty page: it had outputs, and
    they will not come back (its summary and metrics remain on the job)."""
    if view.outputs_expired_at is not None:
        raise Gone(
            f"the outputs of job {view.id} were dropped on {view.outputs_expired_at:%Y-%m-%d}, past the "
            "retention for finished jobs' outputs; its status, summary and metrics remain: run it "
            "again to get outputs",
            field="outputs",
        )
