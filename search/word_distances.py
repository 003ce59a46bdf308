"""How far each word of a query stands from the query's overall meaning, as the embedding model reads it.

MiniLM's contextual token vectors of words that carry little of a sentence's meaning ("we", "our",
"want", "to") crowd around the sentence's mean token vector (the anisotropy of these models), while the
words the meaning depends on stand apart. The mean of all token vectors is what mean pooling makes the
query vector from, so the token vectors come out of the forward pass that encodes the query anyway, and
the character spans out of its tokenization (``Encoder._forward_one``). Ranking turns the distances into
keyword weights (``ranking.term_weights``); search only reads them off the model::

    distance(word) = 1 - cos(mean of the word's token vectors, mean of all the query's token vectors)

Words are lower-cased runs of letters and digits (``search.documents.WORD_PATTERN``); a word that occurs
twice counts by its occurrence closest to the mean; a word past the model's input length has none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search.documents import WORD_PATTERN


def words_of(text: str) -> list[tuple[str, int, int]]:
    """``(lower-cased word, start, end)`` for each run of letters and digits of ``text``, in order."""
    return [(match.group().lower(), *match.span()) for match in WORD_PATTERN.finditer(text)]


def word_distances(
    text: str, token_vectors: np.ndarray, token_spans: Sequence[tuple[int, int]]
) -> dict[str, float]:
    """Each word of ``text`` -> its distance (0..2) from the mean of all token vectors.

    ``token_vectors`` (tokens x dim) are the model's contextual token embeddings of ``text``, special
    tokens included (as mean pooling sees them); ``token_spans`` their ``(start, end)`` character offsets
    in ``text``, ``(0, 0)`` for special tokens.
    """
    vectors = np.asarray(token_vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(token_spans):
        raise ValueError(f"{len(token_spans)} token spans for token vectors of shape {vectors.shape}")
    if not len(token_spans):
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
    return distances
