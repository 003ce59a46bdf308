"""Every number the ranker uses, in one frozen dataclass, with where each value came from.

Scale: fused relevance is 1.0 for a listing ranked first by every candidate list (``ranking.fusion``);
boosts are additive on that scale. Relevance values of neighbouring ranks differ by about 0.01-0.03, so a
boost of 0.02 moves a listing about one place, and the sum of all quality boosts is capped at
``quality_cap`` so that signals reorder near-ties but never lift an irrelevant listing over a relevant one.
Request words rare among the candidates (``ranking.contrast``) are relevance evidence of their own, not a
quality signal: up to ``distinctive_words_boost`` on top of the fused relevance.

Values marked "tuned" were chosen by ``python -m benchmarks.relevance DIR --tune`` on
``shared/data/relevance/hf-dev`` (a small grid, checked on two halves of the queries; see that module).
Quality-signal values cannot be tuned there (the dev catalog has no usage, latency or verification data):
they are conservative defaults, kept small by the cap.

What was measured and NOT taken — about fifty other signals, normalizations, label models, rerankers and
embedding tricks, each with its MRR@10 on all / even / odd queries — is in ``docs/relevance-experiments.md``.
Read it before trying a new relevance idea: most obvious ones are there, with the figures that rejected them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True, slots=True)
class RankingWeights:
    # --- candidate fusion. Tuned on hf-dev (413 queries; MRR@10 all / even half / odd half) with
    # ``benchmarks.relevance --tune`` (grid: fusion x rrf_k x keyword_weight x category_boost x depth):
    #   chosen (score fusion, keyword 1.0, category 0.2, depth 100)     0.271 / 0.239 / 0.303
    #   best of grid (keyword 0.7, depth 200)                           0.272 / 0.241 / 0.304
    #   best RRF (k=60, keyword 0.7, category 0.2, depth 200)           0.261 / 0.225 / 0.297
    #   plain RRF (k=60, equal weights, no boosts)                      0.252
    # z-score instead of min-max scaling: 0.269 at depth 100. The grid is flat (0.25-0.27): the choice is
    # stable across halves, not a sharp optimum.
    fusion: Literal["rrf", "score"] = "score"
    rrf_k: float = 30.0
    keyword_weight: float = 1.0
    vector_weight: float = 1.0
    # Hits requested from each list. Min-max scaling needs a deep enough list to set a meaningful
    # minimum: MRR@10 at depth 30 / 50 / 100 / 200 = 0.263 / 0.265 / 0.271 / 0.272, and ranking costs about
    # 1 ms per 100 candidates, so 100.
    candidate_depth: int = 100

    # --- query understanding. Top-label accuracy on hf-dev: all three signals 0.62; without keyword votes
    # 0.59, without vector votes 0.60, without label text 0.55. MRR@10 moved by < 0.005 across
    # vote_depth 5-20, vote weights 0-0.4 and vote_temperature 0.02-0.1, so these stay at round values.
    label_text_weight: float = 1.0  # cosine(query, label text)
    vector_vote_weight: float = 0.2  # labels of the top vector hits
    keyword_vote_weight: float = 0.2  # labels of the top keyword hits
    vote_depth: int = 10
    vote_temperature: float = 0.05  # cosine gap at which a neighbour's vote drops by e
    label_temperature: float = (
        0.05  # softmax temperature over label evidence (depth 50: 0.02 -> 0.264, 0.05 -> 0.265)
    )
    max_labels: int = 3
    min_label_probability: float = 0.05
    format_min_probability: float = 0.5  # infer formats only from a label this probable

    # --- boosts from the interpretation. category_boost at depth 100: 0 -> 0.264, 0.05 -> 0.268,
    # 0.1 -> 0.267, 0.2 -> 0.271, 0.3 -> 0.270. 0.2 keeps the boost below the relevance of a listing
    # first in one of the two lists (0.5). format_boost: untested (hf-dev declares no formats).
    category_boost: float = 0.2  # times P(listing's label)
    format_boost: float = 0.02  # per matching inferred input/output format

    # --- request words rare among the candidates (``ranking.contrast``): times the listing's share of
    # their candidate-local weight (0..1). The one addition that lifted both halves of hf-dev. MRR@10 all /
    # even / odd at the other values' defaults (depth 100), from ``--tune``:
    #   0 -> 0.283 / 0.239 / 0.328;  0.3 -> 0.290 / 0.244 / 0.335;  0.5 -> 0.293 / 0.250 / 0.336;
    #   0.6 -> 0.295 / 0.251 / 0.338;  0.7 -> 0.294 / 0.253 / 0.336;  0.9 -> 0.291 / 0.251 / 0.331.
    # 2-fold: the value best on the even half (0.7) scores 0.336 on the odd half (+0.008), the value best
    # on the odd half (0.6-0.7) 0.251-0.253 on the even half (+0.012-0.014); paired bootstrap of the gain
    # on all queries, 90% interval: 0.3 [+0.000, +0.012], 0.5 [+0.002, +0.017], 0.6 [+0.003, +0.020]
    # (0.5: 34 queries better, 30 worse). 0.5: the middle of the plateau, not its best point. With
    # it the rest of the grid (fusion x keyword_weight x category_boost x depth) stays best at the values
    # above (depth 200: 0.294 / 0.251 / 0.337, within noise). Variants within noise of it: description
    # words only; a short stop list; two-letter words; normalizing by the best candidate's share instead
    # of the request's total (worse past 0.3). Cost: one scan of each candidate's text for the
    # request's own words (``ranking.contrast.RequestWords``), ~1 ms for ~170 candidates at 100k.
    # Lucene's English stop words are left out (0.2929 -> 0.2924, within noise) so that no explanation
    # credits "the", which in a small catalog can be rare among the candidates.
    distinctive_words_boost: float = 0.5

    # --- request words weighted in the keyword query (``ranking.term_weights``): each word's BM25 term
    # boosted by (its distance from the request's mean token vector / the largest) ** power; 0 = off.
    # MRR@10 all / even / odd from one snapshot at the values above (unweighted 0.292 / 0.247 / 0.338):
    #   power 0.5 -> 0.293 / 0.247 / 0.339;  1 -> 0.297 / 0.253 / 0.341;  1.5 -> 0.299 / 0.255 / 0.343;
    #   2 -> 0.302 / 0.260 / 0.345;  2.5 -> 0.300 / 0.261 / 0.339;  3 -> 0.296 / 0.256 / 0.336.
    # 2: the middle of the plateau; paired bootstrap of its gain, 90% interval [+0.001, +0.019] (45 queries
    # better, 26 worse). With it every cell of distinctive_words_boost 0.3-0.7 x category_boost 0.1-0.3
    # gains 0.005-0.012 and the values above stay best; keyword_weight 0.7 / 1.3: 0.293 / 0.292. At other
    # depths one half gains: 50: 0.288 / 0.247 / 0.329 -> 0.293 / 0.244 / 0.341; 200: 0.291 / 0.246 /
    # 0.337 -> 0.300 / 0.263 / 0.338.
    # Cost: BM25 now waits for the encode (whose forward pass gives the distances) instead of running
    # beside it (``catalog.search_service``); the words' spans come from the same tokenization.
    keyword_term_weight_power: float = 2.0
    # Requests with fewer distinct words than this keep every word at 1: in a short request every word is
    # content, and the distances say nothing ("image captioning": 'captioning' 0.07, "translate english to
    # german": 'to' 0.70 over 'english' 0.35). A guard, not tuned: hf-dev's shortest request has 9
    # distinct words, so its figures are unchanged.
    keyword_term_weight_min_words: int = 8

    # --- quality signals (defaults; bounded by quality_cap)
    usage_boost: float = 0.02  # times relative usage in its category (0..1)
    accuracy_boost: float = 0.01  # times accuracy (0..1)
    latency_boost: float = 0.01  # times ref / (ref + p50 latency)
    latency_reference_ms: float = 100.0
    verified_boost: float = 0.01
    failed_penalty: float = 0.03  # verification failed
    gpu_penalty: float = 0.03  # needs a GPU while the request says CPU only
    stated_preference_factor: float = 2.0  # accuracy/latency boosts when the request asks for them
    quality_cap: float = 0.05  # |sum of quality boosts| never exceeds this

    def with_(self, **changes: object) -> RankingWeights:
        return replace(self, **changes)


DEFAULT_WEIGHTS = RankingWeights()
