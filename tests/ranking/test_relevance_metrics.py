"""The relevance benchmark's name matching and metrics (the figures the issue's target is judged by)."""

from __future__ import annotations

import pytest

from benchmarks.relevance import Scores, name_matcher


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
