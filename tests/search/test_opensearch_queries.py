"""The OpenSearch backend's requests and mappings, checked as exact dicts without a server."""

from __future__ import annotations

import numpy as np
import pytest
from search_support import CATALOG, FACET_CASES, VISIBILITY_CASES, listing

from infra.errors import Unavailable
from infra.settings import Settings
from search import opensearch_queries as q
from search.documents import DOCUMENTATION_INDEX_CHARS, indexed_documentation
from search.embedded import EmbeddedBackend
from search.factory import make_backend, open_backend
from search.opensearch import ABANDONED_AFTER_S, OpenSearchBackend
from search.types import Hit, SearchFilters
from tests.search.opensearch_cluster import InMemoryCluster, filter_matches

HIDE_SUSPENDED = {"term": {"hidden": False}}
PUBLIC_ONLY = {"terms": {"readers": [":public"]}}


def test_mapping_has_english_text_keyword_facets_and_hnsw_vector() -> None:
    mappings = q.index_mappings(384)
    props = mappings["properties"]
    assert mappings["dynamic"] == "strict"
    assert props["description"] == {"type": "text", "analyzer": "mlrepo_english"}
    assert props["documentation"] == {"type": "text", "analyzer": "mlrepo_english"}
    assert props["category"] == {
        "type": "keyword",
        "fields": {"text": {"type": "text", "analyzer": "mlrepo_english"}},
    }
    assert props["kind"] == props["readers"] == props["input_format"] == {"type": "keyword"}
    assert props["embedding"] == {
        "type": "knn_vector",
        "dimension": 384,
        "method": {
            "name": "hnsw",
            "engine": "lucene",
            "space_type": "cosinesimil",
            "parameters": {"m": 16, "ef_construction": 128},
        },
    }
    assert q.index_settings()["index"]["knn"] is True
    # Every field a document carries is mapped (the mapping is strict).
    assert set(q.to_document(listing("a", embedding=np.ones(384)))) == set(props)


def test_template_covers_the_physical_indices_behind_the_alias() -> None:
    template = q.index_template("mlrepo-listings", 8)
    assert template["index_patterns"] == ["mlrepo-listings-*"]
    assert template["template"]["mappings"]["properties"]["embedding"]["dimension"] == 8
    name = q.physical_index_name("mlrepo-listings", "20260101")
    assert name == f"mlrepo-listings-v{q.MAPPING_VERSION}-20260101"


def test_alias_swap_is_one_atomic_request() -> None:
    assert q.alias_swap_actions("a", "a-v1-new", ["a-v1-old2", "a-v1-old1"]) == {
        "actions": [
            {"remove": {"index": "a-v1-old1", "alias": "a"}},
            {"remove": {"index": "a-v1-old2", "alias": "a"}},
            {"add": {"index": "a-v1-new", "alias": "a", "is_write_index": True}},
        ]
    }


def test_default_filters_hide_suspended_and_non_public() -> None:
    assert q.filter_clauses(SearchFilters()) == [HIDE_SUSPENDED, PUBLIC_ONLY]
    assert q.filter_clauses(SearchFilters(viewer_is_admin=True, include_suspended=True)) == []
    assert q.filter_clauses(SearchFilters(viewer_id="u1", include_suspended=True)) == [
        {"terms": {"readers": [":public", "u1"]}}
    ]


def test_every_facet_becomes_a_filter_clause() -> None:
    filters = SearchFilters(
        kinds=("model", "dataset"),
        category="NLP",
        subcategory="Sentiment",
        input_format="text",
        output_format="class-label",
        max_latency_ms=50,
        min_accuracy=0.8,
        cpu=2.0,
        memory_mb=4096,
        gpu=0,
        verified_only=True,
        viewer_is_admin=True,
    )

    def fits(field: str, limit: float) -> dict:
        return {
            "bool": {
                "should": [
                    {"range": {field: {"lte": limit}}},
                    {"bool": {"must_not": {"exists": {"field": field}}}},
                ],
                "minimum_should_match": 1,
            }
        }

    assert q.filter_clauses(filters) == [
        {"terms": {"kind": ["model", "dataset"]}},
        {"term": {"category": "NLP"}},
        {"term": {"subcategories": "Sentiment"}},
        {"term": {"input_format": "text"}},
        {"term": {"output_format": "class-label"}},
        {"range": {"latency_p50_ms": {"lte": 50}}},
        {"range": {"accuracy": {"gte": 0.8}}},
        fits("cpu", 2.0),
        fits("memory_mb", 4096),
        fits("gpu", 0),
        {"term": {"verification_status": "verified"}},
        HIDE_SUSPENDED,
    ]


def test_keyword_query_is_boosted_multi_match_with_filters() -> None:
    body = q.keyword_query("sentiment of reviews", SearchFilters(category="NLP"), 20)
    assert body == {
        "size": 20,
        "_source": False,
        "track_total_hits": False,
        "query": {
            "bool": {
                "must": [
                    {
                        "multi_match": {
                            "query": "sentiment reviews",  # "of" is a stop word in both backends
                            "fields": [
                                "name^1",
                                "tags^1",
                                "subcategories.text^1",
                                "category.text^1",
                                "description^1",
                                "documentation^0.5",
                            ],
                            "type": "most_fields",
                        }
                    }
                ],
                "filter": [{"term": {"category": "NLP"}}, HIDE_SUSPENDED, PUBLIC_ONLY],
            }
        },
    }


def test_knn_query_filters_inside_the_graph_search() -> None:
    body = q.knn_query(np.array([0.6, 0.8], dtype=np.float32), SearchFilters(kinds=("model",)), 5)
    knn = body["query"]["knn"]["embedding"]
    assert body["size"] == 5 and body["_source"] is False
    assert knn["k"] == 5
    assert knn["vector"] == pytest.approx([0.6, 0.8])
    assert knn["filter"] == {
        "bool": {"filter": [{"terms": {"kind": ["model"]}}, HIDE_SUSPENDED, PUBLIC_ONLY]}
    }
    admin = q.knn_query(np.ones(2), SearchFilters(viewer_is_admin=True, include_suspended=True), 3)
    assert "filter" not in admin["query"]["knn"]["embedding"]


@pytest.mark.parametrize(
    ("sort", "first"),
    [
        ("usage", {"relative_usage": {"order": "desc", "missing": "_last"}}),
        ("relevance", {"relative_usage": {"order": "desc", "missing": "_last"}}),
        ("accuracy", {"accuracy": {"order": "desc", "missing": "_last"}}),
        ("latency", {"latency_p50_ms": {"order": "asc", "missing": "_last"}}),
        ("newest", {"created_at": {"order": "desc"}}),
    ],
)
def test_sorted_query_pages_deterministically(sort: str, first: dict) -> None:
    body = q.sorted_query(SearchFilters(), sort, 10, 30)
    assert body["sort"][0] == first
    assert body["sort"][-1] == {"id": {"order": "asc"}}
    assert (body["size"], body["from"]) == (10, 30)
    assert body["query"] == {"bool": {"filter": [HIDE_SUSPENDED, PUBLIC_ONLY]}}
    assert q.count_query(SearchFilters()) == {"query": body["query"]}


def test_documents_round_trip() -> None:
    doc = listing(
        "a",
        subcategories=("s",),
        tags=("t1", "t2"),
        visibility="shared",
        owner_id="o",
        shared_with=("x",),
        accuracy=0.5,
        cpu=2.0,
        status="suspended",
        documentation="## Usage\nCall it.",
        embedding=np.array([0.6, 0.8], dtype=np.float32),
    )
    source = q.to_document(doc)
    assert source["readers"] == ["o", "x"]
    assert source["hidden"] is True
    assert source["embedding"] == pytest.approx([0.6, 0.8])
    back = q.from_document(source)
    np.testing.assert_allclose(back.embedding, doc.embedding)
    assert back == doc  # embedding is excluded from equality; every other field survives


def test_a_word_only_in_the_documentation_is_indexed_and_searched() -> None:
    """A requester's word found only in a producer's README must reach the listing: the document
    carries the documentation (capped) and every keyword query searches it."""
    readme = "## Usage\nWorks on scanned invoices from retailers. " + "filler " * 3_000 + "zanzibar"
    doc = listing("a", description="A text model.", documentation=readme)
    source = q.to_document(doc)
    assert source["documentation"] == indexed_documentation(readme)
    assert "invoices" in source["documentation"] and "zanzibar" not in source["documentation"]
    assert len(source["documentation"]) <= DOCUMENTATION_INDEX_CHARS
    assert q.fingerprint(doc) != q.fingerprint(listing("a", description="A text model."))
    match = q.keyword_query("invoices", SearchFilters(), 5)["query"]["bool"]["must"][0]["multi_match"]
    assert "documentation^0.5" in match["fields"]
    weighted = q.keyword_query("invoices", SearchFilters(), 5, {"invoices": 2.0})["query"]["bool"]["must"]
    assert "documentation^0.5" in weighted[0]["bool"]["should"][0]["multi_match"]["fields"]


def test_bulk_actions_are_idempotent_by_id() -> None:
    (action,) = q.index_actions("idx", [listing("a", embedding=None)])
    assert (action["_op_type"], action["_index"], action["_id"]) == ("index", "idx", "a")
    assert "embedding" not in action["_source"]
    assert list(q.delete_actions("idx", ["a"])) == [{"_op_type": "delete", "_index": "idx", "_id": "a"}]


def test_responses_become_hits() -> None:
    response = {"hits": {"hits": [{"_id": "a", "_score": 0.9}, {"_id": "b", "_score": 0.75}]}}
    assert q.hits_from_response(response) == [Hit("a", 0.9, 1), Hit("b", 0.75, 2)]
    assert q.cosine_from_score(0.75) == pytest.approx(0.5)
    sorted_response = {
        "hits": {
            "hits": [
                {"_id": "a", "_score": None, "sort": [0.7, 1.0, "a"]},
                {"_id": "b", "_score": None, "sort": ["-Infinity", 2.0, "b"]},
                {"_id": "c", "_score": None, "sort": [-1.7976931348623157e308, 3.0, "c"]},
            ]
        }
    }
    assert q.sorted_hits_from_response(sorted_response, 10) == [
        Hit("a", 0.7, 11),
        Hit("b", 0.0, 12),
        Hit("c", 0.0, 13),
    ]
    mget = {
        "docs": [
            {"_id": "a", "found": True, "_source": q.to_document(listing("a"))},
            {"_id": "z", "found": False},
        ]
    }
    assert list(q.docs_from_mget(mget)) == ["a"]
    assert q.mget_body(["a", "b", "a"]) == {"ids": ["a", "b"]}


def test_factory_picks_the_configured_backend(tmp_path) -> None:
    embedded = open_backend(Settings(data_dir=tmp_path), 8)
    try:
        assert isinstance(embedded, EmbeddedBackend)
        assert embedded.dim == 8
    finally:
        embedded.close()
    with pytest.raises(Unavailable, match="MLREPO_OPENSEARCH_URL"):
        make_backend(Settings(data_dir=tmp_path, search_backend="opensearch"), 8)
    remote = make_backend(
        Settings(data_dir=tmp_path, search_backend="opensearch", opensearch_url="http://127.0.0.1:9"), 8
    )
    assert isinstance(remote, OpenSearchBackend) and remote.alias == "mlrepo-listings"
    remote.close()


def test_unreachable_opensearch_is_unavailable(tmp_path) -> None:
    backend = OpenSearchBackend.connect("http://127.0.0.1:9", "mlrepo-test", 8)
    try:
        with pytest.raises(Unavailable, match="OpenSearch"):
            backend.count(SearchFilters())
    finally:
        backend.close()


def test_unreachable_opensearch_fails_loading_cleanly() -> None:
    backend = OpenSearchBackend.connect("http://127.0.0.1:9", "mlrepo-test", 8)
    try:
        with pytest.raises(Unavailable, match="OpenSearch"):
            backend.load([listing("a", embedding=None)])
    finally:
        backend.close()


def test_word_weights_become_one_boosted_match_per_word() -> None:
    fields = q.keyword_query("x", SearchFilters(), 5)["query"]["bool"]["must"][0]["multi_match"]["fields"]
    body = q.keyword_query(
        "Sentiment of sentiment, reviews", SearchFilters(), 5, {"sentiment": 0.5, "of": 0.0}
    )
    assert body["query"]["bool"]["must"] == [
        {
            "bool": {
                "should": [
                    {"multi_match": {"query": w, "fields": fields, "type": "most_fields", "boost": b}}
                    for w, b in (("sentiment", 0.5), ("reviews", 1.0))  # "of": a stop word
                ],
                "minimum_should_match": 1,
            }
        }
    ]
    assert q.keyword_query("a b", SearchFilters(), 5, {}) == q.keyword_query("a b", SearchFilters(), 5)


def test_startup_rebuilds_an_index_with_a_stale_document_though_the_count_matches() -> None:
    """A crash between an index write and its database commit leaves a document the database never
    agreed to, in an index with exactly the database's count: startup must not keep it until someone
    runs ``mlrepo reindex``. It compares one aggregated digest, never reading the documents."""
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    committed = [listing("a", name="fresh name", embedding=np.ones(8)), listing("b", embedding=None)]
    assert backend.load(committed) is True
    backend.upsert([listing("a", name="never committed", embedding=np.ones(8))])  # then the process died
    (first,) = cluster.aliases

    assert backend.load(committed) is True
    (second,) = cluster.aliases
    assert second != first and cluster.docs[second]["a"]["name"] == "fresh name"
    backend.upsert([listing("b", embedding=np.ones(8))])  # only a vector differs
    assert backend.load(committed) is True
    assert backend.load(committed) is False  # identical: the shared index is kept
    assert [r for r in cluster.requests if r[0] == "mget"] == []


def test_reindex_rebuilds_even_an_index_that_matches_the_database() -> None:
    """``mlrepo reindex`` (``rebuild=True``) is the operator's repair: the digest cannot see a damaged
    index, so the repair trusts nothing."""
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    docs = [listing("a", embedding=None)]
    assert backend.load(docs) is True
    (first,) = cluster.aliases
    assert backend.load(docs, rebuild=True) is True
    (second,) = cluster.aliases
    assert second != first and ("swap", second) in cluster.requests


def test_indices_left_by_a_crashed_rebuild_are_deleted_but_not_one_being_built() -> None:
    """A rebuild that dies between creating its index and swapping the alias (a killed process) leaves an
    index nobody serves; the next load deletes it. An index another process is loading right now has a
    fresh heartbeat and must survive, or that rebuild fails (or swaps in a deleted index)."""
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    backend.load([listing("a", embedding=None)])
    (served,) = cluster.aliases
    crashed = backend._create_index()  # as a reindex does first; then the process was killed
    cluster.meta[crashed]["rebuild_heartbeat"] -= ABANDONED_AFTER_S + 1  # ... long ago
    older_release = "listings-v1-20250101000000000000"  # from before heartbeats: never one in progress
    backend.client.indices.create(index=older_release, body={"mappings": {}})
    building = backend._create_index()  # another process's reindex, loading right now
    not_ours = "listings-v1-archive"
    backend.client.indices.create(index=not_ours, body={"mappings": {}})

    assert backend.load([listing("a", embedding=None)]) is False
    assert set(cluster.docs) == {served, building, not_ours}
    assert cluster.aliases == {served: "listings"}


def test_requests_stay_within_the_result_window_opensearch_answers() -> None:
    """The search service issues cursors up to offset 10,000 and asks for offset + limit candidates; the
    embedded backend answers any depth, OpenSearch refuses from + size (and a k-NN k) above 10,000 with an
    error. Deeper requests are cut to the window: the results end there instead of failing."""
    vector = np.ones(8, dtype=np.float32)
    assert q.keyword_query("x", SearchFilters(), 10_100)["size"] == q.MAX_RESULT_WINDOW == 10_000
    knn = q.knn_query(vector, SearchFilters(), 10_100)
    assert knn["size"] == knn["query"]["knn"]["embedding"]["k"] == 10_000
    page = q.sorted_query(SearchFilters(), "newest", 100, 9_950)
    assert (page["from"], page["size"]) == (9_950, 50)
    assert q.keyword_query("x", SearchFilters(), 100)["size"] == 100
    # Past the window there is nothing to ask for: the backend answers an empty page without a request.
    backend = OpenSearchBackend(InMemoryCluster(), "listings", 8)  # type: ignore[arg-type]
    assert backend.filtered(SearchFilters(), "newest", 100, 10_000) == []


def test_get_leaves_the_vectors_out_when_the_caller_does_not_need_them() -> None:
    """Ranking reads a couple of hundred projections per search and never their vectors: fetching 384
    floats of JSON for each would cost more than the rest of the search."""
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    backend.load([listing("a", embedding=np.ones(8)), listing("b", embedding=None)])

    lean = backend.get(["a", "b", "missing"], with_embeddings=False)
    assert set(lean) == {"a", "b"} and lean["a"].embedding is None and lean["a"].name == "listing a"
    full = backend.get(["a"])["a"].embedding
    assert full is not None and np.allclose(full, np.ones(8) / np.sqrt(8))


def test_get_leaves_the_documentation_out_when_ranking_reads_projections() -> None:
    """Up to 10,000 characters of documentation for each of ~200 projections per search would be
    megabytes of JSON that ranking never reads; a full ``get`` still returns it."""
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    backend.load([listing("a", documentation="How to call it", embedding=np.ones(8))])
    assert backend.get(["a"], with_embeddings=False)["a"].documentation == ""
    assert backend.get(["a"])["a"].documentation == "How to call it"


def test_the_analyzer_splits_stems_and_drops_words_as_the_embedded_one_does() -> None:
    """Both backends must turn a listing's text into the same terms, or a word that finds a listing in one
    does not in the other. The embedded analyzer (tantivy) splits on every character that is not a letter
    or digit ("bert_base", "don't", "v3.5" -> separate words; Lucene's standard tokenizer keeps them
    whole), drops tokens of 40 bytes or more, drops Lucene's English stop words and stems with Snowball
    English, i.e. Porter2 ("generalization" -> "general"; the ``english`` stemmer OpenSearch names is the
    original Porter, giving "gener")."""
    from search.keyword import english_analyzer

    embedded = english_analyzer()
    assert embedded.analyze("bert_base don't v3.5") == ["bert", "base", "don", "t", "v3", "5"]
    assert embedded.analyze("x" * 39 + " " + "y" * 40) == ["x" * 39]
    assert embedded.analyze("generalization the classifying") == ["general", "classifi"]

    analysis = q.index_settings()["analysis"]
    assert analysis["tokenizer"] == {"mlrepo_words": {"type": "pattern", "pattern": r"[^\p{L}\p{N}]+"}}
    assert analysis["filter"] == {
        "mlrepo_short_words": {"type": "length", "max": 39},
        "mlrepo_english_stop": {"type": "stop", "stopwords": "_english_"},
        "mlrepo_english_stemmer": {"type": "stemmer", "language": "porter2"},
    }
    assert analysis["analyzer"]["mlrepo_english"] == {
        "type": "custom",
        "tokenizer": "mlrepo_words",
        "filter": [
            "mlrepo_short_words",
            "lowercase",
            "asciifolding",
            "mlrepo_english_stop",
            "mlrepo_english_stemmer",
        ],
    }


def test_words_that_stem_alike_count_once_with_the_embedded_backends_weight(tmp_path) -> None:
    """The embedded backend searches each analyzed *term* once ("image images" is the term "imag" once),
    boosted by the largest weight of the request words that stem to it, or 1.0 when none is weighted.
    OpenSearch sums the clauses of repeated terms (Lucene merges duplicate SHOULD clauses by adding their
    boosts), so sending every word scored "imag" twice and ranked listings differently: the query sends
    one word per term, with the embedded backend's boost for it."""
    from search.keyword import KeywordIndex

    text = "Classify images: an image classifier, the classifying of images"
    weights = {"images": 0.25, "classifier": 0.5, "classify": 0.75, "the": 0.0}
    fields = q.SEARCH_FIELDS
    assert q.keyword_query(text, SearchFilters(), 5)["query"]["bool"]["must"] == [
        {"multi_match": {"query": "classify images", "fields": fields, "type": "most_fields"}}
    ]
    weighted = q.keyword_query(text, SearchFilters(), 5, weights)["query"]["bool"]["must"]
    assert weighted == [
        {
            "bool": {
                "should": [
                    {"multi_match": {"query": w, "fields": fields, "type": "most_fields", "boost": b}}
                    for w, b in (("classify", 0.75), ("images", 0.25))
                ],
                "minimum_should_match": 1,
            }
        }
    ]
    # The boosts are the embedded backend's own.
    embedded = KeywordIndex(tmp_path / "keyword")
    try:
        assert embedded.term_boosts(weights) == {"classifi": 0.75, "imag": 0.25}
    finally:
        embedded.close()
    # Nothing searchable (stop words and punctuation only): no request, like the embedded backend.
    assert q.keyword_query("the of, and!", SearchFilters(), 5) is None
    backend = OpenSearchBackend(InMemoryCluster(), "listings", 8)  # type: ignore[arg-type]
    assert backend.keyword("the of, and!", SearchFilters(), 5) == []


def _served_ids(cluster: InMemoryCluster) -> set[str]:
    return set(cluster.served("listings"))


def test_a_reindex_that_dies_half_way_leaves_the_old_index_serving_and_no_half_built_one() -> None:
    """A bulk load that fails part-way (the server went away) must not touch what searches see: the alias
    keeps serving the old index, the half-built one is deleted, and the error says what failed. When the
    server is gone for the delete too, that second failure must not replace the first: the half-built
    index has a heartbeat, so a later ``ensure`` deletes it once the heartbeat is stale."""
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    backend.load([listing("old", embedding=None)])
    (served,) = cluster.aliases

    cluster.fail_next("bulk")
    with pytest.raises(Unavailable, match="bulk write failed"):
        backend.reindex([listing("new", embedding=None)])
    assert cluster.aliases == {served: "listings"} and set(cluster.docs) == {served}
    assert _served_ids(cluster) == {"old"}

    cluster.fail_next("bulk")
    cluster.fail_next("delete")
    with pytest.raises(Unavailable, match="bulk write failed"):
        backend.reindex([listing("new", embedding=None)])
    (left,) = set(cluster.docs) - {served}
    assert cluster.aliases == {served: "listings"} and _served_ids(cluster) == {"old"}
    cluster.meta[left]["rebuild_heartbeat"] -= ABANDONED_AFTER_S + 1
    backend.ensure()
    assert set(cluster.docs) == {served}


def test_a_reindex_whose_alias_swap_succeeded_succeeds_though_the_old_index_lingers() -> None:
    """Once the alias serves the new index the reindex is done: failing to delete the old index must not
    report the rebuild as failed (``mlrepo reindex`` would exit non-zero over a complete index). The old
    index, no longer aliased and with a stale heartbeat, goes at the next ``ensure``. When the swap itself
    fails the new index is kept, not deleted: the request may have been applied before the connection
    dropped, and then deleting it would leave the alias serving nothing."""
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    backend.load([listing("old", embedding=None)])
    (old,) = cluster.aliases

    cluster.fail_next("delete")
    backend.reindex([listing("new", embedding=None)])
    (new,) = cluster.aliases
    assert new != old and _served_ids(cluster) == {"new"} and old in cluster.docs
    cluster.meta[old]["rebuild_heartbeat"] -= ABANDONED_AFTER_S + 1
    backend.ensure()
    assert set(cluster.docs) == {new}

    cluster.fail_next("swap")
    with pytest.raises(Unavailable, match="alias swap"):
        backend.reindex([listing("newer", embedding=None)])
    assert cluster.aliases == {new: "listings"} and _served_ids(cluster) == {"new"}
    assert len(cluster.docs) == 2  # the complete new index waits for the heartbeat cleanup


def test_startup_rebuilds_an_index_whose_settings_or_mapping_differ_though_its_version_matches() -> None:
    """The embedded backend rebuilds an index another schema or tantivy wrote; the OpenSearch one trusted
    any index named with the current ``MAPPING_VERSION``, so a changed analyzer, field or vector size
    without a bump (or an index of the same version from another encoder's dimension) kept serving the
    old mapping. Each index records a digest of its settings and mappings, and ``load`` compares it."""
    assert q.mapping_digest(8) != q.mapping_digest(384)
    assert q.index_mappings(8)["_meta"]["mapping_digest"] == q.mapping_digest(8)
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    docs = [listing("a", embedding=None)]
    assert backend.load(docs) is True
    (first,) = cluster.aliases
    assert cluster.meta[first]["mapping_digest"] == q.mapping_digest(8)
    assert backend.load(docs) is False

    cluster.meta[first]["mapping_digest"] = "written-by-an-older-build"
    assert backend.load(docs) is True
    (second,) = cluster.aliases
    assert second != first and cluster.meta[second]["mapping_digest"] == q.mapping_digest(8)
    assert backend.load(docs) is False


def test_a_long_request_stays_within_the_clause_limit_opensearch_enforces() -> None:
    """Lucene refuses a query of more than 1,024 term clauses in all (``indices.query.bool.max_clause_
    count``), and every analyzed term is one clause per searched field; the embedded backend has no such
    limit. A 1,000-character request of distinct short words (a pasted keyword list) made ~1,500 and
    failed as ``Unavailable``; the query keeps the terms that weigh most, the first among equals."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [f"{first}{second}x" for first in letters for second in letters][:250]
    text = " ".join(words)
    assert len(text) < 1_000
    unweighted = q.keyword_query(text, SearchFilters(), 5)["query"]["bool"]["must"][0]["multi_match"]
    kept = unweighted["query"].split()
    assert kept == words[: q.MAX_QUERY_TERMS]
    assert q.MAX_QUERY_TERMS * len(q.SEARCH_FIELDS) + 64 <= q.MAX_CLAUSES == 1_024
    weights = {word: (0.5 if i % 2 else 0.25) for i, word in enumerate(words)}
    weighted = q.keyword_query(text, SearchFilters(), 5, weights)["query"]["bool"]["must"][0]["bool"][
        "should"
    ]
    assert [c["multi_match"]["query"] for c in weighted] == (words[1::2] + words[0::2])[: q.MAX_QUERY_TERMS]


def test_bulk_writes_retry_throttling_and_name_the_listings_the_server_refused() -> None:
    """A bulk request can partly fail: a throttled item (429) is retried with backoff and succeeds, a
    refused one (400) is named in the ``Unavailable`` the write raises (the catalog then rolls back its
    row, and ``load`` at the next start sees the index differ from the database); the other documents
    are written, since OpenSearch bulk writes are not atomic. Deleting what is not indexed is fine."""
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    backend.load([])
    cluster.refuse("busy", 429)
    cluster.refuse("bad", 400)
    with pytest.raises(Unavailable, match=r"did not index 1 listings: bad$"):
        backend.upsert([listing("busy", embedding=None), listing("good", embedding=None), listing("bad")])
    assert set(cluster.served("listings")) == {"busy", "good"}
    backend.delete(["never-indexed", "good", "good"])
    assert set(cluster.served("listings")) == {"busy"}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        *FACET_CASES,
        *(
            (SearchFilters(viewer_id=viewer, viewer_is_admin=admin), seen)
            for viewer, admin, seen in VISIBILITY_CASES
        ),
        (SearchFilters(viewer_is_admin=True, include_suspended=True), {doc.id for doc in CATALOG}),
        (
            SearchFilters(viewer_id="carol", include_suspended=True, kinds=("notebook", "pipeline")),
            {"alice-shared"},
        ),
    ],
)
def test_filters_select_the_listings_the_embedded_backend_selects(
    filters: SearchFilters, expected: set
) -> None:
    """The facet and visibility cases both backends share (``search_support``), applied to the documents
    OpenSearch indexes: public, the owner's own, shared-with-the-viewer (a *private* listing naming the
    viewer stays hidden), admins see all, suspended hidden unless asked for; hardware fits when no
    requirement is stated, while a latency or accuracy bound needs a stated value."""
    sources = [q.to_document(doc) for doc in CATALOG]
    clauses = q.filter_clauses(filters)
    assert {s["id"] for s in sources if all(filter_matches(c, s) for c in clauses)} == expected


def test_only_writes_to_the_served_index_wait_for_a_refresh() -> None:
    """An ordinary write waits until searches see it (``refresh=wait_for``), like the embedded backend's
    commit. A rebuild's index serves nobody until its swap, and ``reindex`` refreshes it once before; a
    ``wait_for`` on each of its bulk chunks waited up to the refresh interval (1 s) per 500 listings."""
    cluster = InMemoryCluster()
    backend = OpenSearchBackend(cluster, "listings", 8)  # type: ignore[arg-type]
    backend.reindex([listing(str(i), embedding=None) for i in range(1_200)])
    assert len(cluster.bulk_params) == 3
    assert all(params.get("refresh") in (None, "false") for params in cluster.bulk_params)
    cluster.bulk_params.clear()
    backend.upsert([listing("a", embedding=None)])
    backend.delete(["a"])
    assert [params.get("refresh") for params in cluster.bulk_params] == ["wait_for", "wait_for"]
