"""Top-k by dot product among the slots a filter allows: exact, or through an HNSW index at scale.

Vectors are L2-normalized, so the dot product is the cosine similarity. The exact path is a matrix-vector
product (~3 ms at 100k x 384 here); the approximate path (usearch HNSW over float16 copies, half the
memory of float32) answers 200 neighbours of 100k in ~0.4 ms back to back, ~1.1 ms when other work has
left the graph out of the CPU caches (as in a server), and its candidates are re-scored exactly. int8
would build twice as fast but loses near-duplicate listings (it missed a listing's own vector ~2% of
the time on clustered data), and near-duplicates are common in model catalogs (fine-tunes of one base).
usearch cannot filter inside the graph walk, so the filtered search asks it for more neighbours than
needed in proportion to how selective the filter is, and falls back to the exact path when the filter
is so selective that the exact product over the matching slots is cheaper anyway.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from search.blas import single_threaded_blas

log = logging.getLogger(__name__)

# Below this many matching slots, an exact product over just those slots beats a graph search.
EXACT_WHEN_MATCHING_AT_MOST = 5_000
# Never ask the graph for more than this many neighbours; past it the exact path is as fast.
MAX_ANN_CANDIDATES = 8_192
ANN_OVERSAMPLING = 2.0
# Re-scoring a few dozen exact dot products is free and makes up for float16 rounding's near-ties.
MIN_ANN_CANDIDATES = 64
BUILD_CHUNK = 4096


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest finite scores, best first."""
    finite = np.isfinite(scores)
    k = min(k, int(finite.sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    part = part[np.isfinite(scores[part])]
    return part[np.argsort(-scores[part], kind="stable")]


def exact_search(vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> tuple:
    """``(slots, scores)`` of the best ``k`` allowed slots by dot product."""
    matching = int(allowed.sum())
    if matching == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    if matching < len(allowed) // 4:
        # Gathering the few matching rows is cheaper than scoring every row.
        slots = np.flatnonzero(allowed)
        with single_threaded_blas():
            scores = vectors[slots] @ query
        best = top_k(scores, k)
        return slots[best], scores[best]
    with single_threaded_blas():
        scores = vectors @ query
    scores[~allowed] = -np.inf
    best = top_k(scores, k)
    return best, scores[best]


def _set_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class AnnIndex:
    """An HNSW graph keyed by the listings' stable 63-bit keys, built in a background thread.

    Building 100k vectors takes tens of seconds on two shared cores; until the graph is ready (and
    whenever it is not wanted) the caller searches exactly. Writes that arrive during a build are
    replayed onto the new graph before it is swapped in, so it never misses a listing. Keys (not memory
    slots) make the graph independent of load order, so a clean shutdown can save it and the next start
    restore it instead of rebuilding.
    """

    dim: int
    exact_below: int = EXACT_WHEN_MATCHING_AT_MOST
    connectivity: int = 16
    expansion_add: int = 64
    expansion_search: int = 96
    _index: object | None = None
    _building: bool = False
    _generation: int = 0  # bumped by drop(): a build started before it must not install its graph
    _running: int = -1  # the generation the build in progress was started for
    _queued: tuple | None = None  # (keys, vectors) to build once a dropped build has stopped
    _pending: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _idle: threading.Event = field(default_factory=_set_event)
    answered: int = 0  # searches the graph answered (the rest went exact): for tests and benchmarks

    @property
    def ready(self) -> bool:
        return self._index is not None

    @property
    def building(self) -> bool:
        return self._building

    @property
    def signature(self) -> dict[str, object]:
        """What a saved graph must have been built with to be reused."""
        return {"dim": self.dim, "dtype": "f16", "metric": "ip", "connectivity": self.connectivity}

    def _new_index(self):  # -> usearch.index.Index
        from usearch.index import Index

        return Index(
            ndim=self.dim,
            metric="ip",
            dtype="f16",
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self.expansion_search,
        )

    def build(self, keys: np.ndarray, vectors: np.ndarray, background: bool = True) -> None:
        """Start (re)building from a snapshot of ``keys``/``vectors``; a build in progress is kept, unless
        ``drop`` abandoned it: then this snapshot is built as soon as that one has stopped (a reload during
        a build must not leave vector search exact until the next write)."""
        keys = np.asarray(keys, dtype=np.uint64).copy()
        data = np.ascontiguousarray(vectors, dtype=np.float32).copy()
        with self._lock:
            if self._building:
                if self._running != self._generation:
                    self._queued = (keys, data)
                    self._pending.clear()  # the snapshot holds every write so far
                return
            self._building = True
            self._idle.clear()
            generation = self._running = self._generation
        if background:
            # Not a daemon: usearch's native build threads abort the interpreter if killed at exit.
            args = (keys, data, generation)
            threading.Thread(target=self._build, args=args, name="hnsw-build").start()
        else:
            self._build(keys, data, generation)

    def _build(self, keys: np.ndarray, data: np.ndarray, generation: int) -> None:
        while True:
            index = self._graph_of(keys, data, generation)
            with self._lock:
                if index is not None and generation == self._generation:
                    for op, op_keys, op_vectors in self._pending:
                        self._apply(index, op, op_keys, op_vectors)
                    self._index = index
                queued, self._queued = self._queued, None
                if queued is None or generation == self._generation:
                    self._pending.clear()
                    self._building = False
                    break
                # Dropped and asked again meanwhile: build the newer snapshot; the writes recorded
                # since it was taken stay pending for the new graph.
                (keys, data), generation = queued, self._generation
                self._running = generation
        self._idle.set()

    def _graph_of(self, keys: np.ndarray, data: np.ndarray, generation: int):  # -> Index | None
        """A graph of ``keys``/``data``, or None when it failed or ``drop`` abandoned it."""
        try:
            index = self._new_index()
            # In chunks, so that drop() or close() stops a long build within a second or two.
            for start in range(0, len(keys), BUILD_CHUNK):
                if generation != self._generation:
                    return None
                index.add(keys[start : start + BUILD_CHUNK], data[start : start + BUILD_CHUNK], threads=2)
        except Exception:  # a failed build leaves the exact path in charge; nothing is lost
            log.exception("building the HNSW index failed; vector search stays exact")
            return None
        return index

    @staticmethod
    def _apply(index, op: str, keys: np.ndarray, vectors: np.ndarray | None) -> None:
        present = np.atleast_1d(np.asarray(index.contains(keys), dtype=bool))
        if present.any():
            index.remove(keys[present])
        if op == "add" and len(keys):
            index.add(keys, vectors)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no build is running; True when a graph is ready."""
        self._idle.wait(timeout)
        return self.ready

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self._record("add", np.asarray(keys, dtype=np.uint64), np.asarray(vectors, dtype=np.float32))

    def remove(self, keys: np.ndarray) -> None:
        self._record("remove", np.asarray(keys, dtype=np.uint64), None)

    def _record(self, op: str, keys: np.ndarray, vectors: np.ndarray | None) -> None:
        if not len(keys):
            return
        with self._lock:
            if self._building:
                self._pending.append((op, keys.copy(), None if vectors is None else vectors.copy()))
            if self._index is not None:
                self._apply(self._index, op, keys, vectors)

    def drop(self) -> None:
        """Forget the graph and stop a build in progress; searches go exact until the next build."""
        with self._lock:
            self._index = None
            self._pending.clear()
            self._queued = None
            self._generation += 1

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path, digest: str) -> bool:
        """Write the graph and a marker of what it holds; False when there is no graph to save."""
        with self._lock:
            if self._index is None or self._building:
                return False
            marker = path.with_suffix(".json")
            marker.unlink(missing_ok=True)
            tmp = path.with_suffix(".tmp")
            self._index.save(str(tmp))
            os.replace(tmp, path)
            marker.write_text(json.dumps({**self.signature, "digest": digest}))
            return True

    def restore(self, path: Path, digest: str) -> bool:
        """Adopt a saved graph if it was built with these settings over exactly these vectors."""
        from usearch.index import Index

        try:
            marker = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return False
        if marker != {**self.signature, "digest": digest}:
            return False
        try:
            index = Index.restore(str(path))
        except Exception:  # a damaged file is only a cache: rebuild instead
            log.warning("could not restore the HNSW graph from %s; rebuilding", path, exc_info=True)
            return False
        if index is None or index.ndim != self.dim:
            return False
        index.expansion_search = self.expansion_search
        with self._lock:
            self._index = index
            self._generation += 1
        return True

    # ------------------------------------------------------------------ search
    def search(
        self,
        vectors: np.ndarray,
        query: np.ndarray,
        allowed: np.ndarray,
        k: int,
        slot_of_key: Mapping[int, int],
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Like ``exact_search`` via the graph, or ``None`` when the exact path should answer."""
        matching = int(allowed.sum())
        if self._index is None or matching <= self.exact_below:
            return None
        wanted = max(MIN_ANN_CANDIDATES, math.ceil(k * ANN_OVERSAMPLING * len(allowed) / matching))
        if wanted > MAX_ANN_CANDIDATES:
            return None
        with self._lock:
            if self._index is None:
                return None
            matches = self._index.search(query, wanted)
        slots = np.fromiter((slot_of_key.get(int(key), -1) for key in matches.keys), dtype=np.int64)
        slots = slots[slots >= 0]
        candidates = slots[allowed[slots]]
        if len(candidates) < min(k, matching):
            return None  # the graph's neighbourhood was too filtered to fill the page
        with single_threaded_blas():
            scores = vectors[candidates] @ query
        best = top_k(scores, k)
        self.answered += 1
        return candidates[best], scores[best]
