"""An open pipeline connection is unmet demand: someone needs a converter nobody has published.

Gaps are collected while a change is reconciled and handed to ``catalog.demand.DemandService.log_gap``
after the change commits — so a rolled-back change logs nothing, and producers of the consumer's
category see the need in their demand report and live alerts like any search that found nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog.actors import Actor
from infra.tables import Listing

if TYPE_CHECKING:
    from catalog.demand import DemandService

logger = logging.getLogger("mlrepo.pipelines")

UNDECLARED = "undeclared"


@dataclass(frozen=True, slots=True)
class Gap:
    category: str
    output_format: str  # what the upstream step emits (the converter's input)
    input_format: str  # what the downstream step needs (the converter's output)
    text: str


def gap_request_text(output_format: str | None, input_format: str | None) -> str:
    """The need in the words a requester would search with (what demand grouping embeds)."""
    source = (output_format or UNDECLARED).split("@")[0]
    target = (input_format or UNDECLARED).split("@")[0]
    return f"convert {source} to {target}"


def gap_between(producer: Listing, consumer: Listing) -> Gap:
    return Gap(
        category=consumer.category,
        output_format=producer.output_format or UNDECLARED,
        input_format=consumer.input_format or UNDECLARED,
        text=gap_request_text(producer.output_format, consumer.input_format),
    )


async def log_gaps(demand: DemandService, actor: Actor, gaps: Sequence[Gap]) -> None:
    """Log each gap; a logging failure is reported, not raised — the pipeline change already committed."""
    for gap in gaps:
        try:
            await demand.log_gap(actor, gap.category, gap.output_format, gap.input_format, text=gap.text)
        except Exception:
            logger.exception("could not log the pipeline gap %s → %s", gap.output_format, gap.input_format)
