"""The tantivy side of the embedded backend: BM25 over listing text with exact facet clauses.

Facets are ``Must`` clauses of the same query as the text, so the top-k is taken among matching
listings only (never "top-k, then filter"); they are wrapped with a zero boost so that they do not add
to the BM25 score. Hits are mapped back to listings through ``key``, a fast field holding a stable
63-bit hash of the listing id (reading a fast field is far cheaper than loading stored documents).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import tantivy

from infra.errors import Conflict, Unavailable
from search.documents import TEXT_FIELD_BOOSTS, indexed_documentation
from search.filters import (
    PUBLIC_READER,
    is_hidden,
    readers_of,
    validate_filters,
    viewer_readers,
    wanted_kinds,
)
from search.types import IndexedListing, SearchFilters

# Bump when the schema, the analyzer or ``_document`` changes: a mismatching index is rebuilt.
# 2: listings' documentation is a keyword field.
# 3: listings only some accounts may read carry ``restricted`` (visibility is filtered by excluding them).
SCHEMA_VERSION = 3
# What wrote an index: another tantivy may read its format differently or analyze words differently
# (stemmer, folding), so an index from another version is rebuilt like one from another schema.
WRITTEN_BY = {"schema_version": SCHEMA_VERSION, "tantivy": importlib.metadata.version("tantivy")}
ANALYZER = "mlrepo_en"
# tantivy field of each boosted listing attribute (category/subcategories also have exact-match fields).
TEXT_FIELDS = {
    "name": "name",
    "tags": "tags",
    "subcategories": "subcategory_text",
    "category": "category_text",
    "description": "description",
    "documentation": "documentation",
}
_EXACT_FIELDS = ("kind", "category", "subcategory", "input_format", "output_format", "verification")
_RANGE_FIELDS = ("latency", "accuracy", "cpu", "memory_mb", "gpu")
MARKER_FILE = "mlrepo-index.json"
WRITER_HEAP_BYTES = 32_000_000


def doc_key(listing_id: str) -> int:
    """A stable signed 63-bit key for an id: the same in every process and across restarts."""
    digest = hashlib.blake2b(listing_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def english_analyzer() -> tantivy.TextAnalyzer:
    """Words, lower-cased, English stop words dropped, Snowball-stemmed ("classifying" ~ "classifier")."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def build_schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("key", indexed=True, fast=True)
    for name in TEXT_FIELDS.values():
        builder.add_text_field(name, tokenizer_name=ANALYZER)
    for name in (*_EXACT_FIELDS, "readers", "hidden", "restricted"):
        builder.add_text_field(name, tokenizer_name="raw", index_option="basic")
    for name in _RANGE_FIELDS:
        builder.add_float_field(name, indexed=True, fast=True)
    return builder.build()


def _document(doc: IndexedListing) -> tantivy.Document:
    """The tantivy document of a projection. Missing numbers get values that make range rules hold:
    unknown latency/accuracy never satisfy a bound; no stated resource requirement always fits."""
    fields: dict[str, object] = {
        "id": doc.id,
        "key": doc_key(doc.id),
        "name": doc.name,
        "tags": list(doc.tags),
        "subcategory_text": list(doc.subcategories),
        "category_text": doc.category,
        "description": doc.description,
        "documentation": indexed_documentation(doc.documentation),
        "kind": doc.kind,
        "category": doc.category,
        "subcategory": list(doc.subcategories),
        "verification": doc.verification_status,
        "readers": list(readers_of(doc)),
        "hidden": "yes" if is_hidden(doc) else "no",
        "restricted": [] if PUBLIC_READER in readers_of(doc) else "yes",
        "latency": math.inf if doc.latency_p50_ms is None else float(doc.latency_p50_ms),
        "accuracy": -math.inf if doc.accuracy is None else float(doc.accuracy),
        "cpu": 0.0 if doc.cpu is None else float(doc.cpu),
        "memory_mb": 0.0 if doc.memory_mb is None else float(doc.memory_mb),
        "gpu": 0.0 if doc.gpu is None else float(doc.gpu),
    }
    if doc.input_format is not None:
        fields["input_format"] = doc.input_format
    if doc.output_format is not None:
        fields["output_format"] = doc.output_format
    return tantivy.Document(**{k: v for k, v in fields.items() if v != []})


def term_boosts(analyzer: tantivy.TextAnalyzer, word_weights: Mapping[str, float]) -> dict[str, float]:
    """Word weights as boosts of the terms ``analyzer`` makes of the words: a term several words stem to
    takes the largest of their weights (the OpenSearch backend's queries use it too)."""
    boosts: dict[str, float] = {}
    for word, weight in word_weights.items():
        for term in analyzer.analyze(word):
            boosts[term] = max(boosts.get(term, 0.0), float(weight))
    return boosts


def fingerprint(doc: IndexedListing) -> int:
    """A hash of everything ``_document`` reads: equal fingerprints mean an identical tantivy doc."""
    parts = (
        doc.id, doc.kind, doc.name, doc.category, doc.description, indexed_documentation(doc.documentation),
        doc.subcategories, doc.tags, doc.input_format, doc.output_format, doc.verification_status,
        readers_of(doc), is_hidden(doc),
        doc.latency_p50_ms, doc.accuracy, doc.cpu, doc.memory_mb, doc.gpu,
    )  # fmt: skip
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def combine(fingerprints: Iterable[int]) -> int:
    """An order-independent digest of a set of documents, updatable one document at a time."""
    return sum(fingerprints) % (1 << 64)


def _written_by_us(marker: Mapping[str, object]) -> bool:
    return all(marker.get(key) == value for key, value in WRITTEN_BY.items())


class KeywordIndex:
    """A tantivy index in ``directory`` that this process alone writes to (tantivy's writer lock)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = build_schema()
        self.analyzer = english_analyzer()
        self.index = self._open()
        try:
            self.writer = self.index.writer(WRITER_HEAP_BYTES, 1)
        except ValueError as exc:
            if "LockBusy" in str(exc) or "lock" in str(exc).lower():
                raise Conflict(
                    f"the search index at {self.directory} is in use by another process "
                    "(tantivy allows one writer); stop it, or give this process an index of its own "
                    "(MLREPO_SEARCH_INDEX_DIR)"
                ) from exc
            raise Unavailable(f"cannot open the search index at {self.directory}: {exc}") from exc

    def _open(self) -> tantivy.Index:
        marker = self._read_marker()
        if marker is not None and not _written_by_us(marker):
            self._wipe()
        try:
            index = tantivy.Index(self.schema, path=str(self.directory), reuse=True)
        except ValueError as exc:
            if "schema does not match" not in str(exc):
                raise Unavailable(f"cannot open the search index at {self.directory}: {exc}") from exc
            # An index from an older schema is only a projection of the database: rebuild it.
            self._wipe()
            index = tantivy.Index(self.schema, path=str(self.directory), reuse=True)
        index.register_tokenizer(ANALYZER, self.analyzer)
        return index

    def _wipe(self) -> None:
        shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)

    # ------------------------------------------------------------------ marker
    def _read_marker(self) -> dict | None:
        try:
            return json.loads((self.directory / MARKER_FILE).read_text())
        except (OSError, ValueError):
            return None

    def matches(self, count: int, digest: int) -> bool:
        """Whether the committed index holds exactly the documents with this count and digest."""
        marker = self._read_marker()
        return (
            marker is not None
            and _written_by_us(marker)
            and marker.get("count") == count
            and marker.get("digest") == f"{digest:016x}"
            and self.index.searcher().num_docs == count
        )

    def _invalidate_marker(self) -> None:
        (self.directory / MARKER_FILE).unlink(missing_ok=True)

    def _write_marker(self, count: int, digest: int) -> None:
        marker = {**WRITTEN_BY, "count": count, "digest": f"{digest:016x}"}
        tmp = self.directory / (MARKER_FILE + ".tmp")
        tmp.write_text(json.dumps(marker))
        os.replace(tmp, self.directory / MARKER_FILE)

    # ------------------------------------------------------------------ writes
    def apply(
        self,
        upserts: Sequence[IndexedListing],
        deletes: Sequence[str],
        count: int,
        digest: int,
        replace_all: bool = False,
    ) -> None:
        """Write ``upserts`` and ``deletes`` in one commit, then record the resulting count/digest.

        The marker is removed before the commit and written after it, so a crash in between leaves no
        marker and the next start rebuilds instead of trusting an index that may differ from the
        database. If the commit fails, the writer rolls back and nothing of this batch is visible.
        """
        if self.writer is None:
            raise Unavailable(f"the search index at {self.directory} is closed")
        self._invalidate_marker()
        try:
            if replace_all:
                self.writer.delete_all_documents()
            for listing_id in deletes:
                self.writer.delete_documents_by_term("id", listing_id)
            for doc in upserts:
                if not replace_all:
                    self.writer.delete_documents_by_term("id", doc.id)
                self.writer.add_document(_document(doc))
            self.writer.commit()
        except Exception as exc:
            self.writer.rollback()
            raise Unavailable(f"writing the search index failed: {exc}") from exc
        self.index.reload()
        self._write_marker(count, digest)

    def close(self) -> None:
        """Release the writer lock so another process (or a reopened backend) may write."""
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.wait_merging_threads()
            self.writer = None

    # ------------------------------------------------------------------ reads
    def text_query(self, text: str, word_weights: Mapping[str, float] | None = None) -> tantivy.Query | None:
        """A disjunction of the analyzed query words over the boosted text fields; ``None`` if the text
        has no searchable word (only stop words or punctuation). Built from terms, not parsed, so that
        no user input can be a query-syntax error. ``word_weights`` boosts each word's terms (a term
        several words stem to takes the largest of their weights)."""
        terms = list(dict.fromkeys(self.analyzer.analyze(text)))
        if not terms:
            return None
        boosts = self.term_boosts(word_weights or {})
        per_field = []
        for attribute, field_boost in TEXT_FIELD_BOOSTS.items():
            name = TEXT_FIELDS[attribute]
            clauses = [
                (tantivy.Occur.Should, self._weighted_term(name, term, boosts.get(term, 1.0)))
                for term in terms
            ]
            per_field.append(
                (
                    tantivy.Occur.Should,
                    tantivy.Query.boost_query(tantivy.Query.boolean_query(clauses), field_boost),
                )
            )
        return tantivy.Query.boolean_query(per_field)

    def term_boosts(self, word_weights: Mapping[str, float]) -> dict[str, float]:
        """Word weights as index-term boosts, through the same analyzer the index uses."""
        return term_boosts(self.analyzer, word_weights)

    def _weighted_term(self, field: str, term: str, boost: float) -> tantivy.Query:
        query = tantivy.Query.term_query(self.schema, field, term)
        return query if boost == 1.0 else tantivy.Query.boost_query(query, boost)

    def _invisible_to(self, viewer_id: str | None) -> tantivy.Query:
        """The listings ``viewer_id`` may not read: restricted ones that do not name the viewer.

        Excluded rather than requiring "public or the viewer" among the readers: that intersected every
        search with the public listings' postings, nearly the whole catalog (0.37 of 0.97 ms of tantivy's
        search at 100k), while restricted listings are few (none in the benchmark's catalog)."""
        restricted = tantivy.Query.term_query(self.schema, "restricted", "yes")
        if not viewer_id:
            return restricted
        named = tantivy.Query.term_query(self.schema, "readers", viewer_id)
        return tantivy.Query.boolean_query([(tantivy.Occur.Must, restricted), (tantivy.Occur.MustNot, named)])

    def filter_clauses(self, filters: SearchFilters) -> list[tuple[tantivy.Occur, tantivy.Query]]:
        """The facet rules of ``search.filters`` as (occur, query) clauses: ``Must`` to keep matches,
        ``MustNot`` to drop them."""
        schema = self.schema
        term = tantivy.Query.term_query
        clauses: list[tantivy.Query] = []
        kinds = wanted_kinds(filters)
        if kinds is not None:
            clauses.append(tantivy.Query.term_set_query(schema, "kind", list(kinds)))
        for name, value in (
            ("category", filters.category),
            ("subcategory", filters.subcategory),
            ("input_format", filters.input_format),
            ("output_format", filters.output_format),
        ):
            if value is not None:
                clauses.append(term(schema, name, value))
        if filters.verified_only:
            clauses.append(term(schema, "verification", "verified"))
        upper_bounds = {
            "latency": filters.max_latency_ms,
            "cpu": filters.cpu,
            "memory_mb": filters.memory_mb,
            "gpu": filters.gpu,
        }
        for name, bound in upper_bounds.items():
            if bound is not None:
                clauses.append(self._range(name, None, float(bound)))
        if filters.min_accuracy is not None:
            clauses.append(self._range("accuracy", float(filters.min_accuracy), None))
        occurs = [(tantivy.Occur.Must, clause) for clause in clauses]
        if viewer_readers(filters) is not None:  # None: an admin, who reads everything
            occurs.append((tantivy.Occur.MustNot, self._invisible_to(filters.viewer_id)))
        if not filters.include_suspended:
            # Every document is indexed hidden "yes" or "no": excluding the few "yes" is cheap, while
            # requiring "no" intersected each search with the whole catalog's posting list.
            occurs.append((tantivy.Occur.MustNot, term(schema, "hidden", "yes")))
        return occurs

    def _range(self, name: str, lower: float | None, upper: float | None) -> tantivy.Query:
        return tantivy.Query.range_query(self.schema, name, tantivy.FieldType.Float, lower, upper)

    def search(
        self,
        text: str,
        filters: SearchFilters,
        limit: int,
        word_weights: Mapping[str, float] | None = None,
    ) -> list[tuple[int, float]]:
        """``(key, bm25 score)`` of the best ``limit`` listings matching ``text`` and ``filters``."""
        validate_filters(filters)
        query = self.text_query(text, word_weights)
        if query is None or limit <= 0:
            return []
        clauses = [(tantivy.Occur.Must, query)]
        clauses += [
            (occur, tantivy.Query.boost_query(clause, 0.0)) for occur, clause in self.filter_clauses(filters)
        ]
        searcher = self.index.searcher()
        result = searcher.search(tantivy.Query.boolean_query(clauses), limit, count=False)
        if not result.hits:
            return []
        keys = searcher.fast_field_values("key", [address for _, address in result.hits])
        return [(int(key), float(score)) for (score, address), key in zip(result.hits, keys, strict=True)]

    def num_docs(self) -> int:
        return self.index.searcher().num_docs
