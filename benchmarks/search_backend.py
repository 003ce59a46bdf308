"""Micro-benchmark of the embedded search backend at catalog scale (synthetic listings, random vectors).

    python -m benchmarks.search_backend [N]      # default 100000

Prints, for N listings: load/index time, facet-mask cost, BM25 top-100, exact and HNSW vector top-100,
HNSW build / save / restore time
(unfiltered and filtered), a sorted page, and a single-listing upsert. Reference points on this machine
kind (architecture.md §6): BM25 top-100 over 100k ~0.5 ms; exact dot top-100 ~3.3 ms; HNSW ~0.2 ms.
Random vectors are the worst case for HNSW build time and a fine case for search speed.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from search.embedded import EmbeddedBackend
from search.types import IndexedListing, SearchFilters

DIM = 384
CATEGORIES = ["Natural Language Processing", "Computer Vision", "Audio", "Tabular", "Multimodal"]
KINDS = ["model", "dataset", "algorithm", "notebook", "pipeline"]


def clustered_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit vectors around n/50 topics: like sentence embeddings, neighbours are close and meaningful.
    (Uniformly random 384-d vectors are all nearly equidistant, which no real catalog looks like.)"""
    centres = rng.standard_normal((max(1, n // 50), DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((n, DIM)).astype(np.float32) * (0.7 / np.sqrt(DIM))
    vectors = centres[rng.integers(0, len(centres), size=n)] + noise
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def synthetic_listings(n: int, seed: int = 0) -> list[IndexedListing]:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(5000)] + ["sentiment", "detection", "speech", "review"])
    vectors = clustered_vectors(rng, n)
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(words, size=25))
        docs.append(
            IndexedListing(
                id=f"bench-{i:07d}",
                kind=KINDS[i % 5],
                name=" ".join(rng.choice(words, size=3)),
                category=CATEGORIES[i % 5],
                description=text,
                subcategories=(f"sub{i % 40}",),
                tags=tuple(rng.choice(words, size=3)),
                visibility="public" if i % 10 else "private",
                owner_id=f"owner{i % 100}",
                accuracy=float(rng.random()) if i % 3 else None,
                latency_p50_ms=float(rng.integers(1, 500)),
                cpu=float(rng.integers(1, 8)),
                relative_usage=float(rng.random()),
                created_at=float(i),
                embedding=vectors[i],
            )
        )
    return docs


def timed_ms(fn: Callable[[], object], repeat: int = 50) -> float:
    """Median wall time of ``fn`` in milliseconds, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main(n: int) -> dict[str, float]:
    figures: dict[str, float] = {"listings": n}
    start = time.perf_counter()
    docs = synthetic_listings(n)
    figures["generate_s"] = time.perf_counter() - start
    rng = np.random.default_rng(1)
    # Queries near listings (as real queries are near the listings they want), not copies of them.
    picked = np.stack([docs[int(i)].embedding for i in rng.integers(0, n, size=20)])
    queries = picked + rng.standard_normal(picked.shape).astype(np.float32) * (0.5 / np.sqrt(DIM))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    anyone = SearchFilters()
    narrow = SearchFilters(category="Audio", kinds=("algorithm",), max_latency_ms=250, cpu=4)
    with tempfile.TemporaryDirectory() as tmp:
        backend = EmbeddedBackend(Path(tmp) / "index", DIM, ann_threshold=n + 1)
        start = time.perf_counter()
        backend.load(docs)
        figures["load_with_index_build_s"] = time.perf_counter() - start
        backend.close()
        backend = EmbeddedBackend(Path(tmp) / "index", DIM, ann_threshold=n + 1)
        start = time.perf_counter()
        rebuilt = backend.load(docs)
        figures["load_reusing_index_s"] = time.perf_counter() - start
        assert not rebuilt
        figures["count_public_ms"] = timed_ms(lambda: backend.count(anyone))  # one facet mask
        figures["count_narrow_ms"] = timed_ms(lambda: backend.count(narrow))
        broad_text = "sentiment review w17 w2048"
        figures["bm25_top100_ms"] = timed_ms(lambda: backend.keyword(broad_text, anyone, 100))
        figures["bm25_top100_narrow_ms"] = timed_ms(lambda: backend.keyword("sentiment review", narrow, 100))
        figures["exact_top100_ms"] = timed_ms(lambda: backend.vector(queries[0], anyone, 100))
        figures["exact_top100_narrow_ms"] = timed_ms(lambda: backend.vector(queries[1], narrow, 100))
        figures["sorted_page_usage_ms"] = timed_ms(lambda: backend.filtered(anyone, "usage", 20, 40))
        # Each upsert changes the indexed text, so every call commits to tantivy (an unchanged
        # projection, e.g. a usage update, skips tantivy and costs microseconds).
        renames = (replace(docs[7], name=f"renamed listing {i}") for i in range(1000))
        figures["upsert_one_ms"] = timed_ms(lambda: backend.upsert([next(renames)]), 10)
        figures["upsert_usage_only_ms"] = timed_ms(
            lambda: backend.upsert([replace(docs[8], relative_usage=float(np.random.random()))]), 10
        )
        backend.close()

        ann_dir = Path(tmp) / "ann"
        ann = EmbeddedBackend(ann_dir, DIM, ann_threshold=min(50_000, n // 2))
        start = time.perf_counter()
        ann.load(docs)
        ann.wait_for_ann()
        figures["hnsw_build_s"] = time.perf_counter() - start
        start = time.perf_counter()
        ann.close()
        figures["close_saving_graph_s"] = time.perf_counter() - start
        ann = EmbeddedBackend(ann_dir, DIM, ann_threshold=min(50_000, n // 2))
        start = time.perf_counter()
        ann.load(docs)
        assert ann.ann_ready
        figures["load_restoring_graph_s"] = time.perf_counter() - start
        figures["hnsw_top100_ms"] = timed_ms(lambda: ann.vector(queries[2], anyone, 100))
        figures["hnsw_top10_ms"] = timed_ms(lambda: ann.vector(queries[2], anyone, 10))
        figures["hnsw_recall_at_10"] = recall_at_10(ann, queries, docs)
        figures["hnsw_answered"] = ann.ann_searches
        ann.close()
    return figures


def recall_at_10(backend: EmbeddedBackend, queries: np.ndarray, docs: list[IndexedListing]) -> float:
    """Share of the exact top-10 that the HNSW path returns, over the benchmark queries."""
    matrix = np.stack([doc.embedding for doc in docs])
    found = 0
    for query in queries:
        truth = {docs[i].id for i in np.argsort(-(matrix @ query))[:10]}
        everything = SearchFilters(viewer_is_admin=True)  # the truth above ignores visibility too
        found += len(truth & {h.id for h in backend.vector(query, everything, 10)})
    return found / (10 * len(queries))


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    results = main(size)
    for name, value in results.items():
        print(f"{name:>28}: {value:.3f}" if isinstance(value, float) else f"{name:>28}: {value}")
    print(json.dumps({k: round(v, 4) for k, v in results.items()}))
