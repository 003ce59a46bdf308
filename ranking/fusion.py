"""Fusing candidate lists (keyword, vector) into one relevance score per listing.

Two pure methods, both scaled so that a listing ranked first by every list scores exactly 1.0 — that
fixed scale is what lets the query-understanding and quality boosts be stated as bounded additive terms:

- reciprocal-rank fusion (RRF): ``w / (k + rank)``; ignores raw scores, so BM25's unbounded scores and
  cosine similarities need no calibration;
- normalized score fusion: each list's scores min-max scaled over its own hits, then weighted.

``benchmarks.relevance --tune`` measures both on the dev set; min-max score fusion came out ahead
(0.271 vs 0.261 MRR@10 on hf-dev, see ``ranking.weights``), and RRF stays selectable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from infra.errors import BadInput
from search.types import Hit


class Contribution(NamedTuple):
    """What one candidate list gave one listing: its share of the fused score, rank and raw score.

    A named tuple, not a frozen dataclass: a search makes one per candidate list entry (~400), and a
    frozen dataclass's ``__init__`` (``object.__setattr__`` per field) took ~2.5x as long to build one."""

    source: str
    value: float
    rank: int
    raw_score: float


def _check_weights(lists: Mapping[str, Sequence[Hit]], weights: Mapping[str, float]) -> float:
    unknown = set(lists) - set(weights)
    if unknown:
        raise BadInput(f"no fusion weight for candidate lists {sorted(unknown)}")
    if any(w < 0 for w in weights.values()):
        raise BadInput("fusion weights must not be negative")
    total = sum(weights[name] for name in lists)
    if total <= 0:
        raise BadInput("fusion weights of the candidate lists sum to zero")
    return total


def reciprocal_rank_fusion(
    lists: Mapping[str, Sequence[Hit]], weights: Mapping[str, float], k: float
) -> dict[str, list[Contribution]]:
    """``sum_lists w_l / (k + rank_l)``, divided by ``sum_l w_l / (k + 1)`` so that the maximum is 1.0.

    A listing missing from a list gets nothing from it. Ranks are taken from the order of the hits
    (1-based), not from ``Hit.rank``, so a list filtered after retrieval still ranks densely.
    """
    if k < 0:
        raise BadInput(f"the RRF constant k must not be negative, got {k}")
    scale = _check_weights(lists, weights) / (k + 1)
    fused: dict[str, list[Contribution]] = {}
    for source, hits in lists.items():
        weight = weights[source]
        for rank, hit in enumerate(hits, start=1):
            value = weight / (k + rank) / scale
            fused.setdefault(hit.id, []).append(Contribution(source, value, rank, hit.score))
    return fused


def normalized_score_fusion(
    lists: Mapping[str, Sequence[Hit]], weights: Mapping[str, float]
) -> dict[str, list[Contribution]]:
    """``sum_lists w_l * (s - min_l) / (max_l - min_l)`` over each list's own hits, divided by ``sum w``.

    A list whose hits all score the same gives each of them its full weight.
    """
    total = _check_weights(lists, weights)
    fused: dict[str, list[Contribution]] = {}
    for source, hits in lists.items():
        if not hits:
            continue
        scores = [hit.score for hit in hits]
        low, high = min(scores), max(scores)
        spread = high - low
        for rank, hit in enumerate(hits, start=1):
            unit = (hit.score - low) / spread if spread > 0 else 1.0
            value = weights[source] * unit / total
            fused.setdefault(hit.id, []).append(Contribution(source, value, rank, hit.score))
    return fused
