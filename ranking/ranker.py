"""The relevance ranker: fused candidates + interpretation boosts + quality signals, all explained.

The catalog's search service calls it once per RELEVANCE search, after fetching keyword and vector
candidates under the same facet filters and the projections of their union::

    ranker = Ranker(QueryUnderstanding(encoder.encode_documents))
    ranker.understanding.rebuild(all_projections)          # at startup / reindex
    ranker.understanding.update(upserted, removed_ids)      # on index writes
    interpretation, results = ranker.rank(text, qvec, keyword_hits, vector_hits, projections)

Scores are sums of ``ScorePart`` values on a fixed scale (``ranking.weights``), largest part first:
the fused keyword / semantic relevance, the boosts for what the request was understood to mean, the
boost for request words that are rare among this request's candidates (``ranking.contrast``), and the
bounded quality signals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ranking.contrast import NO_DISTINCTIVE_WORDS, DistinctiveWords, distinctive_words
from ranking.fusion import Contribution, normalized_score_fusion, reciprocal_rank_fusion
from ranking.pending import PendingResults, pending_results
from ranking.query_understanding import Label, QueryUnderstanding, label_of
from ranking.signals import quality_parts, quality_score
from ranking.term_weights import keyword_word_weights
from ranking.types import Interpretation, RankedResult, ScorePart
from ranking.weights import DEFAULT_WEIGHTS, RankingWeights
from search.types import Hit, IndexedListing

KEYWORD = "keyword"
VECTOR = "vector"


def _relevance_part(contribution: Contribution) -> ScorePart:
    if contribution.source == KEYWORD:
        detail = f"keyword match rank {contribution.rank} (BM25 {contribution.raw_score:.2f})"
        return ScorePart(KEYWORD, contribution.value, f"{detail} (+{contribution.value:.3f})")
    detail = f"semantic similarity {contribution.raw_score:.2f} (rank {contribution.rank})"
    return ScorePart("semantic", contribution.value, f"{detail} (+{contribution.value:.3f})")


def _describe_match(name: str, listing: IndexedListing, interpretation: Interpretation) -> str:
    if name == "category":
        category, subcategory = label_of(listing)
        title = f"{category} / {subcategory}" if subcategory else category
        return f"category inferred: {title} (p={interpretation.probability_of(category, subcategory):.2f})"
    if name == "input_format":
        return f"input format {interpretation.input_format}, as inferred"
    return f"output format {interpretation.output_format}, as inferred"


def _describe_distinctive(listing: IndexedListing, contrast: DistinctiveWords, value: float) -> str:
    shown = contrast.matched(listing)[:4]
    quoted = ", ".join(f"'{word}'" for word in shown)
    return f"contains request words rare among the candidates: {quoted} (+{value:.3f})"


class InterpretationBoosts:
    """The boosts for matching one request's interpretation, ready to look up per candidate.

    ``Interpretation.probability_of`` scans the label guesses; ranking asks it for every candidate, so the
    guesses are put in a dict once per request (the first guess of a label wins, as in the scan)."""

    __slots__ = ("category_boost", "format_boost", "input_format", "output_format", "probabilities")

    def __init__(self, weights: RankingWeights, interpretation: Interpretation) -> None:
        self.category_boost = weights.category_boost
        self.format_boost = weights.format_boost
        self.input_format = interpretation.input_format
        self.output_format = interpretation.output_format
        self.probabilities: dict[Label, float] = {}
        for guess in interpretation.labels:
            self.probabilities.setdefault((guess.category, guess.subcategory), guess.probability)

    def terms(self, listing: IndexedListing) -> list[tuple[str, float]]:
        """(name, value) of each boost ``listing`` gets; no strings, since this runs for every candidate."""
        terms = []
        probability = self.probabilities.get(label_of(listing), 0.0)
        if probability > 0 and self.category_boost > 0:
            terms.append(("category", self.category_boost * probability))
        if self.format_boost > 0:
            if self.input_format and listing.input_format == self.input_format:
                terms.append(("input_format", self.format_boost))
            if self.output_format and listing.output_format == self.output_format:
                terms.append(("output_format", self.format_boost))
        return terms


class Ranker:
    """Stateless per query; the catalog-derived state lives in ``understanding``."""

    def __init__(self, understanding: QueryUnderstanding, weights: RankingWeights = DEFAULT_WEIGHTS) -> None:
        self.understanding = understanding
        self.weights = weights

    def fuse(self, keyword_hits: Sequence[Hit], vector_hits: Sequence[Hit]) -> dict[str, list[Contribution]]:
        w = self.weights
        lists = {KEYWORD: keyword_hits, VECTOR: vector_hits}
        weights = {KEYWORD: w.keyword_weight, VECTOR: w.vector_weight}
        if w.fusion == "score":
            return normalized_score_fusion(lists, weights)
        return reciprocal_rank_fusion(lists, weights, w.rrf_k)

    def keyword_word_weights(self, word_distances: Mapping[str, float]) -> dict[str, float]:
        """Weights of the request's words in the keyword query (``ranking.term_weights``); empty when
        off (every word counts 1)."""
        w = self.weights
        return keyword_word_weights(
            word_distances, w.keyword_term_weight_power, w.keyword_term_weight_min_words
        )

    def interpretation_terms(
        self, listing: IndexedListing, interpretation: Interpretation
    ) -> list[tuple[str, float]]:
        """(name, value) boosts for matching what the request was understood to mean."""
        return InterpretationBoosts(self.weights, interpretation).terms(listing)

    def distinctive_words(self, text: str, candidates: Iterable[IndexedListing]) -> DistinctiveWords:
        """The request's word weights over its candidates (nothing when the boost is off)."""
        if self.weights.distinctive_words_boost <= 0:
            return NO_DISTINCTIVE_WORDS
        return distinctive_words(text, candidates)

    def score(
        self,
        contributions: Sequence[Contribution],
        listing: IndexedListing,
        interpretation: Interpretation,
        contrast: DistinctiveWords = NO_DISTINCTIVE_WORDS,
    ) -> float:
        """The final score without building the explanation (equal to the sum of ``explain``'s parts)."""
        return self.scorer(interpretation, contrast)(contributions, listing)

    def scorer(
        self, interpretation: Interpretation, contrast: DistinctiveWords = NO_DISTINCTIVE_WORDS
    ) -> Callable[[Sequence[Contribution], IndexedListing], float]:
        """``score`` for one request's candidates: what depends on the request alone (the label
        probabilities, the weights) is looked up once, not for each of the ~150 candidates."""
        boosts = InterpretationBoosts(self.weights, interpretation)
        terms, shares = boosts.terms, contrast.shares
        distinct_boost = self.weights.distinctive_words_boost
        constraints, weights = interpretation.constraints, self.weights

        def score(contributions: Sequence[Contribution], listing: IndexedListing) -> float:
            return (
                sum(c.value for c in contributions)
                + sum(value for _, value in terms(listing))
                + distinct_boost * shares.get(listing.id, 0.0)
                + quality_score(listing, constraints, weights)
            )

        return score

    def explain(
        self,
        contributions: Sequence[Contribution],
        listing: IndexedListing,
        interpretation: Interpretation,
        contrast: DistinctiveWords = NO_DISTINCTIVE_WORDS,
    ) -> RankedResult:
        parts = [_relevance_part(c) for c in contributions]
        parts += [
            ScorePart(name, value, f"{_describe_match(name, listing, interpretation)} (+{value:.3f})")
            for name, value in self.interpretation_terms(listing, interpretation)
        ]
        distinct = self.weights.distinctive_words_boost * contrast.share(listing.id)
        if distinct > 0:
            detail = _describe_distinctive(listing, contrast, distinct)
            parts.append(ScorePart("distinctive_words", distinct, detail))
        parts += quality_parts(listing, interpretation.constraints, self.weights)
        parts.sort(key=lambda part: -abs(part.value))
        return RankedResult(listing.id, sum(part.value for part in parts), tuple(parts))

    def rank(
        self,
        text: str,
        query_vector: np.ndarray | None,
        keyword_hits: Sequence[Hit],
        vector_hits: Sequence[Hit],
        listings: Mapping[str, IndexedListing],
        interpretation: Interpretation | None = None,
        limit: int | None = None,
    ) -> tuple[Interpretation, list[RankedResult]]:
        """The candidates that have a projection in ``listings``, best first (ties broken by id).

        Every candidate is scored; only the first ``limit`` (all when None) get their explanation built,
        which is most of the per-result cost. ``interpretation`` may be passed in (computed once and
        reused across pages); otherwise it is inferred from the same candidates.
        """
        interpretation, first, _ = self.rank_in_parts(
            text, query_vector, keyword_hits, vector_hits, listings, interpretation, limit
        )
        return interpretation, first

    def rank_in_parts(
        self,
        text: str,
        query_vector: np.ndarray | None,
        keyword_hits: Sequence[Hit],
        vector_hits: Sequence[Hit],
        listings: Mapping[str, IndexedListing],
        interpretation: Interpretation | None = None,
        limit: int | None = None,
        order_key: Callable[[tuple[float, str]], Any] | None = None,
    ) -> tuple[Interpretation, list[RankedResult], Callable[[], PendingResults]]:
        """``rank``, plus a function giving every candidate, in the same order, unexplained.

        ``order_key`` reorders the candidates (a sort by a field: ``catalog.search_service``): a key over
        each one's (-relevance score, id); by relevance, ties broken by id, when None. The scores and
        explanations stay the relevance's either way.

        A search keeps every candidate for its later pages (``catalog.search_snapshots``), but neither its
        first page nor its snapshot writer pays for explanations nobody may read: the function gives the
        candidates as the columns of numbers their explanations are built from (``ranking.pending``), and
        a later page explains its own ten (``explain_reasons``). Explaining costs ~15 us a result; even
        keeping each one's ``reasons`` as tuples cost the writer ~1.2 ms a search. Nothing here is
        mutated afterwards, so the call may run on another thread."""
        if interpretation is None:
            interpretation = self.understanding.interpret(
                text, query_vector, keyword_hits, vector_hits, listings
            )
        fused = {
            listing_id: contributions
            for listing_id, contributions in self.fuse(keyword_hits, vector_hits).items()
            if listing_id in listings  # a candidate deleted or hidden since retrieval is dropped
        }
        contrast = self.distinctive_words(text, (listings[i] for i in fused))
        score = self.scorer(interpretation, contrast)
        order = sorted(
            (
                (-score(contributions, listings[listing_id]), listing_id)
                for listing_id, contributions in fused.items()
            ),
            key=order_key,
        )
        cut = len(order) if limit is None else limit
        understood = interpretation

        def explained(chosen: Sequence[tuple[float, str]]) -> list[RankedResult]:
            return [self.explain(fused[i], listings[i], understood, contrast) for _, i in chosen]

        return interpretation, explained(order[:cut]), lambda: pending_results(order, fused, contrast)

    def explain_reasons(
        self, result: RankedResult, listing: IndexedListing, interpretation: Interpretation
    ) -> RankedResult:
        """The explanation of a result ``rank_in_parts`` left pending (``PendingResults.result``), from its
        ``reasons`` and the listing as it is now: the same parts and score as at ranking time unless the
        listing's quality signals or labels changed since (then the parts say what it scores now)."""
        assert result.reasons is not None
        contributions, share, words = result.reasons
        contrast = DistinctiveWords(
            weights=dict(words), shares={result.id: share}, found={result.id: frozenset(w for w, _ in words)}
        )
        explained = self.explain([Contribution(*c) for c in contributions], listing, interpretation, contrast)
        return explained
