"""How much each word of a request counts in the keyword (BM25) query, read off the embedding model.

BM25 weighs a request word by its rarity in the catalog alone. Requests are written as scenarios ("We are
a media company and we have a large volume of ... audio files. We want to transcribe ..."), and words that
are common in requests but rare in producers' descriptions ("we", "our", "am", "want") get a high catalog
IDF and match listings by accident. A longer stop list does not fix it (``docs/relevance-experiments.md``:
NLTK's, scikit-learn's or pronouns only, MRR@10 0.288-0.293 against 0.292). The embedding model already
reads the request in context: MiniLM's contextual token vectors of words that carry little of a sentence's
meaning crowd around the sentence's mean direction (the anisotropy of these models), while the words the
meaning depends on stand apart. So each word is weighted by its distance from the mean token
vector::

    distance(word) = 1 - cos(mean of the word's token vectors, mean of all the request's token vectors)
    weight(word)   = (distance(word) / largest distance in the request) ** power

The distances are read off the model by the encoder (``search.word_distances``), from the forward pass
that encodes the query anyway, and cached with the query vector. Shuffling the weights among a request's
words instead lowers MRR@10 (``docs/relevance-experiments.md`` has the figures), so it is the model's
reading, not the mere spread of boosts, that helps. What it reliably does is push pronouns and particles
down; among content words the order is far from a reader's idea of a task word (a rare word split into
several wordpieces lands nearer the mean), yet the weights add the same on top of any stop list: an
empirical fit measured on one dev set (hf-dev, MRR@10 0.292 -> 0.302, both halves).

The weights are for the request's *words*, lower-cased runs of letters and digits; the keyword backends
map each word through their own analyzer (stemming, stop words) and boost the resulting terms by the
word's weight, the largest where several words stem alike. A word without a distance (beyond the model's
input length) keeps weight 1.
"""

from __future__ import annotations

from collections.abc import Mapping


def keyword_word_weights(
    distances: Mapping[str, float], power: float, min_words: int = 0
) -> dict[str, float]:
    """Each word -> ``(distance / largest distance) ** power`` in [0, 1], the most distinctive word 1.0.

    Empty (every word keeps weight 1) when ``power`` is 0, when no word is told apart from the others
    (all distances 0), or when the request has fewer than ``min_words`` distinct words: a short request
    is all content, its mean token vector is just its few words, and a word's distance from it says
    nothing about filler ("image captioning" would weigh "captioning" 0.07)."""
    top = max(distances.values(), default=0.0)
    if power <= 0 or top <= 0 or len(distances) < min_words:
        return {}
    return {word: (distance / top) ** power for word, distance in distances.items()}
