"""What the search layer stores and answers: the contract between catalog, search and ranking.

The index holds a *projection* of each listing (``IndexedListing``); the database stays the truth.
Backends answer keyword and vector candidate queries under the same ``SearchFilters``; ranking fuses them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class IndexedListing:
    id: str
    kind: str
    name: str
    category: str
    description: str = ""
    subcategories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    framework: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    visibility: str = "public"
    owner_id: str | None = None
    shared_with: tuple[str, ...] = ()
    status: str = "active"
    verification_status: str = "unverified"
    accuracy: float | None = None
    latency_p50_ms: float | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    gpu: int | None = None
    relative_usage: float = 0.0
    created_at: float = 0.0  # epoch seconds, for NEWEST
    # Keyword-searched only, never embedded; the catalog projects it already capped by
    # ``search.documents.indexed_documentation`` (after the fields some callers pass by position).
    documentation: str = ""
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Facets applied *before* ranking. ``None`` means "no constraint"."""

    kinds: tuple[str, ...] | None = None
    category: str | None = None
    subcategory: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    max_latency_ms: float | None = None
    min_accuracy: float | None = None
    # The requester's hardware: listings whose suggested requirements fit it.
    cpu: float | None = None
    memory_mb: int | None = None
    gpu: int | None = None
    verified_only: bool = False
    # Visibility: who is asking. Admins see everything; anonymous callers see public listings only.
    viewer_id: str | None = None
    viewer_is_admin: bool = False
    include_suspended: bool = False


# Lower-cased request word -> how much its terms count in a keyword query (1.0 when not named).
WordWeights = Mapping[str, float]


class Hit(NamedTuple):
    """One candidate of a keyword or vector list. A named tuple, not a frozen dataclass: a search makes
    ~400 (each list's depth) and a frozen dataclass's ``__init__`` took ~2.5x as long to build one."""

    id: str
    score: float
    rank: int  # 1-based rank within its own candidate list


class SearchBackend(Protocol):
    """One interface, two implementations: embedded (tantivy + vectors) and OpenSearch."""

    def upsert(self, docs: Sequence[IndexedListing]) -> None: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def keyword(
        self, text: str, filters: SearchFilters, limit: int, word_weights: WordWeights | None = None
    ) -> list[Hit]:
        """BM25 candidates. ``word_weights`` (lower-cased request word -> boost) scales each word's
        terms; words it does not name count 1.0."""
        ...

    def vector(self, vector: np.ndarray, filters: SearchFilters, limit: int) -> list[Hit]: ...

    def filtered(self, filters: SearchFilters, sort: str, limit: int, offset: int = 0) -> list[Hit]:
        """All listings passing ``filters`` ordered by a non-relevance sort (usage, accuracy, ...)."""
        ...

    def count(self, filters: SearchFilters) -> int: ...

    def get(self, ids: Sequence[str], *, with_embeddings: bool = True) -> dict[str, IndexedListing]:
        """Projections by id; ``with_embeddings=False`` is a hint that the caller (ranking) needs neither
        the vectors nor the documentation, so a backend may leave ``embedding`` unset and
        ``documentation`` empty instead of copying them out."""
        ...

    def clear(self) -> None: ...

    def close(self) -> None: ...
