"""The relevance benchmark's name matching and metrics (the figures the issue's target is judged by)."""

from __future__ import annotations

import pytest
from ranking_support import hits, listing

from benchmarks.relevance import (
    Candidates,
    Query,
    Scores,
    label_oracle,
    name_matcher,
    oracle_interpretation,
    relevant_labels,
)
from ranking.query_understanding import QueryUnderstanding
from ranking.ranker import Ranker
from search.embeddings import Encoder


def test_names_match_exactly_or_by_their_last_path_part() -> None:
    matches = name_matcher(["org/model-a", "model-b"])
    assert matches("org/model-a") and matches("someone/model-b") and matches("model-b")
    assert not matches("other/model-a") and not matches("model-a") and not matches("org/model-bb")


def test_recall_and_mrr_at_cutoffs() -> None:
    scores = Scores.empty()
    scores.add(["x", "hit"], name_matcher(["hit"]))  # rank 2
    scores.add(["hit", "hit"], name_matcher(["hit"]))  # rank 1 (the first match counts)
    scores.add([f"n{i}" for i in range(10)] + ["hit"], name_matcher(["hit"]))  # rank 11: beyond @10
    scores.add([], name_matcher(["hit"]))
    figures = scores.as_dict()
    assert figures == {
        "R@1": 0.25,
        "R@5": 0.5,
        "R@10": 0.5,
        "MRR@10": pytest.approx((0.5 + 1.0) / 4),
        "queries": 4,
    }


DETECTION = ("Computer Vision", "Object Detection")
SEGMENTATION = ("Computer Vision", "Image Segmentation")


def test_the_oracle_knows_every_label_of_a_relevant_listing_for_sure() -> None:
    listings = {
        "a": listing("a", *DETECTION, name="org/boxes"),
        "b": listing("b", *SEGMENTATION, name="masks"),
        "c": listing("c", "Audio", None, name="other"),
    }
    wanted = relevant_labels(Query("find things", frozenset({"boxes", "masks"})), listings)
    assert wanted == {DETECTION, SEGMENTATION}
    truth = oracle_interpretation(wanted)
    assert [(g.category, g.subcategory, g.probability) for g in truth.labels] == [
        (*SEGMENTATION, 1.0),  # in a stable order: by category, then subcategory
        (*DETECTION, 1.0),
    ]
    assert oracle_interpretation(set()).labels == ()


def test_label_oracle_lifts_the_relevant_label_by_the_boost_it_is_given(encoder: Encoder) -> None:
    """Two listings tie but for one rank of keyword relevance; only a category boost larger than that
    gap puts the relevant one (of the other label) first."""
    listings = {
        "wrong": listing("wrong", *SEGMENTATION, name="masks"),
        "right": listing("right", *DETECTION, name="boxes"),
    }
    understanding = QueryUnderstanding(encoder.encode_documents)
    understanding.rebuild(listings.values())
    ranker = Ranker(understanding)
    run = Candidates(
        Query("locate items", frozenset({"boxes"})),
        None,
        hits("wrong", "right", scores=[2.0, 1.0]),
        [],
        hits("wrong", "right", scores=[2.0, 1.0]),
    )
    names = {i: item.name for i, item in listings.items()}
    figures = label_oracle(ranker, [run], listings, names, boosts=(0.0, 2.0))
    assert figures == {0.0: [0.5, 0.5, 0.0], 2.0: [1.0, 1.0, 0.0]}
