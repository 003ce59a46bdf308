"""The approximate (HNSW) vector path: used above the threshold, and agreeing with the exact path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from search_support import listing

from search.embedded import EmbeddedBackend
from search.types import SearchFilters
from search.vectors import BUILD_CHUNK, AnnIndex

DIM = 32
N = 600


def clustered_vectors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Listings around 12 well-separated centres, so the true nearest neighbours are unambiguous."""
    centres = rng.standard_normal((12, DIM)).astype(np.float32) * 4
    members = rng.integers(0, 12, size=N)
    vectors = centres[members] + rng.standard_normal((N, DIM)).astype(np.float32) * 0.3
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), members


@pytest.fixture
def pair(tmp_path: Path):
    """The same catalog in an HNSW-backed backend (threshold 100) and an exact one."""
    rng = np.random.default_rng(11)
    vectors, members = clustered_vectors(rng)
    docs = [
        listing(
            f"v{i}", embedding=vectors[i], category=f"c{members[i] % 3}", kind="model" if i % 2 else "dataset"
        )
        for i in range(N)
    ]
    approx = EmbeddedBackend(tmp_path / "approx", DIM, ann_threshold=100)
    exact = EmbeddedBackend(tmp_path / "exact", DIM, ann_threshold=10**9)
    approx.load(docs)
    exact.load(docs)
    assert approx.wait_for_ann(60), "the HNSW build should finish quickly at this size"
    yield approx, exact, vectors, members
    approx.close()
    exact.close()


def test_ann_top_results_match_exact(pair) -> None:
    approx, exact, vectors, members = pair
    before = approx.ann_searches
    for q in (0, 17, 123, 599):
        query = vectors[q]
        fast = approx.vector(query, SearchFilters(), 10)
        slow = exact.vector(query, SearchFilters(), 10)
        assert fast[0].id == slow[0].id == f"v{q}"
        # Within a cluster neighbours are near-ties, so compare what is unambiguous: the cluster.
        assert all(members[int(h.id[1:])] == members[q] for h in fast + slow)
        assert fast[0].score == pytest.approx(1.0, abs=1e-5)  # candidates are re-scored exactly
    assert approx.ann_searches == before + 4
    assert not exact.ann_ready


def test_ann_respects_filters(pair) -> None:
    approx, exact, vectors, _ = pair
    filters = SearchFilters(kinds=("model",), category="c1")
    fast = approx.vector(vectors[5], filters, 10)
    slow = exact.vector(vectors[5], filters, 10)
    assert fast and all(approx.get([h.id])[h.id].kind == "model" for h in fast)
    assert all(approx.get([h.id])[h.id].category == "c1" for h in fast)
    assert fast[0].id == slow[0].id


def test_ann_sees_writes_after_build(pair) -> None:
    approx, _, vectors, _ = pair
    fresh = -vectors[3]  # a direction nobody else is near
    approx.upsert([listing("fresh", embedding=fresh)])
    assert approx.vector(fresh, SearchFilters(), 1)[0].id == "fresh"
    approx.delete(["fresh", "v3"])
    hits = approx.vector(fresh, SearchFilters(), 20) + approx.vector(vectors[3], SearchFilters(), 20)
    assert {"fresh", "v3"}.isdisjoint(h.id for h in hits)
    assert approx.ann_ready


def test_graph_saved_on_close_is_restored_only_for_the_same_vectors(tmp_path: Path) -> None:
    vectors, _ = clustered_vectors(np.random.default_rng(5))
    docs = [listing(f"v{i}", embedding=vectors[i]) for i in range(N)]
    with EmbeddedBackend(tmp_path, DIM, ann_threshold=100) as first:
        first.load(docs)
        assert first.wait_for_ann(60)
    assert (tmp_path / "vectors.usearch").exists()

    with EmbeddedBackend(tmp_path, DIM, ann_threshold=100) as second:
        second.load(list(reversed(docs)))  # another load order: keys, not slots, identify vectors
        assert second.ann_ready  # restored synchronously, no build
        assert second.vector(vectors[42], SearchFilters(), 1)[0].id == "v42"
        assert second.ann_searches == 1

    moved = [listing("v0", embedding=-vectors[0]), *docs[1:]]
    with EmbeddedBackend(tmp_path, DIM, ann_threshold=100) as third:
        third.load(moved)
        third.wait_for_ann(60)  # a different vector: the saved graph is stale and gets rebuilt
        assert third.vector(-vectors[0], SearchFilters(), 1)[0].id == "v0"


def test_a_build_a_reload_interrupts_is_started_again() -> None:
    """A reload (``load``) drops the graph, which stops a build in progress, and at once asks for a build
    of what it loaded: that request came while the stopped build was still winding down and was ignored,
    so vector search stayed exact (slow at 100k listings) until the next write happened to start one."""
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((10 * BUILD_CHUNK, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = np.arange(1, len(vectors) + 1, dtype=np.uint64)
    ann = AnnIndex(DIM)
    ann.build(keys, vectors)  # the first start's build, many chunks long
    ann.drop()  # a reload ...
    ann.build(keys[::-1], vectors[::-1])  # ... and the build of what it loaded
    assert ann.wait(120) and ann.ready
    slot_of_key = {int(key): slot for slot, key in enumerate(keys)}
    found = ann.search(vectors, vectors[7], np.ones(len(vectors), dtype=bool), 1, slot_of_key)
    assert found is not None and list(found[0]) == [7]
