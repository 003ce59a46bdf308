"""Listing and vector factories shared by the search tests."""

from __future__ import annotations

import numpy as np

from search.types import IndexedListing

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
