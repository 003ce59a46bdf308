"""Request word weights for the keyword query, from the model's contextual token vectors."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.term_weights import request_word_weights, words_of
from ranking.weights import DEFAULT_WEIGHTS

SPECIAL = (0, 0)


def test_words_are_lower_cased_runs_of_letters_and_digits_with_their_spans() -> None:
    assert words_of("Detect X-ray_scans, v2") == [
        ("detect", 0, 6), ("x", 7, 8), ("ray", 9, 12), ("scans", 13, 18), ("v2", 20, 22),
    ]  # fmt: skip


def test_a_word_on_the_mean_direction_weighs_nothing_and_the_farthest_weighs_one() -> None:
    text = "we detect tumours"
    # [CLS], we, detect, tumours, [SEP]: the mean of all five is (0.8, 0), the direction "we" lies on.
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, -3.0]])
    spans = [SPECIAL, (0, 2), (3, 9), (10, 17), SPECIAL]
    tumours = 1 - 1 / np.sqrt(2)  # 45 degrees off the mean; "detect" is 90 degrees off (distance 1)
    assert request_word_weights(text, vectors, spans, 1.0) == {
        "we": pytest.approx(0.0, abs=1e-9), "detect": pytest.approx(1.0), "tumours": pytest.approx(tumours),
    }  # fmt: skip
    assert request_word_weights(text, vectors, spans, 2.0)["tumours"] == pytest.approx(tumours**2)


def test_a_word_of_several_tokens_is_their_mean_vector_and_a_repeat_counts_by_its_closest() -> None:
    text = "Speech to speech"
    # [CLS], "Sp", "eech", to, speech, [SEP]; the mean of all six is (4/6, 0).
    vectors = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0], [0.0, 1.0], [1.0, 1.0], [0.0, -2.0]])
    spans = [SPECIAL, (0, 2), (2, 6), (7, 9), (10, 16), SPECIAL]
    # "Speech": the mean of its two tokens, (1, 0), is on the mean direction (their distances, 0.29
    # each, would not be); the second occurrence is 45 degrees off, but the closer one counts.
    assert request_word_weights(text, vectors, spans, 1.0) == {
        "speech": pytest.approx(0.0, abs=1e-9), "to": pytest.approx(1.0),
    }  # fmt: skip


def test_no_weights_when_nothing_tells_the_words_apart() -> None:
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.5, 0.0], [1.0, 0.0]])
    assert request_word_weights("detect tumours", vectors, [SPECIAL, (0, 6), (7, 14), SPECIAL], 2.0) == {}


def test_words_past_the_models_input_get_no_weight_and_power_zero_turns_it_off() -> None:
    text = "detect tumours in scans"
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    spans = [SPECIAL, (0, 6), (7, 14), SPECIAL]  # truncated after "tumours"
    assert set(request_word_weights(text, vectors, spans, 2.0)) == {"detect", "tumours"}
    assert request_word_weights(text, vectors, spans, 0.0) == {}


def test_mismatched_vectors_and_spans_are_refused() -> None:
    with pytest.raises(ValueError, match="3 token spans"):
        request_word_weights("a b", np.zeros((2, 4)), [SPECIAL, (0, 1), (2, 3)], 2.0)


@pytest.fixture(scope="module")
def model():
    from sentence_transformers import SentenceTransformer

    from search.embeddings import default_model_path

    return SentenceTransformer(str(default_model_path()), device="cpu")


@pytest.mark.parametrize(
    ("text", "filler", "content"),
    [
        ("We want our app to transcribe Korean speech recordings.", ("our", "to"), ("korean", "speech")),
        ("My team needs to summarize long legal contracts for our clients.", ("my", "our", "to"), ("legal",)),
    ],
)
def test_with_the_real_model_pronouns_and_particles_weigh_less_than_task_words(
    model, text: str, filler: tuple[str, ...], content: tuple[str, ...]
) -> None:
    output = model.encode([text], output_value=None)[0]
    spans = model.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    weights = request_word_weights(
        text, output["token_embeddings"].numpy(), spans, DEFAULT_WEIGHTS.keyword_term_weight_power
    )
    assert set(weights) == {word for word, _, _ in words_of(text)}
    assert max(weights[word] for word in filler) < min(weights[word] for word in content)
