"""Request word weights for the keyword query, from the model's reading of the request."""

from __future__ import annotations

import pytest

from ranking.term_weights import keyword_word_weights
from ranking.weights import DEFAULT_WEIGHTS
from search.embeddings import Encoder


def test_weights_are_distances_over_the_largest_to_the_power() -> None:
    distances = {"we": 0.0, "detect": 0.5, "tumours": 0.25}
    assert keyword_word_weights(distances, 1.0) == {"we": 0.0, "detect": 1.0, "tumours": 0.5}
    assert keyword_word_weights(distances, 2.0) == {"we": 0.0, "detect": 1.0, "tumours": pytest.approx(0.25)}


def test_no_weights_when_off_or_when_nothing_tells_the_words_apart() -> None:
    assert keyword_word_weights({"detect": 0.5}, 0.0) == {}
    assert keyword_word_weights({"detect": 0.0, "tumours": 0.0}, 2.0) == {}
    assert keyword_word_weights({}, 2.0) == {}


@pytest.mark.parametrize(
    ("text", "filler", "content"),
    [
        ("We want our app to transcribe Korean speech recordings.", ("our", "to"), ("korean", "speech")),
        ("My team needs to summarize long legal contracts for our clients.", ("my", "our", "to"), ("legal",)),
    ],
)
def test_with_the_real_model_pronouns_and_particles_weigh_less_than_task_words(
    encoder: Encoder, text: str, filler: tuple[str, ...], content: tuple[str, ...]
) -> None:
    distances = encoder.submit_query(text, with_words=True).result().word_distances
    assert distances is not None
    weights = keyword_word_weights(distances, DEFAULT_WEIGHTS.keyword_term_weight_power)
    assert max(weights[word] for word in filler) < min(weights[word] for word in content)
