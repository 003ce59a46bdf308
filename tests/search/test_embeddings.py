"""The real MiniLM encoder (loaded once per session) and the text a listing is embedded as."""

from __future__ import annotations

import numpy as np
import pytest
from search_support import listing

from search.documents import TEXT_RECIPE_VERSION, listing_text, text_of
from search.embeddings import DIMENSION, Encoder, QueryCache, QueryEncoding


def test_query_vector_is_normalized_float32(encoder: Encoder) -> None:
    vector = encoder.encode_query("classify the sentiment of product reviews")
    assert vector.shape == (DIMENSION,) == (encoder.dim,)
    assert vector.dtype == np.float32
    assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
    assert encoder.model_name == f"sentence-transformers/all-MiniLM-L6-v2+text-v{TEXT_RECIPE_VERSION}"


def test_repeated_queries_come_from_the_cache(encoder: Encoder) -> None:
    first = encoder.encode_query("detect objects in street photos")
    hits = encoder.cache.hits
    again = encoder.encode_query("  detect objects   in street photos ")  # same words, other spacing
    assert again is first and encoder.cache.hits == hits + 1
    with pytest.raises(ValueError):
        again[0] = 1.0  # cached vectors are shared: read-only


def test_documents_batch_matches_single_queries(encoder: Encoder) -> None:
    texts = ["a sentiment classifier for tweets", "an object detector for drones", "speech to text"]
    matrix = encoder.encode_documents(texts, batch_size=2)
    assert matrix.shape == (3, DIMENSION) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(matrix[1], encoder.encode_query(texts[1]), atol=1e-5)
    assert encoder.encode_documents([]).shape == (0, DIMENSION)


def test_a_query_encodes_as_the_model_encodes_a_document(encoder: Encoder) -> None:
    """Queries take a leaner path through the model than ``SentenceTransformer.encode`` (one forward
    pass, one tokenization that also gives the word spans); the vector must be the same, also for a
    request longer than the model reads (truncated alike)."""
    long = " ".join(f"word{i} of a very long request about speech" for i in range(80))
    texts = ["caption my holiday photos", "Translate Korean subtitles into English, please!", long]
    documents = encoder.encode_documents(texts, batch_size=1)
    for text, document in zip(texts, documents, strict=True):
        read = encoder.submit_query(text, with_words=True).result()
        np.testing.assert_allclose(read.vector, document, atol=1e-6)
    assert read.word_distances is not None
    assert "word0" in read.word_distances and "word79" not in read.word_distances  # past the input length


def test_a_query_encodes_on_its_own_thread_count_and_documents_on_torchs(encoder: Encoder) -> None:
    """``query_threads`` holds one query's forward pass to that many torch threads (spinning threads
    slowed a loaded server's encodes up to 10x); document batches go back to torch's default, and the
    vectors do not change."""
    import torch

    default = encoder._runner.submit(torch.get_num_threads).result()
    wanted = 1 if default > 1 else 2  # differ from the default, so the test can tell
    limited = Encoder(query_threads=wanted, cache_size=0)
    text = "summarize long legal contracts"
    read = limited.submit_query(text, with_words=True).result()
    assert limited._runner.submit(torch.get_num_threads).result() == wanted
    np.testing.assert_allclose(read.vector, encoder.encode_query(text), atol=1e-6)
    limited.encode_documents([text, "detect cars"])
    assert limited._runner.submit(torch.get_num_threads).result() == default


def test_similar_meaning_scores_higher(encoder: Encoder) -> None:
    query = encoder.encode_query("is this movie review positive or negative")
    docs = encoder.encode_documents(["sentiment analysis of film critiques", "segment tumours in MRI scans"])
    scores = docs @ query
    assert scores[0] > scores[1] + 0.2


def test_lru_cache_evicts_least_recently_used() -> None:
    cache = QueryCache(2)
    a, b, c = (QueryEncoding(np.full(2, i, dtype=np.float32)) for i in range(3))
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # a is now the most recent
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    disabled = QueryCache(0)
    disabled.put("a", a)
    assert disabled.get("a") is None and len(disabled) == 0


def test_a_cached_vector_without_word_distances_is_a_miss_for_a_search_that_needs_them(
    encoder: Encoder,
) -> None:
    text = "We want our app to transcribe Korean speech recordings."
    plain = encoder.encode_query(text)
    read = encoder.submit_query(text, with_words=True).result()
    np.testing.assert_allclose(read.vector, plain, atol=1e-6)  # one forward pass, the same vector
    assert read.word_distances is not None and set(read.word_distances) == {
        "we", "want", "our", "app", "to", "transcribe", "korean", "speech", "recordings",
    }  # fmt: skip
    assert encoder.submit_query(text).result() is read  # now cached with its distances, for both
    assert encoder.submit_query(" ".join(text.split()), with_words=True).result() is read


def test_listing_text_reads_like_a_sentence() -> None:
    text = listing_text(
        "acme/bert-base-sentiment_v2",
        "Natural Language Processing",
        ("Text Classification",),
        ("text classification", "reviews"),
        "  Classifies   product reviews.\n",
    )
    assert text == (
        "Classifies product reviews. "
        "bert base sentiment v2. Natural Language Processing, Text Classification, reviews"
    )
    assert listing_text("x", "Vision") == "x. Vision"
    doc = listing("a", name="resnet", category="Vision", subcategories=("Detection",), description="d")
    assert text_of(doc) == "d. resnet. Vision, Detection"
