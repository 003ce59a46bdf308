"""A published pipeline keeps the chain its listing promised: an edit must not leave a connection that does
not fit, nor ends that no longer read and emit what the listing declares.

A pipeline listing declares its first step's input and its last step's output (``publishing``) and runs
the stored steps for whoever it reaches. Removing the conditioning step between two steps, adding a step
where nothing converts (or with ``autoCondition: false``), or putting at either end a step that reads or
emits something else changed what the listing does under those who use it: their next run stopped at the
open connection, or answered records their own next step could not read. The rule is ``audience``'s,
for the same reasons (its docstring): the change is refused with BAD_INPUT naming the steps and the fix,
in the change's own transaction, so the published chain stays as it was; a producer who wants to rework
it makes the listing private first.

A change is judged by what it makes, as ``audience`` judges the steps a change adds. A connection the
change created — its two chosen steps and the conditioning steps between them, as ``reconcile`` left
them — is refused when the pipeline's view calls it open (``evaluation.connection_view``: the verdict
``isRunnable`` and ``runJob`` share, so nothing here re-decides a fit). One through a step its owner
withdrew or deleted is not: that step's owner broke it, ``listingProblem`` says so, and it must not block
the edits that remove such steps. The ends are judged when the change put another step there, with
``formats.check_connection``, as a trained model is judged against the algorithm it replaces.

Making the listing private first, as the refusal offers, lets its producer rework the chain; widening it
again (``refuse_unfit_listing``, beside ``audience.refuse_unreachable_listing``) then judges the whole
chain the same way against what the listing declares, so a reworked chain cannot go back out under a
listing that describes the old one: its producer updates the listing's formats in the same edit (formats
changed on a listing that stays published are judged the same way).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from catalog.enums import Visibility
from catalog.formats import HasIO, check_connection
from catalog.pipelines.conditioning import chain_misfits
from catalog.pipelines.store import Row, load_rows, source_pipeline
from catalog.pipelines.views import ConnectionView, PipelineView, StepRole, StepView, step_label
from infra.errors import BadInput
from infra.tables import Listing, Pipeline

# (first chosen step, conditioning steps between, next chosen step): a connection as a change left it.
ConnectionKey = tuple[str, tuple[str, ...], str]


@dataclass(frozen=True, slots=True)
class ChainShape:
    """What a change of the steps is compared with: the connections and the ends before it."""

    connections: frozenset[ConnectionKey]
    first: str | None
    last: str | None


def connections(rows: Sequence[Row]) -> list[tuple[Row, Sequence[Row], Row]]:
    """(chosen step, the conditioning steps after it, next chosen step) for each connection in order."""
    chosen = [i for i, (step, _) in enumerate(rows) if step.role == StepRole.STEP]
    return [(rows[i], rows[i + 1 : j], rows[j]) for i, j in itertools.pairwise(chosen)]


def chain_shape(rows: Sequence[Row]) -> ChainShape:
    keys = frozenset(
        (producer[0].id, tuple(step.id for step, _ in between), consumer[0].id)
        for producer, between, consumer in connections(rows)
    )
    return ChainShape(keys, rows[0][0].id if rows else None, rows[-1][0].id if rows else None)


async def keep_published_chain(
    session: AsyncSession, pipeline: Pipeline, before: ChainShape, rows: Sequence[Row], view: PipelineView
) -> None:
    """After a change of ``pipeline``'s steps (``rows`` and ``view`` as it left them, in its own
    transaction): BadInput, which rolls the change back, when the listing published from the pipeline
    would run a connection the change broke or ends other than it declares. Unpublished or private:
    nothing."""
    if pipeline.listing_id is None:
        return
    listing = await session.get(Listing, pipeline.listing_id)
    if listing is None or listing.visibility == Visibility.PRIVATE:  # its owner's alone: theirs to rework
        return
    whom = f"the {listing.visibility} listing {listing.name!r} published from this pipeline"
    fallback = f"or make {listing.name!r} private first (updateListing)"
    steps = {step.id: step for step in view.steps}
    for connection in view.open_connections:
        key = (connection.from_step_id, connection.conditioning_step_ids, connection.to_step_id)
        if key in before.connections or not all(steps[i].available for i in (key[0], *key[1], key[2])):
            continue
        producer, consumer = steps[key[0]], steps[key[2]]
        raise BadInput(
            f"{_named(producer)} → {_named(consumer)} would no longer fit, and {whom} runs this chain for "
            f"others: {connection.reason}; {_bridge_remedy(producer, connection)}, {fallback}"
        )
    if not rows:
        raise BadInput(f"{whom} would have no step left to run; {fallback}")
    ends = [
        (where, _named(steps[step.id]), end)
        for where, (step, end), was in (("first", rows[0], before.first), ("last", rows[-1], before.last))
        if step.id != was and end is not None and steps[step.id].available
    ]
    refuse_unfit_ends(listing, ends, whom, fallback)


async def refuse_unfit_listing(
    session: AsyncSession, listing_id: str, visibility: str, declared: HasIO
) -> None:
    """When a pipeline listing is widened (made shared or public) or its formats change while it is:
    BadInput when the stored chain behind it has a connection that does not fit, or ends that do not
    read and emit what the listing will declare (``declared``: its formats after the update). Its
    steps' reach is ``audience``'s to judge (a deleted or withdrawn step is refused there first)."""
    source = await source_pipeline(session, listing_id)
    if visibility == Visibility.PRIVATE or source is None:
        return
    rows = await load_rows(session, source.id)
    whom = f"this {visibility} pipeline listing"
    fallback = "or keep the listing private"
    for (a_step, a), between, (b_step, b) in connections(rows):
        chain = [a, *(listing for _, listing in between), b]
        if any(listing is None for listing in chain):
            continue
        reasons = chain_misfits(chain)
        if reasons:
            raise BadInput(
                f"{step_label(a_step.position, a.name)} → {step_label(b_step.position, b.name)} does not fit "
                f"({'; '.join(reasons[:3])}), so {whom} would not run for others: bridge them in the "
                f"pipeline first, {fallback}"
            )
    if rows and rows[0][1] is not None and rows[-1][1] is not None:
        ends = [
            (where, step_label(step.position, listing.name), listing)
            for where, (step, listing) in (("first", rows[0]), ("last", rows[-1]))
        ]
        refuse_unfit_ends(declared, ends, whom, fallback)


def _named(step: StepView) -> str:
    return step_label(step.position, step.listing_name)


def _bridge_remedy(producer: StepView, connection: ConnectionView) -> str:
    if not connection.alternatives:
        return "keep the steps that bridge them"
    names = " or ".join(repr(a.name) for a in connection.alternatives)
    after = producer.position + 1
    return f"keep one of them between the two steps ({names}: addPipelineStep after step {after})"


def refuse_unfit_ends(
    declared: HasIO, ends: Sequence[tuple[str, str, Listing]], whom: str, fallback: str
) -> None:
    """BadInput when the listing at an end of the chain (``ends``: "first" or "last", the step as
    named to the producer, its listing) does not read (first) or emit (last) what ``declared`` says
    the pipeline listing takes or answers."""
    for where, named, listing in ends:
        if where == "first":
            wanted, declares, does = declared.input_format, "takes", "read"
            fit = check_connection(
                declared.input_format, declared.input_schema, listing.input_format, listing.input_schema
            )
        else:
            wanted, declares, does = declared.output_format, "answers", "emit"
            fit = check_connection(
                listing.output_format, listing.output_schema, declared.output_format, declared.output_schema
            )
        if wanted is None or fit.ok:
            continue
        raise BadInput(
            f"{named} would come {where}, but {whom} {declares} {wanted} and it does not {does} that: "
            f"{'; '.join(fit.reasons[:3])}; keep a {where} step that {does}s {wanted}, {fallback}"
        )
