"""How much each word of a request counts in the keyword (BM25) query, read off the embedding model.

BM25 weighs a request word by its rarity in the catalog alone. Requests are written as scenarios ("We are
a media company and we have a large volume of ... audio files. We want to transcribe ..."), and words
that are common in requests but rare in producers' descriptions ("we", "our", "am", "want") get a high
catalog IDF and match listings by accident. A longer stop list does not fix it (``ranking.weights``:
NLTK's, scikit-learn's or pronouns only, MRR@10 0.288-0.293 against 0.292). The embedding model already
reads the request in context: MiniLM's contextual token vectors of words that carry little of a
sentence's meaning crowd around the sentence's mean direction (the anisotropy of these models), while
the words the meaning depends on stand apart. So each word is weighted by its distance from the mean
token vector::

    distance(word) = 1 - cos(mean of the word's token vectors, mean of all the request's token vectors)
    weight(word)   = (distance(word) / largest distance in the request) ** power

The mean of all token vectors is what mean pooling makes the query vector from, so the token vectors
come out of the forward pass that encodes the query anyway: no second pass, one tokenization for the
character spans. A word that occurs twice counts by its occurrence closest to the mean. Shuffling the
weights among a request's words instead lowers MRR@10 (``ranking.weights`` has the figures), so it is
the model's reading, not the mere spread of boosts, that helps. What it reliably does is push pronouns
and particles down; among content words the order is far from a reader's idea of a task word (a rare
word split into several wordpieces lands nearer the mean), yet the weights add the same on top of any
stop list: an empirical fit measured on one dev set (hf-dev, MRR@10 0.292 -> 0.302, both halves).

The weights are for the request's *words*, lower-cased runs of letters and digits (``words_of``); the
keyword index maps each word through its own analyzer (stemming, stop words) and boosts the resulting
term by the word's weight, the largest where several words stem alike. A word missing from the result
(beyond the model's input length) keeps weight 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[^\W_]+")


def words_of(text: str) -> list[tuple[str, int, int]]:
    """``(lower-cased word, start, end)`` for each run of letters and digits of ``text``, in order."""
    return [(match.group().lower(), *match.span()) for match in _WORD.finditer(text)]


def request_word_weights(
    text: str,
    token_vectors: np.ndarray,
    token_spans: Sequence[tuple[int, int]],
    power: float,
) -> dict[str, float]:
    """Each word of ``text`` -> its weight in [0, 1], the most distinctive word 1.0 (module docstring).

    ``token_vectors`` (tokens x dim) are the model's contextual token embeddings of ``text``, special
    tokens included (as mean pooling sees them); ``token_spans`` their ``(start, end)`` character offsets
    in ``text``, ``(0, 0)`` for special tokens. Empty (every word keeps weight 1) when ``power`` is 0, or
    when no word is told apart from the others.
    """
    vectors = np.asarray(token_vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(token_spans):
        raise ValueError(f"{len(token_spans)} token spans for token vectors of shape {vectors.shape}")
    if power <= 0 or not len(token_spans):
        return {}
    mean = vectors.mean(axis=0)
    mean_norm = float(np.linalg.norm(mean))
    if mean_norm == 0:
        return {}
    spans = np.asarray(token_spans, dtype=np.int64).reshape(-1, 2)
    starts, ends = spans[:, 0], spans[:, 1]
    distances: dict[str, float] = {}
    for word, start, end in words_of(text):
        inside = (ends > starts) & (starts < end) & (ends > start)
        if not inside.any():
            continue  # past the model's input length
        vector = vectors[inside].mean(axis=0)
        norm = float(np.linalg.norm(vector))
        distance = 1.0 - float(vector @ mean) / (norm * mean_norm) if norm > 0 else 1.0
        distances[word] = min(distances.get(word, np.inf), max(distance, 0.0))
    top = max(distances.values(), default=0.0)
    if top <= 0:
        return {}
    return {word: (distance / top) ** power for word, distance in distances.items()}
