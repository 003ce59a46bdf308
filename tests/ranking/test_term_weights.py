"""Request word weights for the keyword query, from the model's reading of the request."""

from __future__ import annotations

import pytest

from ranking.query_understanding import QueryUnderstanding
from ranking.ranker import Ranker
from ranking.term_weights import keyword_word_weights
from ranking.weights import DEFAULT_WEIGHTS
from search.embeddings import Encoder


def test_weights_are_distances_over_the_largest_to_the_power() -> None:
    distances = {"we": 0.0, "detect": 0.5, "tumours": 0.25}
    assert keyword_word_weights(distances, 1.0) == {"we": 0.0, "detect": 1.0, "tumours": 0.5}
    assert keyword_word_weights(distances, 2.0) == {"we": 0.0, "detect": 1.0, "tumours": pytest.approx(0.25)}


def test_no_weights_when_off_or_when_nothing_tells_the_words_apart() -> None:
    assert keyword_word_weights({"detect": 0.5}, 0.0) == {}
    assert keyword_word_weights({"image": 0.4, "captioning": 0.1}, 2.0, min_words=3) == {}  # too short
    assert keyword_word_weights({"image": 0.4, "captioning": 0.1, "of": 0.0}, 1.0, min_words=3) == {
        "image": 1.0, "captioning": 0.25, "of": 0.0,
    }  # fmt: skip
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


def test_the_ranker_leaves_a_short_request_unweighted(encoder: Encoder) -> None:
    ranker = Ranker(QueryUnderstanding(encoder.encode_documents))
    short = encoder.submit_query("image captioning", with_words=True).result().word_distances
    assert short is not None and ranker.keyword_word_weights(short) == {}
    long = "We run a photo sharing site and need short captions written for every uploaded image."
    weights = ranker.keyword_word_weights(encoder.submit_query(long, with_words=True).result().word_distances)
    assert max(weights.values()) == 1.0 and min(weights.values()) < 0.5
