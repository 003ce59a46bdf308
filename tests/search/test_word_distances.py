"""Word distances from the query's meaning, read off the embedding model's token vectors."""

from __future__ import annotations

import numpy as np
import pytest

from search.word_distances import word_distances, words_of

SPECIAL = (0, 0)


def test_words_are_lower_cased_runs_of_letters_and_digits_with_their_spans() -> None:
    assert words_of("Detect X-ray_scans, v2") == [
        ("detect", 0, 6), ("x", 7, 8), ("ray", 9, 12), ("scans", 13, 18), ("v2", 20, 22),
    ]  # fmt: skip


def test_a_word_on_the_mean_direction_is_at_distance_zero() -> None:
    text = "we detect tumours"
    # [CLS], we, detect, tumours, [SEP]: the mean of all five is (0.8, 0), the direction "we" lies on.
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, -3.0]])
    spans = [SPECIAL, (0, 2), (3, 9), (10, 17), SPECIAL]
    assert word_distances(text, vectors, spans) == {
        "we": pytest.approx(0.0, abs=1e-9), "detect": pytest.approx(1.0),
        "tumours": pytest.approx(1 - 1 / np.sqrt(2)),  # 45 degrees off the mean
    }  # fmt: skip


def test_a_word_of_several_tokens_is_their_mean_vector_and_a_repeat_counts_by_its_closest() -> None:
    text = "Speech to speech"
    # [CLS], "Sp", "eech", to, speech, [SEP]; the mean of all six is (4/6, 0).
    vectors = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, 1.0], [1.0, 1.0], [0.0, -2.0]])
    spans = [SPECIAL, (0, 2), (2, 6), (7, 9), (10, 16), SPECIAL]
    # "Speech": the mean of its two tokens, (1, 0), is on the mean direction (their distances, 0.29
    # each, would not be); the second occurrence is 45 degrees off, but the closer one counts.
    assert word_distances(text, vectors, spans) == {
        "speech": pytest.approx(0.0, abs=1e-9), "to": pytest.approx(1.0),
    }  # fmt: skip


def test_words_past_the_models_input_have_no_distance() -> None:
    text = "detect tumours in scans"
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    spans = [SPECIAL, (0, 6), (7, 14), SPECIAL]  # truncated after "tumours"
    assert set(word_distances(text, vectors, spans)) == {"detect", "tumours"}


def test_mismatched_vectors_and_spans_are_refused() -> None:
    with pytest.raises(ValueError, match="3 token spans"):
        word_distances("a b", np.zeros((2, 4)), [SPECIAL, (0, 1), (2, 3)])
