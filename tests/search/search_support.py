"""Listing and vector factories shared by the search tests."""

from __future__ import annotations

import numpy as np

from search.types import IndexedListing, SearchBackend, SearchFilters

DIM = 8  # synthetic vectors for filter/write tests; the real encoder has its own tests


def unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def axis(i: int, dim: int = DIM) -> np.ndarray:
    """A unit vector along axis ``i``: vector tests with an unambiguous nearest neighbour."""
    vector = np.zeros(dim, dtype=np.float32)
    vector[i % dim] = 1.0
    return vector


def listing(listing_id: str, **fields: object) -> IndexedListing:
    """A public, active model listing with a searchable name, overridable field by field."""
    defaults: dict[str, object] = {
        "kind": "model",
        "name": f"listing {listing_id}",
        "category": "Natural Language Processing",
        "embedding": axis(0),
    }
    defaults.update(fields)
    return IndexedListing(id=listing_id, **defaults)  # type: ignore[arg-type]


# A small catalog exercising every facet and visibility rule, shared by both backends' tests.
CATALOG = [
    listing("pub-nlp", kind="model", category="NLP", subcategories=("Sentiment", "Text Classification"),
            input_format="text", output_format="class-label", accuracy=0.91, latency_p50_ms=12.0,
            cpu=1.0, memory_mb=512, gpu=0, verification_status="verified", relative_usage=0.7,
            created_at=100.0, owner_id="alice"),
    listing("pub-vision", kind="model", category="Vision", subcategories=("Detection",),
            input_format="image", output_format="bounding-boxes", accuracy=0.55, latency_p50_ms=80.0,
            cpu=4.0, memory_mb=8192, gpu=1, relative_usage=0.2, created_at=300.0, owner_id="bob"),
    listing("pub-dataset", kind="dataset", category="NLP", subcategories=("Sentiment",),
            relative_usage=0.1, created_at=200.0),
    listing("alice-private", kind="algorithm", category="NLP", visibility="private", owner_id="alice",
            accuracy=0.99, latency_p50_ms=1.0, created_at=400.0),
    listing("alice-shared", kind="notebook", category="NLP", visibility="shared", owner_id="alice",
            shared_with=("carol",), created_at=500.0),
    listing("bob-private-named", kind="pipeline", category="Vision", visibility="private",
            owner_id="bob", shared_with=("carol",), created_at=600.0),
    listing("suspended", kind="model", category="NLP", status="suspended", created_at=700.0),
    listing("verification-suspended", kind="model", category="NLP", verification_status="suspended",
            created_at=800.0),
]  # fmt: skip
PUBLIC_ACTIVE = {"pub-nlp", "pub-vision", "pub-dataset"}

FACET_CASES = [
    (SearchFilters(), PUBLIC_ACTIVE),
    (SearchFilters(kinds=("dataset",)), {"pub-dataset"}),
    (SearchFilters(kinds=("dataset", "model")), PUBLIC_ACTIVE),
    (SearchFilters(kinds=()), PUBLIC_ACTIVE),
    (SearchFilters(kinds=("no-such-kind",)), set()),
    (SearchFilters(category="NLP"), {"pub-nlp", "pub-dataset"}),
    (SearchFilters(category="nlp"), set()),
    (SearchFilters(subcategory="Sentiment"), {"pub-nlp", "pub-dataset"}),
    (SearchFilters(subcategory="Text Classification"), {"pub-nlp"}),
    (SearchFilters(input_format="image"), {"pub-vision"}),
    (SearchFilters(output_format="class-label"), {"pub-nlp"}),
    (SearchFilters(max_latency_ms=12.0), {"pub-nlp"}),
    (SearchFilters(max_latency_ms=1000), {"pub-nlp", "pub-vision"}),
    (SearchFilters(min_accuracy=0.9), {"pub-nlp"}),
    (SearchFilters(min_accuracy=0.0), {"pub-nlp", "pub-vision"}),
    (SearchFilters(cpu=2.0), {"pub-nlp", "pub-dataset"}),
    (SearchFilters(cpu=4.0, memory_mb=8192, gpu=1), PUBLIC_ACTIVE),
    (SearchFilters(memory_mb=1024), {"pub-nlp", "pub-dataset"}),
    (SearchFilters(gpu=0), {"pub-nlp", "pub-dataset"}),
    (SearchFilters(verified_only=True), {"pub-nlp"}),
    (SearchFilters(category="NLP", kinds=("model",), min_accuracy=0.5), {"pub-nlp"}),
]

# (viewer id, is admin, expected listings)
VISIBILITY_CASES = [
    (None, False, PUBLIC_ACTIVE),
    ("alice", False, PUBLIC_ACTIVE | {"alice-private", "alice-shared"}),
    ("carol", False, PUBLIC_ACTIVE | {"alice-shared"}),  # named on a *private* listing: not visible
    ("bob", False, PUBLIC_ACTIVE | {"bob-private-named"}),
    ("mallory", False, PUBLIC_ACTIVE),
    (None, True, PUBLIC_ACTIVE | {"alice-private", "alice-shared", "bob-private-named"}),
]


def found(backend: SearchBackend, filters: SearchFilters) -> set[str]:
    """The listings passing ``filters``, asserting that every read path of ``backend`` agrees."""
    by_keyword = {h.id for h in backend.keyword("listing", filters, 100)}
    by_vector = {h.id for h in backend.vector(axis(0), filters, 100)}
    by_sort = {h.id for h in backend.filtered(filters, "newest", 100)}
    assert by_keyword == by_vector == by_sort, (by_keyword, by_vector, by_sort)
    assert backend.count(filters) == len(by_sort)
    return by_sort
