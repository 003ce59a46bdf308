"""Search in the context of a pipeline: only candidates that fit the slot being filled.

``SearchInput.pipeline`` + ``position`` name a slot: the place in the pipeline's step list where the
requester wants to insert something (0 = before the first step, ``len(steps)`` = after the last). A
candidate for that slot must read what the step before it emits and emit what the step after it reads.
The format half of that is an exact facet (``SearchFilters.input_format``/``output_format``) so it
filters *before* ranking; the exact-schema half is ``slot_misfits``, for a post-filter over the
candidates' full rows.

A neighbour whose listing was deleted (the step stays, ``listingDeleted``) or that the requester may no
longer see leaves its side of the slot unconstrained, and the slot says so (``notes``, shown with the
search's results). A deleted listing's formats and schemas are gone with its row (the step keeps only its
id), so there is nothing to narrow by; a hidden one's are part of what its owner withdrew, which a
narrowed search would show. What goes next to such a step matters little anyway: the pipeline runs
again only once that step is removed or replaced.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from catalog.formats import HasIO, canonical_ref, check_connection
from catalog.pipelines.conditioning import STEP_KINDS
from catalog.pipelines.store import Row
from infra.errors import BadInput
from infra.tables import Listing
from search.types import SearchFilters


@dataclass(frozen=True, slots=True)
class PipelineSlot:
    pipeline_id: str
    position: int
    after_step_id: str | None  # what ``addPipelineStep(after=…)`` takes to fill this slot
    previous: HasIO | None  # the listing of the step before the slot (its output is what comes in)
    next: HasIO | None  # the listing of the step after the slot (its input is what must go out)
    # Sentences for the search's notes: a side left unconstrained by a deleted or hidden neighbour.
    notes: tuple[str, ...] = ()

    @property
    def input_format(self) -> str | None:
        """What a candidate must read: the previous step's output (None at the start)."""
        return (
            canonical_ref(self.previous.output_format)
            if self.previous and self.previous.output_format
            else None
        )

    @property
    def output_format(self) -> str | None:
        """What a candidate must emit: the next step's input (None at the end)."""
        return canonical_ref(self.next.input_format) if self.next and self.next.input_format else None


def slot_between(
    pipeline_id: str, position: int, before: Row | None, after: Row | None, unseen: set[str]
) -> PipelineSlot:
    """The slot between the step rows ``before`` and ``after`` (None at an end); a neighbour whose
    listing was deleted or is among ``unseen`` (hidden from the requester) constrains nothing, and the
    slot's notes say so."""
    known: list[Listing | None] = []
    notes: list[str] = []
    for side, row in (("before", before), ("after", after)):
        listing = row[1] if row is not None else None
        if row is not None and (listing is None or listing.id in unseen):
            notes.append(unknown_neighbour_note(side, row[0].position, deleted=listing is None))
            listing = None
        known.append(listing)
    return PipelineSlot(
        pipeline_id=pipeline_id,
        position=position,
        after_step_id=before[0].id if before is not None else None,
        previous=known[0],
        next=known[1],
        notes=tuple(notes),
    )


def unknown_neighbour_note(side: str, position: int, deleted: bool) -> str:
    """Why the slot is not narrowed on ``side`` ("before": what comes in, "after": what must go out)
    next to step ``position`` (0-based). No name or id: the listing may have been private."""
    what = "was deleted by its owner" if deleted else "is no longer available to you"
    narrowed = "what they read" if side == "before" else "what they emit"
    return (
        f"the listing of step {position + 1}, {side} this slot, {what}: candidates are not narrowed by "
        f"{narrowed}; remove or replace that step"
    )


def restrict_filters(filters: SearchFilters, slot: PipelineSlot) -> SearchFilters:
    """The caller's facets narrowed to the slot; a facet that contradicts the slot is a BadInput.

    Kinds are limited to what can be a step; a neighbour with an undeclared format leaves that side
    unconstrained (nothing can be proven either way, and the connection check will say so).
    """
    changes: dict[str, Any] = {}
    for field, required in (("input_format", slot.input_format), ("output_format", slot.output_format)):
        given = getattr(filters, field)
        if required is None:
            continue
        if given is not None and canonical_ref(given) != required:
            raise BadInput(
                f"{field} {given!r} contradicts the pipeline slot at position {slot.position}, "
                f"which needs {required}",
                field=field,
            )
        changes[field] = required
    kinds = tuple(k for k in (filters.kinds or STEP_KINDS) if k in STEP_KINDS)
    if not kinds:
        raise BadInput(f"pipeline steps are {', '.join(STEP_KINDS)} listings", field="kinds")
    changes["kinds"] = kinds
    return dataclasses.replace(filters, **changes)


def slot_misfits(slot: PipelineSlot, candidate: HasIO) -> list[str]:
    """Why ``candidate`` (a full listing row) would not fit the slot exactly; empty when it fits."""
    reasons: list[str] = []
    if slot.previous is not None:
        prev = slot.previous
        reasons += check_connection(
            prev.output_format, prev.output_schema, candidate.input_format, candidate.input_schema
        ).reasons
    if slot.next is not None:
        nxt = slot.next
        reasons += check_connection(
            candidate.output_format, candidate.output_schema, nxt.input_format, nxt.input_schema
        ).reasons
    return reasons
