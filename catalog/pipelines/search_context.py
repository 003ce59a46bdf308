"""Search in the context of a pipeline: only candidates that fit the slot being filled.

``SearchInput.pipeline`` + ``position`` name a slot: the place in the pipeline's step list where the
requester wants to insert something (0 = before the first step, ``len(steps)`` = after the last). A
candidate for that slot must read what the step before it emits and emit what the step after it reads.
The format half of that is an exact facet (``SearchFilters.input_format``/``output_format``) so it
filters *before* ranking; the exact-schema half is ``slot_misfits``, for a post-filter over the
candidates' full rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from catalog.formats import HasIO, canonical_ref, check_connection
from catalog.pipelines.conditioning import STEP_KINDS
from infra.errors import BadInput
from search.types import SearchFilters


@dataclass(frozen=True, slots=True)
class PipelineSlot:
    pipeline_id: str
    position: int
    after_step_id: str | None  # what ``addPipelineStep(after=…)`` takes to fill this slot
    previous: HasIO | None  # the listing of the step before the slot (its output is what comes in)
    next: HasIO | None  # the listing of the step after the slot (its input is what must go out)

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
