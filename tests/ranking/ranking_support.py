"""Builders shared by the ranking tests (plain functions, no fixtures)."""

from __future__ import annotations

from search.types import Hit, IndexedListing


def listing(
    listing_id: str, category: str = "Computer Vision", subcategory: str | None = None, **fields: object
) -> IndexedListing:
    return IndexedListing(
        id=listing_id,
        kind="model",
        name=fields.pop("name", listing_id),  # type: ignore[arg-type]
        category=category,
        subcategories=(subcategory,) if subcategory else (),
        **fields,  # type: ignore[arg-type]
    )


def hits(*ids: str, scores: list[float] | None = None) -> list[Hit]:
    """Hits in the given order, scores descending from 1.0 unless given."""
    values = scores or [1.0 - 0.01 * i for i in range(len(ids))]
    return [Hit(i, s, rank) for rank, (i, s) in enumerate(zip(ids, values, strict=True), start=1)]
