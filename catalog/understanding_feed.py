"""Feeds the index's public listings to the ranker's query understanding, and only when it matters.

Query understanding learns the catalog's (category, subcategory) labels and their usual formats from the
listings. Two rules live here rather than in ranking: only public, active listings teach it (an inferred
category shown to anyone must not reveal a private listing's label), and an index write is forwarded only
when a listing's label or formats changed — a usage update must not make every run re-derive the label
space (that costs time proportional to the catalog).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol

from search.types import IndexedListing

Teaching = tuple[str, tuple[str, ...], str | None, str | None]


class LabelLearner(Protocol):
    """What the feed drives: ``ranking.query_understanding.QueryUnderstanding``."""

    def rebuild(self, listings: Iterable[IndexedListing]) -> None: ...

    def update(self, upserted: Iterable[IndexedListing] = (), removed: Iterable[str] = ()) -> None: ...

    def learn_label_texts(self, listings: Iterable[IndexedListing]) -> None: ...


def teaches(doc: IndexedListing) -> bool:
    return doc.visibility == "public" and doc.status == "active" and doc.verification_status != "suspended"


def _what_it_teaches(doc: IndexedListing) -> Teaching:
    return (doc.category, doc.subcategories, doc.input_format, doc.output_format)


class UnderstandingFeed:
    """An ``IndexListener`` in front of ``ranking.query_understanding.QueryUnderstanding``.

    It also keeps the catalog's category and subcategory names, so a search facet typed in any case
    ("computer vision", "object detection") finds the label as listings spell it.
    """

    def __init__(self, understanding: LabelLearner) -> None:
        self.understanding = understanding
        self._taught: dict[str, Teaching] = {}
        self._categories: Counter[str] = Counter()
        self._subcategories: Counter[str] = Counter()

    def rebuild(self, listings: Iterable[IndexedListing]) -> None:
        docs = list(listings)
        public = [d for d in docs if teaches(d)]
        self._taught = {d.id: _what_it_teaches(d) for d in public}
        self._categories = Counter(d.category for d in docs)
        self._subcategories = Counter(sub for d in docs for sub in d.subcategories)
        self.understanding.rebuild(public)

    async def prepare(self, upserted: Sequence[IndexedListing]) -> None:
        """Before an index write: embed the new labels it brings on a thread (``learn_label_texts``)."""
        public = [doc for doc in upserted if teaches(doc)]
        if public:
            await asyncio.to_thread(self.understanding.learn_label_texts, public)

    def update(self, upserted: Iterable[IndexedListing] = (), removed: Iterable[str] = ()) -> None:
        forward: list[IndexedListing] = []
        unteach: list[str] = []
        for doc in upserted:
            before = self._taught.get(doc.id)
            if teaches(doc):
                if before != _what_it_teaches(doc):
                    self._taught[doc.id] = _what_it_teaches(doc)
                    forward.append(doc)
            elif before is not None:
                del self._taught[doc.id]
                unteach.append(doc.id)
            self._categories[doc.category] += 1  # counts only grow: a name once seen stays resolvable
            self._subcategories.update(doc.subcategories)
        for listing_id in removed:
            if self._taught.pop(listing_id, None) is not None:
                unteach.append(listing_id)
        if forward or unteach:
            self.understanding.update(forward, unteach)

    def canonical_category(self, name: str) -> str:
        """The category as listings spell it, matched case-insensitively; ``name`` itself if unknown."""
        return _as_spelled(self._categories, name)

    def canonical_subcategory(self, name: str) -> str:
        """The subcategory as listings spell it, matched case-insensitively; ``name`` itself if unknown."""
        return _as_spelled(self._subcategories, name)


def _as_spelled(known_names: Iterable[str], name: str) -> str:
    wanted = name.strip().casefold()
    for known in known_names:
        if known.casefold() == wanted:
            return known
    return name.strip()
