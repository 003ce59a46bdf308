"""OpenSearch request bodies as constants and pure functions (in the style of PyPI Warehouse's
``search/queries.py``): every request the OpenSearch backend sends is built here, so its exact shape is
unit-tested without a server, and the backend class only sends bodies and reads responses.

The facet rules are those of ``search.filters``; each becomes a ``filter`` clause (no scoring, cached by
OpenSearch) of the keyword query, of the k-NN query's efficient pre-filter, and of sorted listings.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from search.documents import TEXT_FIELD_BOOSTS, WORD_PATTERN, indexed_documentation
from search.filters import is_hidden, readers_of, viewer_readers, wanted_kinds
from search.types import Hit, IndexedListing, SearchFilters

# Bump when the mapping or ``to_document`` changes: ``load`` then rebuilds into a fresh physical index.
# 2: documents carry a ``fingerprint``. 3: and the listing's (capped) ``documentation``.
# 4: the analyzer splits, drops and stems words as the embedded backend's does (``index_settings``).
MAPPING_VERSION = 4
# A document's fingerprint is below 2**FINGERPRINT_BITS, so OpenSearch's ``sum`` aggregation (a double)
# adds 2**(53 - FINGERPRINT_BITS) = 33 million of them exactly: startup compares that sum with the
# database's instead of trusting a count. One stale document escapes it with odds 2**-28.
FINGERPRINT_BITS = 28
ANALYZER = "mlrepo_english"
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128
# OpenSearch answers at most this many hits per request (``index.max_result_window``, and the largest k
# of a k-NN query); deeper requests fail there, while the embedded backend answers any depth. Requests are
# cut to it, so results end at the window instead of erroring (the search service's cursors stop near it).
MAX_RESULT_WINDOW = 10_000

# Text fields searched by keyword queries, with the boosts every backend shares.
_TEXT_FIELD_PATHS = {
    "name": "name",
    "tags": "tags",
    "subcategories": "subcategories.text",
    "category": "category.text",
    "description": "description",
    "documentation": "documentation",
}
SEARCH_FIELDS = [f"{_TEXT_FIELD_PATHS[attr]}^{boost:g}" for attr, boost in TEXT_FIELD_BOOSTS.items()]
# Lucene refuses a query of more than this many term clauses in all (``indices.query.bool.
# max_clause_count``, 1,024 by default); each analyzed term is one clause per searched field, and the
# filters take a few. The embedded backend has no limit: a request with more terms keeps the ones that
# weigh most (a 1,000-character request of distinct short words has ~250).
MAX_CLAUSES = 1_024
MAX_QUERY_TERMS = (MAX_CLAUSES - 64) // len(SEARCH_FIELDS)

# Non-relevance orders; missing values last, then newest, then id so that pages never overlap.
_TIE_BREAK = [{"created_at": {"order": "desc"}}, {"id": {"order": "asc"}}]
SORTS: dict[str, list[dict[str, Any]]] = {
    "usage": [{"relative_usage": {"order": "desc", "missing": "_last"}}, *_TIE_BREAK],
    "accuracy": [{"accuracy": {"order": "desc", "missing": "_last"}}, *_TIE_BREAK],
    "latency": [{"latency_p50_ms": {"order": "asc", "missing": "_last"}}, *_TIE_BREAK],
    "newest": _TIE_BREAK,
}
SORTS["relevance"] = SORTS["usage"]  # no query to be relevant to: usage is the best proxy

_KEYWORD = {"type": "keyword"}
_ENGLISH_TEXT = {"type": "text", "analyzer": ANALYZER}
# Keyword facets with an analyzed ``.text`` sub-field, so one value is both filterable and searchable.
_FACET_AND_TEXT = {"type": "keyword", "fields": {"text": _ENGLISH_TEXT}}


def index_settings() -> dict[str, Any]:
    """Settings of every physical index: k-NN on, and the embedded backend's analyzer
    (``search.keyword.english_analyzer``) step for step, so that a word finds the same listings in both:

    - words are runs of letters and digits, like tantivy's simple tokenizer (and ``WORD_PATTERN``):
      Lucene's ``standard`` tokenizer would keep "bert_base", "don't" and "v3.5" whole;
    - tokens of 40 or more characters are dropped (tantivy's ``remove_long(40)``; it counts UTF-8 bytes,
      Lucene characters, so they differ only for long non-ASCII words);
    - lower-cased, ASCII-folded, Lucene's English stop words (tantivy's English list is the same 33);
    - Snowball English stemming, which OpenSearch calls ``porter2``: its ``english`` stemmer is the
      original Porter algorithm ("generalization" -> "gener", where tantivy gives "general").
    """
    return {
        "index": {"knn": True, "number_of_shards": 1, "number_of_replicas": 0},
        "analysis": {
            "tokenizer": {"mlrepo_words": {"type": "pattern", "pattern": r"[^\p{L}\p{N}]+"}},
            "filter": {
                "mlrepo_short_words": {"type": "length", "max": 39},
                "mlrepo_english_stop": {"type": "stop", "stopwords": "_english_"},
                "mlrepo_english_stemmer": {"type": "stemmer", "language": "porter2"},
            },
            "analyzer": {
                ANALYZER: {
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
            },
        },
    }


def index_mappings(dim: int) -> dict[str, Any]:
    """Strict mappings: a field nobody declared is an error, not a silently guessed type."""
    return {"dynamic": "strict", "_meta": index_meta(dim), "properties": _properties(dim)}


def mapping_digest(dim: int) -> str:
    """Identifies the settings and mappings an index is created with: ``load`` rebuilds an index whose
    recorded digest differs, like the embedded backend's schema marker, so a mapping changed without a
    ``MAPPING_VERSION`` bump (or another vector size) is not served on."""
    body = json.dumps([index_settings(), "strict", _properties(dim)], sort_keys=True)
    return hashlib.blake2b(body.encode(), digest_size=8).hexdigest()


def _properties(dim: int) -> dict[str, Any]:
    return {
        "id": _KEYWORD,
        "kind": _KEYWORD,
        "name": {**_ENGLISH_TEXT, "fields": {"raw": _KEYWORD}},
        "category": _FACET_AND_TEXT,
        "subcategories": _FACET_AND_TEXT,
        "tags": {**_ENGLISH_TEXT, "fields": {"raw": _KEYWORD}},
        "description": _ENGLISH_TEXT,
        "documentation": _ENGLISH_TEXT,
        "framework": _KEYWORD,
        "input_format": _KEYWORD,
        "output_format": _KEYWORD,
        "visibility": _KEYWORD,
        "owner_id": _KEYWORD,
        "shared_with": _KEYWORD,
        "readers": _KEYWORD,
        "status": _KEYWORD,
        "verification_status": _KEYWORD,
        "hidden": {"type": "boolean"},
        "accuracy": {"type": "double"},
        "latency_p50_ms": {"type": "double"},
        "cpu": {"type": "double"},
        "memory_mb": {"type": "long"},
        "gpu": {"type": "long"},
        "relative_usage": {"type": "double"},
        "created_at": {"type": "double"},
        "fingerprint": {"type": "long"},
        "embedding": {
            "type": "knn_vector",
            "dimension": dim,
            "method": {
                "name": "hnsw",
                "engine": "lucene",
                "space_type": "cosinesimil",
                "parameters": {"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
            },
        },
    }


def index_template(alias: str, dim: int) -> dict[str, Any]:
    """Applies to every physical index behind ``alias`` (``{alias}-v{n}-{stamp}``)."""
    return {
        "index_patterns": [f"{alias}-*"],
        "template": {"settings": index_settings(), "mappings": index_mappings(dim)},
        "_meta": {"mapping_version": MAPPING_VERSION},
    }


def physical_index_name(alias: str, stamp: str) -> str:
    return f"{alias}-v{MAPPING_VERSION}-{stamp}"


def index_meta(dim: int, heartbeat: float | None = None) -> dict[str, Any]:
    """The mapping's ``_meta``: what the index was created with (``mapping_digest``) and, for a
    rebuild's index, the time its builder was last alive."""
    meta: dict[str, Any] = {"mapping_version": MAPPING_VERSION, "mapping_digest": mapping_digest(dim)}
    if heartbeat is not None:
        meta["rebuild_heartbeat"] = heartbeat
    return meta


def abandoned_indices(alias: str, indices: Mapping[str, Any], now: float, after_s: float) -> list[str]:
    """Physical indices of ``alias`` (any mapping version) that no alias points to and whose builder has
    not been alive for ``after_s``: left by a rebuild that crashed, or by a swap that died before deleting
    the old index. ``indices`` is a get-index answer. An unaliased index with a fresh heartbeat is a
    rebuild in progress in another process and is kept; one without a heartbeat predates heartbeats."""
    pattern = re.compile(re.escape(alias) + r"-v\d+-\d+")
    abandoned = []
    for name, index in indices.items():
        if not pattern.fullmatch(name) or index.get("aliases"):
            continue
        heartbeat = (index.get("mappings") or {}).get("_meta", {}).get("rebuild_heartbeat")
        if heartbeat is None or now - float(heartbeat) > after_s:
            abandoned.append(name)
    return sorted(abandoned)


def alias_swap_actions(alias: str, new_index: str, old_indices: Iterable[str]) -> dict[str, Any]:
    """One atomic ``_aliases`` request: readers see the old index until they see the complete new one."""
    actions: list[dict[str, Any]] = [
        {"remove": {"index": old, "alias": alias}} for old in sorted(old_indices)
    ]
    actions.append({"add": {"index": new_index, "alias": alias, "is_write_index": True}})
    return {"actions": actions}


# ---------------------------------------------------------------------- documents


def to_document(doc: IndexedListing) -> dict[str, Any]:
    """The ``_source`` of a listing; ``readers`` and ``hidden`` precompute the visibility rules."""
    source = _fields(doc)
    source["fingerprint"] = _fingerprint_of(source, doc.embedding)
    if doc.embedding is not None:
        source["embedding"] = [float(x) for x in np.asarray(doc.embedding, dtype=np.float32)]
    return source


def fingerprint(doc: IndexedListing) -> int:
    """A hash of the whole document, below 2**FINGERPRINT_BITS (see ``digest_query``)."""
    return _fingerprint_of(_fields(doc), doc.embedding)


def _fingerprint_of(fields: Mapping[str, Any], embedding: np.ndarray | None) -> int:
    digest = hashlib.blake2b(repr(fields).encode(), digest_size=8)
    if embedding is not None:
        digest.update(np.asarray(embedding, dtype=np.float32).tobytes())
    return int.from_bytes(digest.digest(), "big") >> (64 - FINGERPRINT_BITS)


def _fields(doc: IndexedListing) -> dict[str, Any]:
    return {
        "id": doc.id,
        "kind": doc.kind,
        "name": doc.name,
        "category": doc.category,
        "subcategories": list(doc.subcategories),
        "tags": list(doc.tags),
        "description": doc.description,
        "documentation": indexed_documentation(doc.documentation),
        "framework": doc.framework,
        "input_format": doc.input_format,
        "output_format": doc.output_format,
        "visibility": doc.visibility,
        "owner_id": doc.owner_id,
        "shared_with": list(doc.shared_with),
        "readers": list(readers_of(doc)),
        "status": doc.status,
        "verification_status": doc.verification_status,
        "hidden": is_hidden(doc),
        "accuracy": doc.accuracy,
        "latency_p50_ms": doc.latency_p50_ms,
        "cpu": doc.cpu,
        "memory_mb": doc.memory_mb,
        "gpu": doc.gpu,
        "relative_usage": doc.relative_usage,
        "created_at": doc.created_at,
    }


def from_document(source: Mapping[str, Any]) -> IndexedListing:
    """The projection back from ``_source`` (``get`` answers from the index like the embedded backend)."""
    embedding = source.get("embedding")
    return IndexedListing(
        id=source["id"],
        kind=source["kind"],
        name=source["name"],
        category=source["category"],
        description=source.get("description") or "",
        documentation=source.get("documentation") or "",
        subcategories=tuple(source.get("subcategories") or ()),
        tags=tuple(source.get("tags") or ()),
        framework=source.get("framework"),
        input_format=source.get("input_format"),
        output_format=source.get("output_format"),
        visibility=source.get("visibility") or "public",
        owner_id=source.get("owner_id"),
        shared_with=tuple(source.get("shared_with") or ()),
        status=source.get("status") or "active",
        verification_status=source.get("verification_status") or "unverified",
        accuracy=source.get("accuracy"),
        latency_p50_ms=source.get("latency_p50_ms"),
        cpu=source.get("cpu"),
        memory_mb=source.get("memory_mb"),
        gpu=source.get("gpu"),
        relative_usage=source.get("relative_usage") or 0.0,
        created_at=source.get("created_at") or 0.0,
        embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
    )


def index_actions(index: str, docs: Iterable[IndexedListing]) -> Iterator[dict[str, Any]]:
    """Bulk ``index`` actions (idempotent by ``_id``, so a retried chunk cannot duplicate a listing)."""
    for doc in docs:
        yield {"_op_type": "index", "_index": index, "_id": doc.id, "_source": to_document(doc)}


def delete_actions(index: str, ids: Iterable[str]) -> Iterator[dict[str, Any]]:
    for listing_id in ids:
        yield {"_op_type": "delete", "_index": index, "_id": listing_id}


# ---------------------------------------------------------------------- queries


def window(limit: int, offset: int = 0) -> int:
    """How many of ``limit`` hits from ``offset`` OpenSearch can return (0: the page is past the window)."""
    return max(0, min(limit, MAX_RESULT_WINDOW - offset))


def _fits(field: str, limit: float) -> dict[str, Any]:
    """The listing's requirement is at most ``limit``, or it states none."""
    return {
        "bool": {
            "should": [
                {"range": {field: {"lte": limit}}},
                {"bool": {"must_not": {"exists": {"field": field}}}},
            ],
            "minimum_should_match": 1,
        }
    }


def filter_clauses(filters: SearchFilters) -> list[dict[str, Any]]:
    """The facet rules of ``search.filters`` as OpenSearch ``filter`` clauses."""
    clauses: list[dict[str, Any]] = []
    kinds = wanted_kinds(filters)
    if kinds is not None:
        clauses.append({"terms": {"kind": list(kinds)}})
    for field, value in (
        ("category", filters.category),
        ("subcategories", filters.subcategory),
        ("input_format", filters.input_format),
        ("output_format", filters.output_format),
    ):
        if value is not None:
            clauses.append({"term": {field: value}})
    if filters.max_latency_ms is not None:
        clauses.append({"range": {"latency_p50_ms": {"lte": filters.max_latency_ms}}})
    if filters.min_accuracy is not None:
        clauses.append({"range": {"accuracy": {"gte": filters.min_accuracy}}})
    for field, limit in (("cpu", filters.cpu), ("memory_mb", filters.memory_mb), ("gpu", filters.gpu)):
        if limit is not None:
            clauses.append(_fits(field, limit))
    if filters.verified_only:
        clauses.append({"term": {"verification_status": "verified"}})
    if not filters.include_suspended:
        clauses.append({"term": {"hidden": False}})
    readers = viewer_readers(filters)
    if readers is not None:
        clauses.append({"terms": {"readers": list(readers)}})
    return clauses


def keyword_query(
    text: str, filters: SearchFilters, limit: int, word_weights: Mapping[str, float] | None = None
) -> dict[str, Any] | None:
    """BM25 over the boosted text fields (summed across fields, like the embedded backend), filtered;
    ``None`` when the text has no searchable word (only stop words or punctuation): nothing to ask.

    Each analyzed term is searched once, boosted as the embedded backend boosts it (``query_terms``)."""
    match = text_match(text, word_weights)
    if match is None:
        return None
    return {
        "size": window(limit),
        "_source": False,
        "track_total_hits": False,
        "query": {"bool": {"must": [match], "filter": filter_clauses(filters)}},
    }


@functools.cache
def _analyzer() -> Any:
    """The embedded backend's analyzer (the index's ``index_settings`` mirror it)."""
    from search.keyword import english_analyzer

    return english_analyzer()


def query_terms(text: str, word_weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """One request word for each analyzed term of ``text`` -> the term's boost, as the embedded backend
    searches them (``search.keyword.KeywordIndex.text_query``): every term once, however many words stem
    to it ("image images" is "imag" once), boosted by the largest weight of the words that stem to it,
    1.0 when none is weighted. OpenSearch analyzes the word sent back into that same term; sending every
    word instead counted a repeated term once per word (Lucene adds duplicate clauses' boosts). At most
    ``MAX_QUERY_TERMS``, the heaviest first."""
    from search.keyword import term_boosts

    analyzer = _analyzer()
    boosts = term_boosts(analyzer, word_weights or {})
    chosen: dict[str, float] = {}
    seen: set[str] = set()
    for word in dict.fromkeys(match.lower() for match in WORD_PATTERN.findall(text)):
        fresh = [term for term in analyzer.analyze(word) if term not in seen]
        if fresh:
            seen.update(fresh)
            chosen[word] = max(boosts.get(term, 1.0) for term in fresh)
    if len(chosen) > MAX_QUERY_TERMS:  # the heaviest, the first among equals (sorted is stable)
        heaviest = sorted(chosen, key=lambda word: -chosen[word])[:MAX_QUERY_TERMS]
        chosen = {word: chosen[word] for word in heaviest}
    return chosen


def text_match(text: str, word_weights: Mapping[str, float] | None = None) -> dict[str, Any] | None:
    """The text part of ``keyword_query``: one ``multi_match`` of the words when none is weighted,
    else one per word with its boost; ``None`` when no word is searchable."""
    terms = query_terms(text, word_weights)
    if not terms:
        return None
    if all(boost == 1.0 for boost in terms.values()):
        return {"multi_match": {"query": " ".join(terms), "fields": SEARCH_FIELDS, "type": "most_fields"}}
    should = [
        {"multi_match": {"query": word, "fields": SEARCH_FIELDS, "type": "most_fields", "boost": boost}}
        for word, boost in terms.items()
    ]
    return {"bool": {"should": should, "minimum_should_match": 1}}


def knn_query(vector: np.ndarray, filters: SearchFilters, limit: int) -> dict[str, Any]:
    """k-NN with the filters applied *inside* the HNSW search (Lucene efficient filtering), so the top
    ``limit`` are taken among matching listings only."""
    knn: dict[str, Any] = {"vector": [float(x) for x in vector], "k": window(limit)}
    clauses = filter_clauses(filters)
    if clauses:
        knn["filter"] = {"bool": {"filter": clauses}}
    return {"size": window(limit), "_source": False, "query": {"knn": {"embedding": knn}}}


def sorted_query(filters: SearchFilters, sort: str, limit: int, offset: int) -> dict[str, Any]:
    return {
        "size": window(limit, offset),
        "from": offset,
        "_source": False,
        "track_total_hits": False,
        "query": {"bool": {"filter": filter_clauses(filters)}},
        "sort": SORTS[sort],
    }


def count_query(filters: SearchFilters) -> dict[str, Any]:
    return {"query": {"bool": {"filter": filter_clauses(filters)}}}


# ---------------------------------------------------------------------- responses


def mapping_digest_from_response(response: Mapping[str, Any], index: str) -> str | None:
    """The ``mapping_digest`` a get-mapping answer records for ``index`` (None: an older build's)."""
    return (response.get(index, {}).get("mappings") or {}).get("_meta", {}).get("mapping_digest")


def digest_query() -> dict[str, Any]:
    """How many documents the index holds and the sum of their fingerprints, without reading them."""
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"match_all": {}},
        "aggs": {"fingerprints": {"sum": {"field": "fingerprint"}}},
    }


def digest_from_response(response: Mapping[str, Any]) -> tuple[int, int]:
    """``(count, fingerprint sum)`` from the answer to ``digest_query``."""
    return int(response["hits"]["total"]["value"]), round(response["aggregations"]["fingerprints"]["value"])


def cosine_from_score(score: float) -> float:
    """Lucene's ``cosinesimil`` score is (1 + cos) / 2; report the cosine like the embedded backend."""
    return 2.0 * score - 1.0


def hits_from_response(response: Mapping[str, Any], offset: int = 0) -> list[Hit]:
    """Relevance hits: ``_score`` in response order."""
    return [
        Hit(hit["_id"], float(hit["_score"] or 0.0), offset + rank)
        for rank, hit in enumerate(response["hits"]["hits"], start=1)
    ]


def sorted_hits_from_response(response: Mapping[str, Any], offset: int) -> list[Hit]:
    """Sorted hits score by their first sort value (a missing value reads as 0, like the embedded one)."""
    hits = []
    for rank, hit in enumerate(response["hits"]["hits"], start=offset + 1):
        value = (hit.get("sort") or [None])[0]
        score = float(value) if isinstance(value, int | float) and math.isfinite(value) else 0.0
        if abs(score) >= 1e300:  # the sentinel OpenSearch sorts a missing double by
            score = 0.0
        hits.append(Hit(hit["_id"], score, rank))
    return hits


def docs_from_mget(response: Mapping[str, Any]) -> dict[str, IndexedListing]:
    return {d["_id"]: from_document(d["_source"]) for d in response["docs"] if d.get("found")}


def mget_body(ids: Sequence[str]) -> dict[str, Any]:
    return {"ids": list(dict.fromkeys(ids))}


def mget_params(with_embeddings: bool) -> dict[str, str]:
    """Query parameters of ``mget``: without the vector and the documentation when the caller (ranking)
    does not need them (it reads ~200 projections per search; their vectors would be ~77k floats of
    JSON to send and parse, their documentation up to 2 MB)."""
    return {} if with_embeddings else {"_source_excludes": "embedding,documentation"}
