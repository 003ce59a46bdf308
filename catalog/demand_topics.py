"""Group unmet queries into topics a producer can act on: pure functions over query embeddings.

Why average linkage with a cosine cut: requesters phrase one need many ways ("pothole detection from
dashcam images", "find road damage in street photos"). Average linkage merges two groups only when their
queries are similar *on average*, so one ambiguous query cannot chain two needs together (single linkage
does, at any useful threshold) and the result does not depend on the order queries arrived in (a greedy
leader pass does). The threshold was measured with ``python -m benchmarks.demand_grouping`` on short
search-box phrasings of 14 distinct needs, 5 each (MiniLM-L6): pairwise F1 is 0.89-0.92 from 0.30 to
0.45 (the one error: bird *songs* and bird *photos* merge) and falls above 0.5 (0.83 at 0.50, 0.70 at
0.55: paraphrases split apart). Cosine between different needs has its 99th percentile at 0.48, so with
many more needs than in that set a low cut would chain neighbours; 0.45 is the tightest value on the
plateau, because two topics for one need serve a producer better than one topic mixing two needs.

A topic is labelled by its most central query (the one most similar to the rest, weighted by how often
each was asked): a real request reads better than a bag of keywords, which are given alongside.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

# Words that say nothing about the need itself: function words and the vocabulary of asking for a model.
_STOPWORD_TEXT = """a an and are as at be by can could do does for from get give has have how i in into is it
its me my need of on or our please some that the their them these this to us use using want we what which
who will with would you your looking find search model models algorithm dataset data something tool way
able help make based best good"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z][a-z0-9+#\-]*[a-z0-9+#]|[a-z]")


def normalize_query(text: str) -> str:
    """The key under which repeats of one query are counted together (case and spacing ignored)."""
    return " ".join(text.lower().split())


def cluster_by_similarity(vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Indices of ``vectors`` (L2-normalized rows) grouped so each group's average cosine ≥ ``threshold``.

    Groups come back largest first, members in input order.
    """
    count = len(vectors)
    if count == 0:
        return []
    if count == 1:
        return [[0]]
    tree = linkage(np.asarray(vectors, dtype=np.float64), method="average", metric="cosine")
    labels = fcluster(tree, t=1.0 - threshold, criterion="distance")
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    return sorted(groups.values(), key=lambda members: (-len(members), members[0]))


def central_member(vectors: np.ndarray, weights: Sequence[float]) -> int:
    """Position (within ``vectors``) of the row with the highest weighted similarity to all rows."""
    similarity = vectors @ vectors.T
    scores = similarity @ np.asarray(weights, dtype=np.float64)
    return int(np.argmax(scores))


def singular(word: str) -> str:
    """Fold a regular English plural ("tumors", "scans") so it counts with its singular."""
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def keywords(texts: Sequence[str], weights: Sequence[int], limit: int = 3) -> tuple[str, ...]:
    """The words most requesters of a topic used (each query counted once per time it was asked)."""
    counts: Counter[str] = Counter()
    for text, weight in zip(texts, weights, strict=True):
        for word in {singular(word) for word in _WORD.findall(text.lower())}:
            if word not in STOPWORDS and len(word) > 2:
                counts[word] += weight
    return tuple(word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit])
