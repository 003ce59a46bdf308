"""The ranker end to end on a synthetic catalog: order, bounds of the boosts, and explanations."""

from __future__ import annotations

from dataclasses import replace

import pytest
from catalog_fixture import synthetic_catalog
from ranking_support import hits, listing

from ranking.fusion import Contribution
from ranking.pending import unpack
from ranking.query_understanding import QueryUnderstanding, label_of
from ranking.ranker import InterpretationBoosts, Ranker
from ranking.types import Constraints, Interpretation, LabelGuess
from ranking.weights import DEFAULT_WEIGHTS
from search.embeddings import Encoder
from search.types import IndexedListing


@pytest.fixture
def catalog(encoder: Encoder) -> dict[str, IndexedListing]:
    return synthetic_catalog(encoder)


@pytest.fixture
def ranker(encoder: Encoder, catalog: dict[str, IndexedListing]) -> Ranker:
    understanding = QueryUnderstanding(encoder.encode_documents)
    understanding.rebuild(catalog.values())
    return Ranker(understanding)


@pytest.mark.parametrize("fusion", ["rrf", "score"])
def test_scores_are_the_sum_of_their_parts_best_first(ranker: Ranker, catalog, fusion: str) -> None:
    ranker.weights = DEFAULT_WEIGHTS.with_(fusion=fusion)
    _, results = ranker.rank("x", None, hits("det-1", "asr-1", "tr-1"), hits("asr-1", "det-2"), catalog)
    assert [r.id for r in results][:1] == ["asr-1"]  # in both lists, near the top of each
    assert {r.id for r in results} == {"det-1", "asr-1", "tr-1", "det-2"}
    for result in results:
        assert result.score == pytest.approx(sum(p.value for p in result.parts))
        assert [abs(p.value) for p in result.parts] == sorted(
            (abs(p.value) for p in result.parts), reverse=True
        )
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_explanation_names_every_contribution(encoder: Encoder, ranker: Ranker, catalog) -> None:
    text = "transcribe phone calls to text in real time"
    query = encoder.encode_query(text)
    catalog = {
        **catalog,
        "asr-2": replace(catalog["asr-2"], verification_status="verified", latency_p50_ms=40.0),
    }
    interpretation, results = ranker.rank(
        text,
        query,
        hits("asr-2", "asr-1", scores=[9.0, 4.0]),
        hits("asr-1", "asr-2", "tr-1", scores=[0.7, 0.6, 0.1]),
        catalog,
    )
    assert interpretation.top is not None and interpretation.top.subcategory == "Automatic Speech Recognition"
    assert interpretation.constraints.prefers_fast
    parts = {p.name: p for p in next(r for r in results if r.id == "asr-2").parts}
    assert parts["keyword"].detail.startswith("keyword match rank 1 (BM25 9.00)")
    assert parts["semantic"].detail.startswith("semantic similarity 0.60 (rank 2)")
    assert parts["category"].detail.startswith("category inferred: Audio / Automatic Speech Recognition (p=")
    assert parts["input_format"].detail.startswith("input format audio")
    assert parts["verified"].detail.startswith("verified (+")
    assert "speed asked for" in parts["latency"].detail
    assert "semantic" in {p.name for p in next(r for r in results if r.id == "tr-1").parts}
    assert "category" not in {p.name for p in next(r for r in results if r.id == "tr-1").parts}


def test_boosts_reorder_near_ties_but_cannot_swamp_relevance(ranker: Ranker) -> None:
    w = ranker.weights
    strong = listing("strong", "Audio", "Automatic Speech Recognition")
    weak = listing(
        "weak", "Computer Vision", "Object Detection", input_format="image", output_format="bounding-boxes",
        relative_usage=1.0, accuracy=1.0, latency_p50_ms=0.0, verification_status="verified",
    )  # fmt: skip
    docs = {"strong": strong, "weak": weak}
    sure = Interpretation(
        labels=(LabelGuess("Computer Vision", "Object Detection", 1.0),),
        input_format="image",
        output_format="bounding-boxes",
        constraints=Constraints(prefers_fast=True, prefers_accurate=True),
    )
    max_boost = w.category_boost + 2 * w.format_boost + w.quality_cap
    assert max_boost < 0.5  # below the relevance of being first in one of two equally weighted lists
    # "strong" first in both lists, "weak" last in both: every boost at its maximum does not lift it.
    keyword = hits(
        "strong", *[f"f{i}" for i in range(48)], "weak", scores=[10.0 - 0.2 * i for i in range(50)]
    )
    vector = hits("strong", *[f"g{i}" for i in range(48)], "weak", scores=[0.9 - 0.01 * i for i in range(50)])
    _, results = ranker.rank("x", None, keyword, vector, docs, interpretation=sure)
    assert [r.id for r in results] == ["strong", "weak"]
    # A near tie is decided by the boosts.
    _, results = ranker.rank(
        "x", None, hits("strong", "weak"), hits("weak", "strong"), docs, interpretation=sure
    )
    assert results[0].id == "weak"


def test_limit_explains_only_the_first_results_in_the_same_order(ranker: Ranker, catalog) -> None:
    keyword, vector = hits("det-1", "asr-1", "tr-1", "tr-2"), hits("tr-2", "det-2", "asr-2")
    _, everything = ranker.rank("x", None, keyword, vector, catalog)
    _, first_two = ranker.rank("x", None, keyword, vector, catalog, limit=2)
    assert first_two == everything[:2]


def test_results_left_pending_are_explained_later_exactly_as_at_ranking_time(ranker: Ranker) -> None:
    """A search's snapshot keeps the candidates after its first page with their ``reasons`` only (the
    snapshot writer explaining ~150 of them per search doubled the p95 of searches at 100k listings);
    a later page's explanation, built from them and the unchanged listing, is the one ranking gives."""
    docs = {
        "plain": listing("plain", "Audio", "Automatic Speech Recognition", description="Transcribe speech."),
        "medical": listing(
            "medical", "Audio", "Automatic Speech Recognition", description="Transcribe medical dictation."
        ),
        "other": listing("other", description="Detect objects."),
    }
    keyword = hits("plain", "medical", "other", scores=[10.0, 9.7, 0.0])
    vector = hits("plain", "medical", "other", scores=[0.8, 0.79, 0.1])
    text = "transcribe medical dictation"
    interpretation, everything = ranker.rank(text, None, keyword, vector, docs)
    _, first, rest = ranker.rank_in_parts(text, None, keyword, vector, docs, limit=1)
    columns = rest()
    assert first == everything[:1]
    for kept in (columns, unpack(columns.pack())):  # as held, and as stored in a snapshot row
        pending = kept.results(0, len(kept))
        assert [r.id for r in pending] == [r.id for r in everything]
        assert all(r.parts == () and r.reasons is not None for r in pending)
        explained = [ranker.explain_reasons(r, docs[r.id], interpretation) for r in pending]
        assert explained == everything
        assert kept.results(1, 5) == pending[1:]


def test_candidates_without_a_projection_are_dropped(ranker: Ranker, catalog) -> None:
    _, results = ranker.rank("x", None, hits("gone", "tr-1"), hits("tr-1", "gone-too"), catalog)
    assert [r.id for r in results] == ["tr-1"]


def test_request_words_rare_among_the_candidates_decide_a_near_tie_and_are_explained(ranker: Ranker) -> None:
    docs = {
        "plain": listing("plain", "Audio", "Automatic Speech Recognition", description="Transcribe speech."),
        "medical": listing(
            "medical", "Audio", "Automatic Speech Recognition", description="Transcribe medical dictation."
        ),
        "other": listing("other", description="Detect objects."),
    }
    text = "transcribe medical dictation"
    # "plain" slightly ahead of "medical" in both lists (min-max scaling needs a third, distant hit).
    keyword = hits("plain", "medical", "other", scores=[10.0, 9.7, 0.0])
    vector = hits("plain", "medical", "other", scores=[0.8, 0.79, 0.1])
    _, results = ranker.rank(text, None, keyword, vector, docs)
    assert [r.id for r in results] == ["medical", "plain", "other"]
    for result in results:
        assert result.score == pytest.approx(sum(p.value for p in result.parts))
    parts = {p.name: p for p in results[0].parts}
    assert parts["distinctive_words"].value == pytest.approx(
        ranker.weights.distinctive_words_boost * 1.0  # it has every request word some candidate has
    )
    assert parts["distinctive_words"].detail.startswith(
        "contains request words rare among the candidates: 'dictation', 'medical', 'transcribe' (+"
    )
    # Off, the part is gone and the list order alone decides.
    ranker.weights = ranker.weights.with_(distinctive_words_boost=0.0)
    _, results = ranker.rank(text, None, keyword, vector, docs)
    assert [r.id for r in results] == ["plain", "medical", "other"]
    assert all(p.name != "distinctive_words" for r in results for p in r.parts)


def test_the_per_request_scorer_reads_the_interpretation_as_the_guesses_say(ranker: Ranker, catalog) -> None:
    """Ranking looks each candidate's label up in a dict made once per request instead of scanning the
    guesses; a label guessed twice counts with its first probability, as ``probability_of`` reads it, and
    every candidate's score is the sum of its explanation's parts."""
    interpretation = Interpretation(
        labels=(
            LabelGuess("Audio", "Automatic Speech Recognition", 0.6),
            LabelGuess("Audio", "Automatic Speech Recognition", 0.3),
            LabelGuess("Computer Vision", "Object Detection", 0.1),
        ),
        input_format="audio",
        output_format="text",
        constraints=Constraints(prefers_fast=True),
    )
    contributions = [Contribution("keyword", 0.4, 2, 7.5), Contribution("vector", 0.3, 1, 0.8)]
    score = ranker.scorer(interpretation)
    boosted = 0
    for doc in catalog.values():
        terms = dict(InterpretationBoosts(ranker.weights, interpretation).terms(doc))
        probability = interpretation.probability_of(*label_of(doc))
        assert terms.get("category", 0.0) == ranker.weights.category_boost * probability
        boosted += probability == 0.6
        assert score(contributions, doc) == pytest.approx(
            ranker.explain(contributions, doc, interpretation).score, abs=1e-12
        )
    assert boosted >= 2  # the synthetic catalog's speech recognizers
