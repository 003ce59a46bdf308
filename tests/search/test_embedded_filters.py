"""Every facet and visibility rule, checked through all four read paths of the embedded backend.

keyword (tantivy clauses), vector and count/filtered (numpy mask) implement the rules separately, so
each case asserts that all of them return exactly the expected listings.
"""

from __future__ import annotations

import numpy as np
import pytest
from search_support import CATALOG, FACET_CASES, PUBLIC_ACTIVE, VISIBILITY_CASES, axis, found, listing

from infra.errors import BadInput
from search.embedded import EmbeddedBackend
from search.types import SearchFilters


@pytest.fixture
def loaded(backend: EmbeddedBackend) -> EmbeddedBackend:
    backend.load(CATALOG)
    return backend


@pytest.mark.parametrize(("filters", "expected"), FACET_CASES)
def test_facets_filter_before_ranking(loaded: EmbeddedBackend, filters: SearchFilters, expected: set) -> None:
    assert found(loaded, filters) == expected


@pytest.mark.parametrize(("viewer", "admin", "expected"), VISIBILITY_CASES)
def test_visibility(loaded: EmbeddedBackend, viewer: str | None, admin: bool, expected: set) -> None:
    assert found(loaded, SearchFilters(viewer_id=viewer, viewer_is_admin=admin)) == expected


def test_suspended_hidden_unless_asked(loaded: EmbeddedBackend) -> None:
    with_suspended = found(loaded, SearchFilters(include_suspended=True))
    assert with_suspended == PUBLIC_ACTIVE | {"suspended", "verification-suspended"}


def test_filter_clauses_do_not_change_bm25_scores(loaded: EmbeddedBackend) -> None:
    unfiltered = loaded.keyword("listing nlp", SearchFilters(), 10)
    filtered = loaded.keyword("listing nlp", SearchFilters(kinds=("model", "dataset"), cpu=64.0), 10)
    assert [(h.id, h.score) for h in filtered] == [(h.id, h.score) for h in unfiltered]


def test_top_k_is_taken_among_matching_docs_only(backend: EmbeddedBackend) -> None:
    """A hundred better-matching listings outside the facet must not crowd the one inside it out."""
    crowd = [listing(f"crowd-{i}", name="sentiment sentiment model", embedding=axis(1)) for i in range(100)]
    target = listing("target", name="sentiment model", category="Audio", embedding=axis(1) + axis(2))
    backend.load([*crowd, target])
    only_audio = SearchFilters(category="Audio")
    assert [h.id for h in backend.keyword("sentiment", only_audio, 5)] == ["target"]
    assert [h.id for h in backend.vector(axis(1), only_audio, 5)] == ["target"]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("usage", ["pub-nlp", "pub-vision", "pub-dataset"]),
        ("relevance", ["pub-nlp", "pub-vision", "pub-dataset"]),
        ("accuracy", ["pub-nlp", "pub-vision", "pub-dataset"]),  # unknown accuracy last
        ("latency", ["pub-nlp", "pub-vision", "pub-dataset"]),  # unknown latency last
        ("newest", ["pub-vision", "pub-dataset", "pub-nlp"]),
        ("NEWEST", ["pub-vision", "pub-dataset", "pub-nlp"]),
    ],
)
def test_filtered_sorts(loaded: EmbeddedBackend, sort: str, expected: list[str]) -> None:
    hits = loaded.filtered(SearchFilters(), sort, 10)
    assert [h.id for h in hits] == expected
    assert [h.rank for h in hits] == [1, 2, 3]


def test_filtered_pages_with_offset(loaded: EmbeddedBackend) -> None:
    admin = SearchFilters(viewer_is_admin=True, include_suspended=True)
    everything = [h.id for h in loaded.filtered(admin, "newest", 100)]
    assert len(everything) == len(CATALOG)
    pages = [loaded.filtered(admin, "newest", 3, offset) for offset in (0, 3, 6)]
    assert [h.id for page in pages for h in page] == everything
    assert [h.rank for h in pages[1]] == [4, 5, 6]


def test_large_catalog_partial_sort_matches_full_sort(backend: EmbeddedBackend) -> None:
    rng = np.random.default_rng(7)
    usage = rng.integers(0, 20, size=400) / 20  # many ties at the page boundary
    backend.load(
        [listing(f"u{i}", relative_usage=float(u), created_at=float(i)) for i, u in enumerate(usage)]
    )
    expected = sorted(range(400), key=lambda i: (-usage[i], -i))
    assert [h.id for h in backend.filtered(SearchFilters(), "usage", 25)] == [f"u{i}" for i in expected[:25]]
    page = backend.filtered(SearchFilters(), "usage", 10, offset=25)
    assert [h.id for h in page] == [f"u{i}" for i in expected[25:35]]


def test_random_filters_agree_across_paths(backend: EmbeddedBackend) -> None:
    """Randomized catalog and filters: tantivy clauses and the numpy mask must select the same set."""
    rng = np.random.default_rng(3)
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    maybe = lambda value: value if rng.random() < 0.7 else None  # noqa: E731
    docs = [
        listing(
            f"r{i}",
            kind=pick(["model", "dataset", "algorithm"]),
            category=pick(["A", "B", "C"]),
            subcategories=tuple(
                rng.choice(["s1", "s2", "s3", "s4"], size=int(rng.integers(0, 3)), replace=False)
            ),
            input_format=maybe(pick(["text", "image"])),
            accuracy=maybe(float(rng.random())),
            latency_p50_ms=maybe(float(rng.integers(1, 100))),
            cpu=maybe(float(rng.integers(1, 8))),
            gpu=maybe(int(rng.integers(0, 2))),
            visibility=pick(["public", "private", "shared"]),
            owner_id=pick(["u1", "u2", None]),
            shared_with=tuple(rng.choice(["u1", "u2", "u3"], size=int(rng.integers(0, 2)), replace=False)),
            verification_status=pick(["verified", "unverified", "suspended"]),
            embedding=rng.standard_normal(8),
        )
        for i in range(300)
    ]
    backend.load(docs)
    for _ in range(60):
        filters = SearchFilters(
            kinds=maybe(("model", "dataset")),
            category=maybe(pick(["A", "B"])),
            subcategory=maybe(pick(["s1", "s3"])),
            input_format=maybe("text") if rng.random() < 0.3 else None,
            max_latency_ms=maybe(float(rng.integers(10, 90))),
            min_accuracy=maybe(float(rng.random())) if rng.random() < 0.5 else None,
            cpu=maybe(4.0),
            gpu=maybe(0),
            verified_only=bool(rng.random() < 0.2),
            viewer_id=pick(["u1", "u3", None]),
            viewer_is_admin=bool(rng.random() < 0.1),
            include_suspended=bool(rng.random() < 0.3),
        )
        found(backend, filters)


@pytest.mark.parametrize(
    "filters",
    [
        SearchFilters(max_latency_ms=float("nan")),
        SearchFilters(min_accuracy=float("inf")),
        SearchFilters(cpu=-1),
        SearchFilters(memory_mb="lots"),  # type: ignore[arg-type]
    ],
)
def test_bad_filter_values_are_bad_input(loaded: EmbeddedBackend, filters: SearchFilters) -> None:
    for call in (
        lambda: loaded.keyword("listing", filters, 5),
        lambda: loaded.vector(axis(0), filters, 5),
        lambda: loaded.filtered(filters, "usage", 5),
        lambda: loaded.count(filters),
    ):
        with pytest.raises(BadInput):
            call()


def test_bad_sort_limit_offset_and_vector(loaded: EmbeddedBackend) -> None:
    with pytest.raises(BadInput, match="unknown sort"):
        loaded.filtered(SearchFilters(), "popularity", 5)
    with pytest.raises(BadInput):
        loaded.filtered(SearchFilters(), "usage", 5, offset=-1)
    with pytest.raises(BadInput):
        loaded.keyword("listing", SearchFilters(), -1)
    with pytest.raises(BadInput):
        loaded.vector(np.zeros(8), SearchFilters(), 5)
    with pytest.raises(BadInput):
        loaded.vector(np.ones(3), SearchFilters(), 5)


def test_query_text_is_never_syntax(loaded: EmbeddedBackend) -> None:
    for text in ("listing AND (", 'name:"listing', "-listing", "listing~2 ^3 *", "the of and"):
        hits = loaded.keyword(text, SearchFilters(), 10)
        assert all(h.id in PUBLIC_ACTIVE for h in hits)
    assert loaded.keyword("the of and", SearchFilters(), 10) == []
    assert loaded.keyword("", SearchFilters(), 10) == []


def test_multi_valued_columns_match_at_every_position(backend: EmbeddedBackend) -> None:
    """The mask reads ``shared_with`` and ``subcategories`` one position at a time (``_rows_holding``):
    a reader or subcategory in any position of a column widened past its first rows must match, a value
    in none must not, and padding never matches."""
    readers = ("ann", "ben", "cat", "dan")
    backend.load(
        [
            listing("narrow", visibility="shared", owner_id="owner", shared_with=("ann",)),
            listing(
                "wide",
                visibility="shared",
                owner_id="owner",
                shared_with=readers,
                subcategories=("A", "B", "C"),
            ),
            listing("private-wide", visibility="private", owner_id="owner", shared_with=readers),
            listing("public", subcategories=("C",)),
        ]
    )
    for position, reader in enumerate(readers):
        expected = {"public", "wide"} | ({"narrow"} if position == 0 else set())
        assert found(backend, SearchFilters(viewer_id=reader)) == expected, reader
    assert found(backend, SearchFilters(viewer_id="eve")) == {"public"}
    assert found(backend, SearchFilters(viewer_is_admin=True, subcategory="C")) == {"wide", "public"}
    assert found(backend, SearchFilters(viewer_is_admin=True, subcategory="B")) == {"wide"}
    assert found(backend, SearchFilters(viewer_is_admin=True, subcategory="Z")) == set()
