"""The embedded search backend: tantivy (keyword) + numpy/usearch (vectors) in one process.

Startup: the database is the source of truth and stores each listing's embedding, so the catalog reads
every projection and calls ``load(docs)``. The vectors and facet columns are always rebuilt in memory from
those docs (cheap: no re-encoding). The tantivy index on disk is reused only when its marker — schema
version, tantivy version, document count and an order-independent digest of every indexed field —
equals what the docs would produce; otherwise it is rebuilt from them in one commit. Either way, after
``load`` the index is exactly the database's projection; ``mlrepo reindex`` is ``load(docs,
rebuild=True)``: always rebuilt.
Above ``ann_threshold`` vectors an HNSW graph is built in the background (exact search answers
meanwhile); ``close`` saves it and the next ``load`` restores it when the vectors are unchanged.

Writes are all-or-nothing from the caller's view: inputs are validated first, then tantivy commits (a
failed commit rolls back and raises ``Unavailable`` with memory untouched), and only then are the
in-memory columns updated, which cannot fail half-way. The catalog writes its database row and calls
``upsert`` in the same unit of work, rolling back the row if the index write raises.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from infra.errors import Conflict
from search.columns import SORTS, ListingTable, ordered_slots
from search.dirlock import DirectoryLock
from search.filters import validate_filters
from search.keyword import KeywordIndex, combine, doc_key, fingerprint
from search.types import Hit, IndexedListing, SearchFilters, WordWeights
from search.validation import check_page, check_sort, checked_batch, unit_query
from search.vectors import EXACT_WHEN_MATCHING_AT_MOST, AnnIndex, exact_search

if TYPE_CHECKING:
    from infra.settings import Settings


class EmbeddedBackend:
    """``SearchBackend`` over a tantivy directory and in-memory vectors; one writer process per index."""

    def __init__(self, index_dir: Path, dim: int, ann_threshold: int = 50_000) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self._dir_lock = DirectoryLock(Path(index_dir))  # first: nothing is touched under another writer
        try:
            self._keyword = KeywordIndex(Path(index_dir) / "keyword")
        except BaseException:
            self._dir_lock.release()
            raise
        self._graph_file = Path(index_dir) / "vectors.usearch"
        self._table = ListingTable(dim)
        # Below the threshold exact search is cheap enough; the graph only answers broad queries.
        self._ann = AnnIndex(dim, exact_below=min(EXACT_WHEN_MATCHING_AT_MOST, ann_threshold))
        self._fingerprints: dict[str, int] = {}  # id -> fingerprint of its tantivy document
        self._digest = 0  # combine() of all fingerprints, kept incrementally
        self._slot_of_key: dict[int, int] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Settings, dim: int) -> EmbeddedBackend:
        return cls(settings.index_dir, dim, settings.ann_threshold)

    # ------------------------------------------------------------------ validation
    def _check_keys(self, docs: Sequence[IndexedListing], fresh: bool = False) -> None:
        """tantivy hits map back through a 63-bit hash of the id; refuse the (astronomically rare) clash."""
        seen: dict[int, str] = {}
        for doc in docs:
            key = doc_key(doc.id)
            other = seen.setdefault(key, doc.id)
            slot = None if fresh else self._slot_of_key.get(key)
            if slot is not None:
                other = self._table.doc_at(slot).id
            if other != doc.id:
                raise Conflict(f"listing ids {other} and {doc.id} hash to the same index key")

    # ------------------------------------------------------------------ lifecycle
    def load(self, docs: Iterable[IndexedListing], *, rebuild: bool = False) -> bool:
        """Replace everything with ``docs`` (all listings from the database); True if tantivy was rebuilt.

        ``rebuild`` (``mlrepo reindex``) rewrites the index and the HNSW graph even when their markers
        match: the operator's repair must not trust what the markers cannot see (a damaged segment, an
        analyzer that changed with a tantivy upgrade)."""
        with self._lock:
            docs = checked_batch(docs, self.dim)
            self._check_keys(docs, fresh=True)
            fingerprints = {doc.id: fingerprint(doc) for doc in docs}
            digest = combine(fingerprints.values())
            rebuilt = rebuild or not self._keyword.matches(len(docs), digest)
            if rebuilt:
                self._keyword.apply(docs, [], len(docs), digest, replace_all=True)
            self._table.clear()
            self._ann.drop()
            slots = self._table.upsert(docs)
            self._fingerprints = fingerprints
            self._digest = digest
            self._slot_of_key = {doc_key(doc.id): slot for doc, slot in zip(docs, slots, strict=True)}
            if self._wants_ann():
                keys, slots_with_vectors = self._vector_keys()
                digest_of_vectors = self._vector_digest(keys, slots_with_vectors)
                if rebuild or not self._ann.restore(self._graph_file, digest_of_vectors):
                    self._ann.build(keys, self._table.vectors[slots_with_vectors])
            return rebuilt

    def clear(self) -> None:
        with self._lock:
            self._keyword.apply([], [], 0, 0, replace_all=True)
            self._table.clear()
            self._ann.drop()
            self._fingerprints = {}
            self._digest = 0
            self._slot_of_key = {}

    def close(self) -> None:
        """Release the index lock; a built HNSW graph is saved so the next start need not rebuild it
        (an unfinished build is abandoned: exiting must not wait minutes for it)."""
        if not self._ann.ready:
            self._ann.drop()
        self._ann.wait()
        with self._lock:
            if self._ann.ready:
                keys, slots = self._vector_keys()
                self._ann.save(self._graph_file, self._vector_digest(keys, slots))
            self._keyword.close()
            self._dir_lock.release()

    def __enter__(self) -> EmbeddedBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes
    def upsert(self, docs: Sequence[IndexedListing]) -> None:
        with self._lock:
            docs = checked_batch(docs, self.dim)
            self._check_keys(docs)
            fingerprints = {doc.id: fingerprint(doc) for doc in docs}
            # Only listings whose indexed fields changed touch tantivy (a usage update does not).
            changed = [doc for doc in docs if self._fingerprints.get(doc.id) != fingerprints[doc.id]]
            if changed:
                replaced = [self._fingerprints[d.id] for d in changed if d.id in self._fingerprints]
                added = len(changed) - len(replaced)
                new = [fingerprints[d.id] for d in changed]
                digest = combine([self._digest, *new, *(-f for f in replaced)])
                self._keyword.apply(changed, [], len(self._fingerprints) + added, digest)
                self._digest = digest
            slots = self._table.upsert(docs)
            self._fingerprints.update(fingerprints)
            for doc, slot in zip(docs, slots, strict=True):
                self._slot_of_key[doc_key(doc.id)] = slot
            self._sync_ann(docs, slots)

    def delete(self, ids: Sequence[str]) -> None:
        """Remove listings; ids that are not indexed are ignored (deleting twice is harmless)."""
        with self._lock:
            known = [i for i in dict.fromkeys(ids) if i in self._fingerprints]
            if not known:
                return
            digest = combine([self._digest, *(-self._fingerprints[i] for i in known)])
            self._keyword.apply([], known, len(self._fingerprints) - len(known), digest)
            self._digest = digest
            self._table.delete(known)
            for listing_id in known:
                del self._fingerprints[listing_id]
                self._slot_of_key.pop(doc_key(listing_id), None)
            self._ann.remove(np.array([doc_key(i) for i in known], dtype=np.uint64))

    def _sync_ann(self, docs: Sequence[IndexedListing], slots: list[int]) -> None:
        keys = np.array([doc_key(doc.id) for doc in docs], dtype=np.uint64)
        at = np.asarray(slots, dtype=np.int64)
        has_vector = self._table.column("has_vector")[at]
        self._ann.remove(keys[~has_vector])
        self._ann.add(keys[has_vector], self._table.vectors[at[has_vector]])
        if not (self._ann.ready or self._ann.building) and self._wants_ann():
            keys, slots_with_vectors = self._vector_keys()
            self._ann.build(keys, self._table.vectors[slots_with_vectors])

    def _wants_ann(self) -> bool:
        return int(self._table.column("has_vector").sum()) > self.ann_threshold

    def _vector_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Keys (ascending) and slots of every listing with a vector."""
        keys = np.fromiter(self._slot_of_key.keys(), dtype=np.uint64, count=len(self._slot_of_key))
        slots = np.fromiter(self._slot_of_key.values(), dtype=np.int64, count=len(self._slot_of_key))
        with_vector = self._table.column("has_vector")[slots]
        keys, slots = keys[with_vector], slots[with_vector]
        order = np.argsort(keys)
        return keys[order], slots[order]

    def _vector_digest(self, keys: np.ndarray, slots: np.ndarray) -> str:
        """Identifies the exact set of (key, vector) pairs a saved graph must hold to be reused."""
        digest = hashlib.blake2b(keys.tobytes(), digest_size=16)
        digest.update(np.ascontiguousarray(self._table.vectors[slots]).tobytes())
        return digest.hexdigest()

    @property
    def ann_ready(self) -> bool:
        return self._ann.ready

    @property
    def vector_index_state(self) -> str:
        """``hnsw`` (the graph answers), ``building`` (exact until it is ready) or ``exact`` (not
        wanted at this size): what ``/healthz`` reports, so a benchmark measures the steady state."""
        if self._ann.ready:
            return "hnsw"
        return "building" if self._ann.building else "exact"

    @property
    def ann_searches(self) -> int:
        """How many vector searches the HNSW graph answered (the others were exact)."""
        return self._ann.answered

    def wait_for_ann(self, timeout: float | None = None) -> bool:
        """Block until a pending HNSW build finishes; True when vector search uses it."""
        return self._ann.wait(timeout)

    # ------------------------------------------------------------------ reads
    def keyword(
        self, text: str, filters: SearchFilters, limit: int, word_weights: WordWeights | None = None
    ) -> list[Hit]:
        check_page(limit)
        scored = self._keyword.search(text, filters, limit, word_weights)
        with self._lock:
            hits = []
            for key, score in scored:
                slot = self._slot_of_key.get(key)
                if slot is not None:  # a doc committed by a process whose load() we have not seen
                    hits.append(Hit(self._table.doc_at(slot).id, score, len(hits) + 1))
            return hits

    def vector(self, vector: np.ndarray, filters: SearchFilters, limit: int) -> list[Hit]:
        check_page(limit)
        validate_filters(filters)
        query = unit_query(vector, self.dim)
        with self._lock:
            allowed = self._table.mask(filters) & self._table.column("has_vector")
            vectors = self._table.vectors
            found = self._ann.search(vectors, query, allowed, limit, self._slot_of_key)
            slots, scores = found if found is not None else exact_search(vectors, query, allowed, limit)
            return [
                Hit(self._table.doc_at(int(slot)).id, float(score), rank)
                for rank, (slot, score) in enumerate(zip(slots, scores, strict=True), start=1)
            ]

    def filtered(self, filters: SearchFilters, sort: str, limit: int, offset: int = 0) -> list[Hit]:
        check_page(limit, offset)
        sort = check_sort(sort, SORTS)
        validate_filters(filters)
        if limit == 0:
            return []
        with self._lock:
            slots = ordered_slots(self._table, self._table.mask(filters), sort, offset + limit)[offset:]
            return [
                Hit(self._table.doc_at(int(s)).id, self._table.sort_value(sort, int(s)), offset + i)
                for i, s in enumerate(slots, start=1)
            ]

    def count(self, filters: SearchFilters) -> int:
        validate_filters(filters)
        with self._lock:
            return int(self._table.mask(filters).sum())

    def get(self, ids: Sequence[str], *, with_embeddings: bool = True) -> dict[str, IndexedListing]:
        """Projections by id. Ranking a search reads a couple of hundred of them and never their
        vectors: ``with_embeddings=False`` skips copying each vector out (most of this call's cost)."""
        with self._lock:
            slot_of = self._table.slot_of
            read = self._table.with_embedding if with_embeddings else self._table.doc_at
            return {i: read(slot_of[i]) for i in ids if i in slot_of}

    def __len__(self) -> int:
        return len(self._table)
