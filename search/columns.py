"""Per-listing metadata and vectors as columnar numpy arrays, addressed by stable slots.

Why columns: a facet mask over 100k listings must cost well under a millisecond, and it has to be
computed for every vector search and every non-relevance listing page. Python objects per listing would
cost tens of milliseconds per query; a handful of vectorized comparisons costs tens of microseconds.

Why slots: a deleted listing's slot is tombstoned (``alive`` false) and reused by the next insert instead
of moving other rows, so a slot number stays valid as a key in the approximate vector index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields, replace

import numpy as np

from search.filters import PUBLIC, SHARED, VERIFIED, is_hidden, viewer_readers, wanted_kinds
from search.types import IndexedListing, SearchFilters

MISSING_CODE = -1  # padding in multi-valued columns and "no value" in single-valued ones
UNKNOWN_CODE = -2  # a filter value never seen in any listing: matches nothing

SORTS = ("relevance", "usage", "accuracy", "latency", "newest")

# column name -> IndexedListing attribute
_CODE_COLUMNS = {
    "kind": "kind",
    "category": "category",
    "input_format": "input_format",
    "output_format": "output_format",
    "visibility": "visibility",
    "owner": "owner_id",
}
_FLOAT_COLUMNS = {
    "accuracy": "accuracy",
    "latency": "latency_p50_ms",
    "cpu": "cpu",
    "memory_mb": "memory_mb",
    "gpu": "gpu",
    "usage": "relative_usage",
    "created_at": "created_at",
}
_MULTI_COLUMNS = ("subcategories", "shared_with")


def _rows_holding(column: np.ndarray, code: int) -> np.ndarray:
    """Rows of a multi-valued (rows x width) column that hold ``code``.

    One comparison per position rather than ``(column == code).any(axis=1)``: numpy reduces a short
    axis row by row, which cost ~1.05 ms at 100k rows of width 2 (half of every vector search's time
    there, as the visibility mask reads ``shared_with``); column by column it costs ~0.08 ms."""
    held = np.zeros(len(column), dtype=bool)
    for position in range(column.shape[1]):
        held |= column[:, position] == code
    return held


class Vocabulary:
    """Interns strings as small ints so equality filters become integer comparisons."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def intern(self, value: str | None) -> int:
        if value is None:
            return MISSING_CODE
        return self._codes.setdefault(value, len(self._codes))

    def code(self, value: str) -> int:
        """The code of ``value`` for filtering, without growing the vocabulary."""
        return self._codes.get(value, UNKNOWN_CODE)


class ListingTable:
    """The in-memory side of the embedded backend: projections, facet columns and vectors."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.vocab = Vocabulary()
        self.docs: list[IndexedListing | None] = []
        self.slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._capacity = 0
        self._cols: dict[str, np.ndarray] = {}
        self._allocate(max(capacity, 1))

    # ------------------------------------------------------------------ storage
    def _allocate(self, capacity: int) -> None:
        """(Re)allocate every column to ``capacity`` slots, keeping current contents."""
        widths = {name: self._cols[name].shape[1] if name in self._cols else 2 for name in _MULTI_COLUMNS}
        fresh: dict[str, np.ndarray] = {"alive": np.zeros(capacity, dtype=bool)}
        fresh["hidden"] = np.zeros(capacity, dtype=bool)
        fresh["verified"] = np.zeros(capacity, dtype=bool)
        fresh["has_vector"] = np.zeros(capacity, dtype=bool)
        fresh["vectors"] = np.zeros((capacity, self.dim), dtype=np.float32)
        for name in _CODE_COLUMNS:
            fresh[name] = np.full(capacity, MISSING_CODE, dtype=np.int32)
        for name in _FLOAT_COLUMNS:
            fresh[name] = np.full(capacity, np.nan, dtype=np.float64)
        for name in _MULTI_COLUMNS:
            fresh[name] = np.full((capacity, widths[name]), MISSING_CODE, dtype=np.int32)
        used = len(self.docs)
        for name, column in self._cols.items():
            fresh[name][:used] = column[:used]
        self._cols = fresh
        self._capacity = capacity

    def _widen(self, name: str, width: int) -> None:
        column = self._cols[name]
        if width > column.shape[1]:
            extra = np.full((column.shape[0], width - column.shape[1]), MISSING_CODE, dtype=np.int32)
            self._cols[name] = np.hstack([column, extra])

    def _take_slot(self) -> int:
        if self._free:
            return self._free.pop()
        slot = len(self.docs)
        if slot >= self._capacity:
            self._allocate(self._capacity * 2)
        self.docs.append(None)
        return slot

    def _write(self, slots: list[int], docs: list[IndexedListing]) -> None:
        """Fill ``slots`` from ``docs`` column by column (one numpy assignment per column, so that loading
        100k listings costs a fraction of a second rather than one Python write per cell)."""
        at = np.asarray(slots, dtype=np.int64)
        cols = self._cols
        intern = self.vocab.intern
        cols["alive"][at] = True
        cols["hidden"][at] = [is_hidden(doc) for doc in docs]
        cols["verified"][at] = [doc.verification_status == VERIFIED for doc in docs]
        for name, attribute in _CODE_COLUMNS.items():
            cols[name][at] = [intern(getattr(doc, attribute)) for doc in docs]
        for name, attribute in _FLOAT_COLUMNS.items():
            # numpy reads None as NaN in a float array: "not stated".
            cols[name][at] = np.array([getattr(doc, attribute) for doc in docs], dtype=np.float64)
        for name in _MULTI_COLUMNS:
            values = [getattr(doc, name) for doc in docs]
            self._widen(name, max(map(len, values), default=0))
            block = np.full((len(docs), self._cols[name].shape[1]), MISSING_CODE, dtype=np.int32)
            for row, items in enumerate(values):
                if items:
                    block[row, : len(items)] = [intern(item) for item in items]
            self._cols[name][at] = block
        has_vector = np.array([doc.embedding is not None for doc in docs], dtype=bool)
        cols["has_vector"][at] = has_vector
        cols["vectors"][at] = 0.0
        if has_vector.any():
            given = [doc.embedding for doc in docs if doc.embedding is not None]
            cols["vectors"][at[has_vector]] = np.stack(given)
        for slot, doc in zip(slots, docs, strict=True):
            # The projection is kept without its vector: the matrix already holds it once.
            self.docs[slot] = _without_embedding(doc)

    # ------------------------------------------------------------------ writes
    def clear(self) -> None:
        self.docs = []
        self.slot_of = {}
        self._free = []
        self._cols = {}
        self._allocate(1024)

    def upsert(self, docs: Iterable[IndexedListing]) -> list[int]:
        """Insert or replace; returns the slot of each doc. Inputs must already be validated."""
        docs = list(docs)
        slots = []
        for doc in docs:
            slot = self.slot_of.get(doc.id)
            if slot is None:
                slot = self._take_slot()
                self.slot_of[doc.id] = slot
            slots.append(slot)
        if docs:
            self._write(slots, docs)
        return slots

    def delete(self, ids: Iterable[str]) -> list[int]:
        """Tombstone ``ids`` (unknown ids are ignored); returns the freed slots."""
        freed = []
        for listing_id in ids:
            slot = self.slot_of.pop(listing_id, None)
            if slot is None:
                continue
            self._cols["alive"][slot] = False
            self._cols["has_vector"][slot] = False
            self.docs[slot] = None
            self._free.append(slot)
            freed.append(slot)
        return freed

    # ------------------------------------------------------------------ reads
    def __len__(self) -> int:
        return len(self.slot_of)

    @property
    def slots(self) -> int:
        """Number of slots in use or tombstoned: the length of every column view."""
        return len(self.docs)

    def column(self, name: str) -> np.ndarray:
        return self._cols[name][: self.slots]

    @property
    def vectors(self) -> np.ndarray:
        return self.column("vectors")

    def doc_at(self, slot: int) -> IndexedListing:
        doc = self.docs[slot]
        if doc is None:
            raise KeyError(slot)
        return doc

    def with_embedding(self, slot: int) -> IndexedListing:
        """The projection as it was given, its vector copied back out of the matrix."""
        doc = self.doc_at(slot)
        if not self._cols["has_vector"][slot]:
            return doc
        return replace(doc, embedding=self._cols["vectors"][slot].copy())

    def mask(self, filters: SearchFilters) -> np.ndarray:
        """Slots of live listings passing ``filters`` (the rules of ``search.filters``)."""
        col = self.column
        code = self.vocab.code
        keep = col("alive").copy()
        kinds = wanted_kinds(filters)
        if kinds is not None:
            keep &= np.isin(col("kind"), [code(k) for k in kinds])
        for name, value in (
            ("category", filters.category),
            ("input_format", filters.input_format),
            ("output_format", filters.output_format),
        ):
            if value is not None:
                keep &= col(name) == code(value)
        if filters.subcategory is not None:
            keep &= _rows_holding(col("subcategories"), code(filters.subcategory))
        with np.errstate(invalid="ignore"):
            if filters.max_latency_ms is not None:
                keep &= col("latency") <= filters.max_latency_ms
            if filters.min_accuracy is not None:
                keep &= col("accuracy") >= filters.min_accuracy
            for name in ("cpu", "memory_mb", "gpu"):
                limit = getattr(filters, name)
                if limit is not None:
                    needed = col(name)
                    keep &= np.isnan(needed) | (needed <= limit)
        if filters.verified_only:
            keep &= col("verified")
        if not filters.include_suspended:
            keep &= ~col("hidden")
        readers = viewer_readers(filters)
        if readers is not None:
            keep &= self._visible_to(filters.viewer_id)
        return keep

    def _visible_to(self, viewer_id: str | None) -> np.ndarray:
        visibility = self.column("visibility")
        visible = visibility == self.vocab.code(PUBLIC)
        if viewer_id:
            viewer = self.vocab.code(viewer_id)
            visible |= self.column("owner") == viewer
            shared = visibility == self.vocab.code(SHARED)
            visible |= shared & _rows_holding(self.column("shared_with"), viewer)
        return visible

    def sort_keys(self, sort: str) -> tuple[np.ndarray, ...]:
        """Keys for ``np.lexsort`` (primary LAST), all ascending; missing values sort last.

        "relevance" without a query has nothing to be relevant to: it falls back to usage, the
        best proxy for what requesters find useful.
        """
        created = self.column("created_at")
        newest_first = -np.nan_to_num(created, nan=-np.inf)
        if sort in ("usage", "relevance"):
            primary = -np.nan_to_num(self.column("usage"), nan=0.0)
        elif sort == "accuracy":
            primary = np.nan_to_num(-self.column("accuracy"), nan=np.inf)
        elif sort == "latency":
            primary = np.nan_to_num(self.column("latency"), nan=np.inf)
        elif sort == "newest":
            return (newest_first,)
        else:
            raise ValueError(sort)
        return newest_first, primary

    def sort_value(self, sort: str, slot: int) -> float:
        """The number a ``filtered`` hit is ordered by, reported as its score."""
        name = {"relevance": "usage", "newest": "created_at"}.get(sort, sort)
        value = float(self._cols[name][slot])
        return 0.0 if np.isnan(value) else value


_ATTRIBUTES = tuple(f.name for f in fields(IndexedListing) if f.name != "embedding")


def _without_embedding(doc: IndexedListing) -> IndexedListing:
    """``replace(doc, embedding=None)``, several times faster (it runs for every listing at load)."""
    if doc.embedding is None:
        return doc
    return IndexedListing(*(getattr(doc, name) for name in _ATTRIBUTES))


def ordered_slots(table: ListingTable, mask: np.ndarray, sort: str, stop: int) -> np.ndarray:
    """The first ``stop`` slots of ``mask`` in ``sort`` order, ties broken by newest then slot.

    A full lexsort of 100k slots costs ~10 ms; a partition on the primary key first keeps a page of
    the first results near 1 ms while ties at the boundary are still ordered exactly.
    """
    if stop <= 0:
        return np.zeros(0, dtype=np.int64)
    slots = np.flatnonzero(mask)
    keys = [k[slots] for k in table.sort_keys(sort)]
    if stop < len(slots) // 4:
        primary = keys[-1]
        boundary = np.partition(primary, stop - 1)[stop - 1]
        near = primary <= boundary
        slots = slots[near]
        keys = [k[near] for k in keys]
    order = np.lexsort([slots, *keys])
    return slots[order][:stop]
