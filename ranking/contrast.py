"""Request words that set a candidate apart from the other candidates of the same request.

BM25 weighs a request word by how rare it is in the whole catalog. Once retrieval has gathered one
request's candidates, that is the wrong rarity: the words nearly all of them share ("image", "classify"
for a request that wants an image classifier) no longer tell them apart, while a word only a few of them
contain ("medical", "anime", "Korean") is exactly what picks the right one among near-identical
listings of one label — the ordering problem that label inference cannot solve (``ranking.weights``).
So each candidate is scored by how much of the request's *candidate-local* word weight it covers::

    weight(word) = log((n + 1) / (df + 0.5))       n candidates, df of them contain the word
    share(listing) = sum of weight over the request words the listing contains
                     / sum of weight over the request words any candidate contains

``share`` lies in [0, 1]; the ranker adds ``distinctive_words_boost`` times it (``ranking.weights`` has the
figures). Words are lower-cased runs of letters and digits of three or more characters, from the
listing's readable name, tags, subcategories and description; no stemming, and only Lucene's short English
stop list (``STOP_WORDS``): a word that every candidate contains weighs almost nothing by construction.

Per query this looks for the request's own dozen words in each candidate's text (``RequestWords``): a
substring test per word, confirmed as a whole word only where the substring occurs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from search.documents import WORD_PATTERN
from search.types import IndexedListing

MIN_WORD_CHARS = 3
# Lucene's English stop words (those of three letters or more). In a large catalog they are in nearly every
# candidate and weigh nothing anyway; in a small one "the" can be rare among the candidates, and an
# explanation saying a listing won on "the" reads as nonsense. Relevance is unchanged (``ranking.weights``).
STOP_WORDS = frozenset({
    "and", "are", "but", "for", "into", "not", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "was", "will", "with",
})  # fmt: skip


def words(text: str) -> frozenset[str]:
    """The distinct lower-cased words of ``text`` with at least ``MIN_WORD_CHARS`` characters, stop
    words left out."""
    return frozenset(
        word
        for word in WORD_PATTERN.findall(text.lower())
        if len(word) >= MIN_WORD_CHARS and word not in STOP_WORDS
    )


def listing_text(listing: IndexedListing) -> str:
    """The lower-cased readable name (without its owner prefix), tags, labels and description."""
    name = listing.name.rsplit("/", 1)[-1]
    return " ".join((name, *listing.tags, *listing.subcategories, listing.description)).lower()


def listing_words(listing: IndexedListing) -> frozenset[str]:
    """Every word of ``listing_text`` (the candidates are matched against the request's words only)."""
    return words(listing_text(listing))


class RequestWords:
    """Finds exactly the words of ``wanted`` that ``words`` would split out of a lower-cased text.

    Why not ``words(text) & wanted`` per candidate: tokenizing ~170 descriptions per request costs ~3 ms
    at catalog scale (no cache holds 100k listings' word sets), and one regex alternation of the
    request's words scanning every text still ~1.2 ms. A substring test (``in``, a C loop) per request
    word rules out most (candidate, word) pairs in ~0.2 ms; only where the substring occurs is it checked
    to be a whole run of letters and digits (none on either side: the rule ``words`` splits by).
    """

    __slots__ = ("wanted",)

    def __init__(self, wanted: Iterable[str]) -> None:
        self.wanted = tuple(sorted(wanted))

    def found_in(self, text: str) -> frozenset[str]:
        present = [word for word in self.wanted if word in text]
        if not present:
            return _NOTHING
        return frozenset(word for word in present if _occurs_as_word(text, word))


_NOTHING: frozenset[str] = frozenset()


def _occurs_as_word(text: str, word: str) -> bool:
    """Whether ``word`` occurs in ``text`` with no letter or digit right before or after it.

    One character's ``str.isalnum`` is the test of ``[^\\W_]`` (the class ``WORD_PATTERN`` splits by), with
    no regex call: this runs for each of the ~400 substring hits of a request."""
    start = text.find(word)
    last = len(text) - len(word)
    while start >= 0:
        end = start + len(word)
        if not (start and text[start - 1].isalnum()) and not (start < last and text[end].isalnum()):
            return True
        start = text.find(word, start + 1)
    return False


@dataclass(frozen=True, slots=True)
class DistinctiveWords:
    """One request's word weights over its candidates, and each candidate's share of them."""

    weights: dict[str, float] = field(default_factory=dict)  # request words some candidate contains
    shares: dict[str, float] = field(default_factory=dict)  # listing id -> share in [0, 1]
    found: dict[str, frozenset[str]] = field(default_factory=dict)  # listing id -> request words in it

    def share(self, listing_id: str) -> float:
        return self.shares.get(listing_id, 0.0)

    def matched(self, listing: IndexedListing) -> list[str]:
        """The request words this listing contains, the most distinctive first (for explanations)."""
        found = self.found.get(listing.id, frozenset())
        return sorted(found, key=lambda word: (-self.weights[word], word))


NO_DISTINCTIVE_WORDS = DistinctiveWords()


def distinctive_words(text: str, candidates: Iterable[IndexedListing]) -> DistinctiveWords:
    """Weigh the words of ``text`` by their rarity among ``candidates`` and score each candidate."""
    wanted = words(text)
    if not wanted:
        return NO_DISTINCTIVE_WORDS
    matcher = RequestWords(wanted)
    found = {listing.id: matcher.found_in(listing_text(listing)) for listing in candidates}
    frequency = Counter(word for present in found.values() for word in present)
    if not frequency:
        return NO_DISTINCTIVE_WORDS
    n = len(found)
    weights = {word: math.log((n + 1) / (df + 0.5)) for word, df in frequency.items()}
    total = sum(weights.values())
    shares = {
        listing_id: sum(weights[word] for word in present) / total
        for listing_id, present in found.items()
        if present
    }
    return DistinctiveWords(weights, shares, {i: present for i, present in found.items() if present})
