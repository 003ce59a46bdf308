"""Whether the listing at a pipeline step can score records: the one rule ``isRunnable`` and ``runJob`` share.

A catalog entry (the demo catalog, an import, ``createListing``) has a version without a command: it
describes a model but carries nothing to run. ``Pipeline.isRunnable`` must not promise a run that
``runJob`` then refuses, so both read the same verdict: ``evaluation.build_view`` sets each step's
``code_problem`` from ``code_problem`` below, and ``PipelineService.plan_run`` (what ``runJob`` plans a
pipeline job with) refuses a pipeline whose view has a step that cannot run. The executor's check of a
single listing uses ``serves_inference`` from here too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from infra.tables import ListingVersion

NO_CODE = "cannot be run: it has no published code (a catalog entry only)"
# How deep pipeline listings may nest inside pipelines (cycles are refused when a step is added).
MAX_NESTING = 8


def commands_of(manifest: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """(inference command, training command or None) as publishing recorded them in the manifest."""
    command = tuple(manifest.get("command") or manifest.get("entrypoint") or ())
    train = manifest.get("train_entrypoint")
    return command, tuple(train) if train else None


def serves_inference(version: ListingVersion | None) -> bool:
    """Whether a version has a command to score records with. A catalog entry (the demo catalog, an
    import, createListing) has a version without one: a job on it is refused before it is queued."""
    return version is not None and bool(commands_of(version.manifest or {})[0])


async def latest_versions(session: AsyncSession, listing_ids: Iterable[str]) -> dict[str, ListingVersion]:
    """The newest version of each listing (one query for a whole pipeline's steps)."""
    ids = sorted(set(listing_ids))
    if not ids:
        return {}
    rows = await session.scalars(
        select(ListingVersion)
        .where(ListingVersion.listing_id.in_(ids))
        .order_by(ListingVersion.created_at, ListingVersion.id)
    )
    return {version.listing_id: version for version in rows}  # the last, newest, wins


def code_problem(label: str, version: ListingVersion | None) -> str | None:
    """Why the listing at a step (``label``: "step 2 'name'") cannot score records; None when it can."""
    return None if serves_inference(version) else f"{label} {NO_CODE}"
