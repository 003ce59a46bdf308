"""Quality signals as small, bounded, explained score parts.

Usage, accuracy, latency and verification say how *good* a listing is, not whether it answers the
request; so each is a small additive term on the relevance scale and their sum is clipped to
``±quality_cap`` (``ranking.weights``). Stated preferences ("real time", "most accurate") scale the matching
term up by ``stated_preference_factor`` (still under the cap); "on a CPU" penalizes listings that need a GPU.
Missing values give nothing — an unmeasured listing is not punished for being new.
"""

from __future__ import annotations

from ranking.types import Constraints, ScorePart
from ranking.weights import RankingWeights
from search.types import IndexedListing


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


def quality_terms(
    listing: IndexedListing, constraints: Constraints, w: RankingWeights
) -> list[tuple[str, float]]:
    """(name, value) of every quality term that applies, before the cap; the one place with the math."""
    terms: list[tuple[str, float]] = []
    if listing.relative_usage > 0:
        terms.append(("usage", w.usage_boost * _clip01(listing.relative_usage)))
    if listing.accuracy is not None:
        factor = w.stated_preference_factor if constraints.prefers_accurate else 1.0
        terms.append(("accuracy", w.accuracy_boost * factor * _clip01(listing.accuracy)))
    if listing.latency_p50_ms is not None and listing.latency_p50_ms >= 0:
        factor = w.stated_preference_factor if constraints.prefers_fast else 1.0
        speed = w.latency_reference_ms / (w.latency_reference_ms + listing.latency_p50_ms)
        terms.append(("latency", w.latency_boost * factor * speed))
    if listing.verification_status == "verified":
        terms.append(("verified", w.verified_boost))
    elif listing.verification_status == "failed":
        terms.append(("verification_failed", -w.failed_penalty))
    if constraints.cpu_only and listing.gpu:
        terms.append(("needs_gpu", -w.gpu_penalty))
    return terms


def cap_scale(terms: list[tuple[str, float]], cap: float) -> float:
    """The factor that brings the terms' sum within ``±cap`` (1.0 when it already is)."""
    total = sum(value for _, value in terms)
    return cap / abs(total) if abs(total) > cap else 1.0


def quality_score(listing: IndexedListing, constraints: Constraints, weights: RankingWeights) -> float:
    """The capped sum of the quality terms (what ``quality_parts`` adds up to, without the sentences)."""
    terms = quality_terms(listing, constraints, weights)
    if not terms:
        return 0.0
    return sum(value for _, value in terms) * cap_scale(terms, weights.quality_cap)


def _describe(name: str, listing: IndexedListing, constraints: Constraints) -> str:
    if name == "usage":
        return f"used {_clip01(listing.relative_usage):.0%} as much as its category's most used listing"
    if name == "accuracy":
        asked = ", accuracy asked for" if constraints.prefers_accurate else ""
        return f"accuracy {_clip01(listing.accuracy or 0.0):.3g}{asked}"
    if name == "latency":
        asked = ", speed asked for" if constraints.prefers_fast else ""
        return f"p50 latency {listing.latency_p50_ms:.0f} ms{asked}"
    if name == "verified":
        return "verified"
    if name == "verification_failed":
        return "verification failed"
    return f"needs {listing.gpu} GPU(s) but the request says CPU only"


def quality_parts(
    listing: IndexedListing, constraints: Constraints, weights: RankingWeights
) -> list[ScorePart]:
    """The quality terms as explained parts, scaled down together if their sum would exceed the cap."""
    terms = quality_terms(listing, constraints, weights)
    if not terms:
        return []
    scale = cap_scale(terms, weights.quality_cap)
    note = ", capped" if scale < 1.0 else ""
    return [
        ScorePart(
            name, value * scale, f"{_describe(name, listing, constraints)} ({value * scale:+.3f}{note})"
        )
        for name, value in terms
    ]
