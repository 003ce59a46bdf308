"""Finding the listings that turn one step's output into the next step's input.

The lookup is a database query (the database is the truth, and the question is an exact one: input
format = A's output, output format = B's input) restricted to what the requester may see, followed by
the exact schema check on both sides. Candidates are ranked so the one inserted automatically is the one
a careful person would pick: verified first, then measured accuracy, usage, and speed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.access import visible_to
from catalog.actors import Actor
from catalog.enums import ListingKind, VerificationStatus
from catalog.formats import HasIO, canonical_ref, format_aliases, listing_fits
from catalog.pipelines.views import Alternative
from infra.errors import BadInput
from infra.tables import Listing

# Kinds that can sit in a chain and transform records (datasets and notebooks cannot).
STEP_KINDS = (ListingKind.ALGORITHM.value, ListingKind.MODEL.value, ListingKind.PIPELINE.value)
CONDITIONER_KINDS = (ListingKind.ALGORITHM.value, ListingKind.MODEL.value)
MAX_CANDIDATES = 200
MAX_ALTERNATIVES = 5


def needs_training(listing: Listing) -> bool:
    """An algorithm must be trained before it runs, unless it says it is a fixed transform.

    Algorithms that declare ``training_resources`` (what training needs) are trainable; one that declares
    none, or sets ``extra.requires_training`` to false, runs as is (a crop, a tokenizer, a resize).
    An explicit ``extra.requires_training`` wins either way.
    """
    if listing.kind != ListingKind.ALGORITHM:
        return False
    explicit = (listing.extra or {}).get("requires_training")
    if isinstance(explicit, bool):
        return explicit
    return listing.training_resources is not None


def chain_misfits(chain: Sequence[HasIO]) -> list[str]:
    """Reasons the records of ``chain[0]`` would not flow through the rest; empty when they would."""
    reasons: list[str] = []
    for producer, consumer in itertools.pairwise(chain):
        reasons += listing_fits(producer, consumer).reasons
    return reasons


def _rank_key(listing: Listing) -> tuple[Any, ...]:
    verified = listing.verification_status == VerificationStatus.VERIFIED
    accuracy = listing.accuracy if listing.accuracy is not None else -1.0
    latency = listing.latency_p50_ms if listing.latency_p50_ms is not None else float("inf")
    return (not verified, -accuracy, -listing.relative_usage, -listing.usage_count, latency, listing.name)


# ``_rank_key`` in SQL: the candidates kept under ``MAX_CANDIDATES`` are the best ones, not any ones.
RANK_ORDER = (
    case((Listing.verification_status == VerificationStatus.VERIFIED.value, 0), else_=1),
    func.coalesce(Listing.accuracy, -1.0).desc(),
    Listing.relative_usage.desc(),
    Listing.usage_count.desc(),
    func.coalesce(Listing.latency_p50_ms, 1e300),
    Listing.name,
    Listing.id,
)


async def find_conditioners(
    session: AsyncSession, actor: Actor, producer: Listing, consumer: Listing
) -> list[Listing]:
    """Visible runnable listings taking ``producer``'s output to ``consumer``'s input, best first."""
    if producer.output_format is None or consumer.input_format is None:
        return []
    try:
        wanted_in = format_aliases(producer.output_format)
        wanted_out = format_aliases(consumer.input_format)
    except BadInput:
        return []  # a stored format outside the vocabulary: nothing can be proven to fit it
    rows = (
        (
            await session.execute(
                select(Listing)
                .where(
                    Listing.kind.in_(CONDITIONER_KINDS),
                    Listing.input_format.in_(wanted_in),
                    Listing.output_format.in_(wanted_out),
                    Listing.id.not_in([producer.id, consumer.id]),
                    visible_to(actor),
                )
                .order_by(*RANK_ORDER)
                .limit(MAX_CANDIDATES)
            )
        )
        .scalars()
        .all()
    )
    fitting = [
        row for row in rows if not needs_training(row) and not chain_misfits([producer, row, consumer])
    ]
    return sorted(fitting, key=_rank_key)


def as_alternative(listing: Listing) -> Alternative:
    return Alternative(
        listing_id=listing.id,
        name=listing.name,
        kind=listing.kind,
        verified=listing.verification_status == VerificationStatus.VERIFIED,
        accuracy=listing.accuracy,
        latency_p50_ms=listing.latency_p50_ms,
    )


def describe_gap(producer: Listing, consumer: Listing, reasons: Sequence[str]) -> str:
    """The sentence a requester reads about an open connection: which step, which formats, why."""
    out_ref = _show_format(producer.output_format)
    in_ref = _show_format(consumer.input_format)
    if out_ref != in_ref:
        return (
            f"{producer.name!r} emits {out_ref} but {consumer.name!r} needs {in_ref}; no visible runnable "
            f"algorithm or model converts {out_ref} to {in_ref}"
        )
    return (
        f"{producer.name!r} emits {out_ref} that {consumer.name!r} does not accept "
        f"({'; '.join(reasons[:3])}); no visible runnable algorithm or model bridges them"
    )


def _show_format(ref: str | None) -> str:
    return "an undeclared format" if ref is None else canonical_ref(ref)
