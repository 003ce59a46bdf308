"""Argument checks shared by every backend, so that bad input gets the same clear ``BadInput`` anywhere."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from infra.errors import BadInput
from search.types import IndexedListing


def check_page(limit: int, offset: int = 0) -> None:
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BadInput(f"{name} must be a non-negative integer, got {value!r}", field=name)


def check_sort(sort: str, known: Iterable[str]) -> str:
    """The sort name, lower-cased (GraphQL enums arrive upper-case)."""
    known = tuple(known)
    if not isinstance(sort, str) or sort.lower() not in known:
        raise BadInput(f"unknown sort {sort!r}; expected one of {', '.join(known)}", field="sort")
    return sort.lower()


def unit_query(vector: np.ndarray, dim: int) -> np.ndarray:
    """The query vector as float32 of length 1 (scores are then cosines), or ``BadInput``."""
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(query)) if query.shape == (dim,) else 0.0
    if not np.isfinite(norm) or norm == 0.0:
        raise BadInput(f"query vector must be non-zero, finite and of shape ({dim},)")
    return query / norm


def checked_batch(docs: Iterable[IndexedListing], dim: int) -> list[IndexedListing]:
    """A write batch, validated before anything is written: unique non-empty ids, embeddings of the
    right size (normalized here, so every stored vector is a unit vector)."""
    checked: dict[str, IndexedListing] = {}
    for doc in docs:
        if not isinstance(doc, IndexedListing):
            raise BadInput(f"expected an IndexedListing, got {type(doc).__name__}")
        if not doc.id or not isinstance(doc.id, str):
            raise BadInput("a listing to index needs a non-empty string id")
        if doc.id in checked:
            raise BadInput(f"listing {doc.id} appears twice in one index write", id=doc.id)
        checked[doc.id] = _with_unit_embedding(doc, dim)
    return list(checked.values())


def _with_unit_embedding(doc: IndexedListing, dim: int) -> IndexedListing:
    if doc.embedding is None:
        return doc
    given = doc.embedding
    exact_type = isinstance(given, np.ndarray) and given.dtype == np.float32 and given.shape == (dim,)
    vector = given if exact_type else np.asarray(given, dtype=np.float32).reshape(-1)
    norm = float(np.sqrt(vector @ vector)) if vector.shape == (dim,) else math.nan
    if not math.isfinite(norm):
        raise BadInput(
            f"listing {doc.id} has an embedding of shape {vector.shape}; expected ({dim},) finite", id=doc.id
        )
    if vector is given and abs(norm - 1.0) < 1e-4:
        return doc  # already a float32 unit vector (the encoder's output): no copy
    return replace(doc, embedding=vector / norm if norm > 0 else vector)
