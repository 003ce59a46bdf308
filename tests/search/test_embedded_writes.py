"""Writes, reloads and the single-writer lock of the embedded backend, on real tantivy directories."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tantivy
from search_support import DIM, axis, listing

from infra.errors import BadInput, Conflict, Unavailable
from search.documents import DOCUMENTATION_INDEX_CHARS
from search.embedded import EmbeddedBackend
from search.filters import readers_of
from search.keyword import (
    ANALYZER,
    MARKER_FILE,
    build_schema,
    combine,
    doc_key,
    english_analyzer,
    fingerprint,
)
from search.types import SearchFilters

ANY = SearchFilters(viewer_is_admin=True)


def ids(hits: list) -> list[str]:
    return [h.id for h in hits]


def test_upsert_replaces_and_is_searchable_at_once(backend: EmbeddedBackend) -> None:
    backend.upsert([listing("a", name="speech recognizer", embedding=axis(1))])
    assert ids(backend.keyword("speech", ANY, 5)) == ["a"]
    backend.upsert([listing("a", name="image segmenter", category="Vision", embedding=axis(2))])
    assert backend.keyword("speech", ANY, 5) == []
    assert ids(backend.keyword("segmenting images", ANY, 5)) == ["a"]
    assert ids(backend.vector(axis(2), ANY, 1)) == ["a"]
    assert backend.count(SearchFilters(category="Vision")) == 1
    assert len(backend) == 1


def test_delete_removes_everywhere_and_is_idempotent(backend: EmbeddedBackend) -> None:
    backend.upsert([listing("a", embedding=axis(1)), listing("b", embedding=axis(2))])
    backend.delete(["a", "never-indexed"])
    backend.delete(["a"])
    assert ids(backend.keyword("listing", ANY, 5)) == ["b"]
    assert ids(backend.vector(axis(1), ANY, 5)) == ["b"]
    assert set(backend.get(["a", "b"])) == {"b"}
    backend.upsert([listing("c", embedding=axis(3))])  # reuses a's freed slot
    assert set(ids(backend.filtered(ANY, "newest", 10))) == {"b", "c"}
    assert ids(backend.vector(axis(3), ANY, 1)) == ["c"]


def test_get_returns_projection_with_normalized_embedding(backend: EmbeddedBackend) -> None:
    backend.upsert([listing("a", tags=("x",), embedding=np.full(DIM, 3.0)), listing("b", embedding=None)])
    got = backend.get(["a", "b", "zzz"])
    assert set(got) == {"a", "b"}
    assert got["a"].tags == ("x",)
    np.testing.assert_allclose(got["a"].embedding, np.full(DIM, 1 / np.sqrt(DIM)), rtol=1e-6)
    assert got["b"].embedding is None
    assert ids(backend.vector(axis(0), ANY, 5)) == ["a"]  # no vector: keyword-only listing


def test_invalid_batch_writes_nothing(backend: EmbeddedBackend) -> None:
    backend.upsert([listing("keep")])
    bad_batches = [
        [listing("new"), listing("bad-dim", embedding=np.ones(DIM + 1))],
        [listing("new"), listing("nan", embedding=np.full(DIM, np.nan))],
        [listing("dup"), listing("dup")],
        [listing("")],
    ]
    for batch in bad_batches:
        with pytest.raises(BadInput):
            backend.upsert(batch)
    assert ids(backend.keyword("listing", ANY, 10)) == ["keep"]
    assert set(backend.get(["new", "dup", "keep"])) == {"keep"}


def test_failed_commit_leaves_memory_untouched(backend: EmbeddedBackend) -> None:
    backend.upsert([listing("a")])
    backend.close()  # the writer is gone: the next tantivy commit cannot happen
    with pytest.raises(Unavailable):
        backend.upsert([listing("b")])
    with pytest.raises(Unavailable):
        backend.delete(["a"])
    assert set(backend.get(["a", "b"])) == {"a"}
    assert backend.count(ANY) == 1


def test_load_reuses_a_matching_index_and_rebuilds_a_stale_one(index_dir: Path) -> None:
    docs = [listing(f"d{i}", name=f"model number {i}", embedding=axis(i)) for i in range(20)]
    with EmbeddedBackend(index_dir, DIM) as first:
        assert first.load(docs) is True
        first.upsert([listing("d0", name="renamed thing", embedding=axis(0))])
        first.upsert([listing("d1", name="model number 1", relative_usage=0.9, embedding=axis(1))])
    current = [listing("d0", name="renamed thing", embedding=axis(0)), *docs[1:]]

    with EmbeddedBackend(index_dir, DIM) as second:
        # Usage is not part of the tantivy document: the index still matches the database.
        assert second.load(current) is False
        assert ids(second.keyword("renamed", ANY, 5)) == ["d0"]
        assert second.get(["d1"])["d1"].relative_usage == 0.0  # memory comes from the docs given

    with EmbeddedBackend(index_dir, DIM) as third:
        assert third.load(docs) is True  # the database says d0 was not renamed after all
        assert third.keyword("renamed", ANY, 5) == []
        assert ids(third.keyword("number 0", ANY, 1)) == ["d0"]


def test_missing_or_foreign_marker_forces_rebuild(index_dir: Path) -> None:
    docs = [listing("a"), listing("b")]
    with EmbeddedBackend(index_dir, DIM) as backend:
        backend.load(docs)
    marker = index_dir / "keyword" / MARKER_FILE
    marker.unlink()  # as after a crash between invalidating and committing
    with EmbeddedBackend(index_dir, DIM) as backend:
        assert backend.load(docs) is True
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "schema_version": -1}))
    with EmbeddedBackend(index_dir, DIM) as backend:
        assert backend.load(docs) is True
        assert set(ids(backend.keyword("listing", ANY, 5))) == {"a", "b"}


def test_an_index_written_by_another_tantivy_version_is_rebuilt(index_dir: Path) -> None:
    """An upgrade of tantivy may change the on-disk format or how the analyzer stems and folds words: an
    index the previous version wrote, with a matching count and digest, must not be reused."""
    docs = [listing("a"), listing("b")]
    with EmbeddedBackend(index_dir, DIM) as backend:
        backend.load(docs)
    marker = index_dir / "keyword" / MARKER_FILE
    data = json.loads(marker.read_text())
    assert data["tantivy"] == importlib.metadata.version("tantivy")
    marker.write_text(json.dumps({**data, "tantivy": "0.21.0"}))  # as the previous release left it
    with EmbeddedBackend(index_dir, DIM) as backend:
        assert backend.load(docs) is True
        assert set(ids(backend.keyword("listing", ANY, 5))) == {"a", "b"}
    assert json.loads(marker.read_text()) == data
    del data["tantivy"]  # a marker from before versions were recorded
    marker.write_text(json.dumps(data))
    with EmbeddedBackend(index_dir, DIM) as backend:
        assert backend.load(docs) is True


def test_clear_then_load_is_a_reindex(backend: EmbeddedBackend) -> None:
    backend.load([listing("a"), listing("b")])
    backend.clear()
    assert backend.count(ANY) == 0 and backend.keyword("listing", ANY, 5) == []
    backend.load([listing("c")])
    assert ids(backend.keyword("listing", ANY, 5)) == ["c"]


def test_second_writer_in_this_process_is_a_conflict(backend: EmbeddedBackend, index_dir: Path) -> None:
    with pytest.raises(Conflict, match="in use by another process"):
        EmbeddedBackend(index_dir, DIM)
    backend.close()
    EmbeddedBackend(index_dir, DIM).close()  # closing released the lock


def test_writer_in_another_process_is_a_conflict(index_dir: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from search.embedded import EmbeddedBackend; "
            f"b = EmbeddedBackend({str(index_dir)!r}, {DIM}); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(Conflict) as caught:
            EmbeddedBackend(index_dir, DIM)
        assert caught.value.code == "CONFLICT"
    finally:
        holder.communicate("", timeout=30)
    EmbeddedBackend(index_dir, DIM).close()  # the lock died with its process


def test_word_weights_scale_each_words_terms(backend: EmbeddedBackend) -> None:
    """A request word weighted down stops deciding the order; weights of 1 change nothing."""
    backend.upsert([
        listing("audio", name="audio tagger", description="tags audio clips of our users", embedding=axis(1)),
        listing("speech", name="speech model", description="transcribes speech", embedding=axis(2)),
    ])  # fmt: skip
    text = "transcribe speech for our audio users"
    plain = backend.keyword(text, ANY, 5)
    assert ids(plain) == ["audio", "speech"]  # more of the request's words, each counted fully
    assert backend.keyword(text, ANY, 5, {word: 1.0 for word in text.split()}) == plain
    weighted = backend.keyword(text, ANY, 5, {"our": 0.0, "audio": 0.1, "users": 0.1, "speech": 1.0})
    assert ids(weighted) == ["speech", "audio"]
    stemmed = backend.keyword(text, ANY, 5, {"transcribe": 3.0})  # stems to the same term as "transcribes"
    assert stemmed[0].id == "speech" and stemmed[0].score > plain[1].score


def test_a_word_only_in_the_documentation_finds_the_listing(backend: EmbeddedBackend) -> None:
    """Producers explain inputs and uses in their README; a requester using those words must find it."""
    backend.upsert([
        listing("ocr", name="doc reader", description="Reads text.", documentation="Scans invoices."),
        listing("other", name="doc writer", description="Writes text."),
    ])  # fmt: skip
    assert ids(backend.keyword("invoices", ANY, 5)) == ["ocr"]
    # An edit of the documentation alone reindexes the listing: the old words stop matching.
    backend.upsert([listing("ocr", name="doc reader", description="Reads text.", documentation="Receipts.")])
    assert backend.keyword("invoices", ANY, 5) == []
    assert ids(backend.keyword("receipts", ANY, 5)) == ["ocr"]


def test_documentation_beyond_the_cap_is_not_indexed(backend: EmbeddedBackend) -> None:
    words = "filler " * (DOCUMENTATION_INDEX_CHARS // len("filler "))
    backend.upsert([listing("long", documentation=f"early {words} zanzibar")])
    assert ids(backend.keyword("early", ANY, 5)) == ["long"]
    assert backend.keyword("zanzibar", ANY, 5) == []


def test_a_documentation_edit_made_while_stopped_is_picked_up_at_load(index_dir: Path) -> None:
    with EmbeddedBackend(index_dir, DIM) as backend:
        backend.load([listing("a", documentation="invoices")])
    with EmbeddedBackend(index_dir, DIM) as backend:
        assert backend.load([listing("a", documentation="receipts")]) is True
        assert ids(backend.keyword("receipts", ANY, 5)) == ["a"]
        assert backend.keyword("invoices", ANY, 5) == []


def _write_schema_v1_index(directory: Path, docs: list) -> None:
    """An index as the release before documentation was indexed left it: its schema (frozen here as it
    was) lacks the field, and its marker's count and digest even match the docs loaded next."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("key", indexed=True, fast=True)
    for name in ("name", "tags", "subcategory_text", "category_text", "description"):
        builder.add_text_field(name, tokenizer_name=ANALYZER)
    for name in ("kind", "category", "subcategory", "input_format", "output_format", "verification"):
        builder.add_text_field(name, tokenizer_name="raw", index_option="basic")
    for name in ("readers", "hidden"):
        builder.add_text_field(name, tokenizer_name="raw", index_option="basic")
    for name in ("latency", "accuracy", "cpu", "memory_mb", "gpu"):
        builder.add_float_field(name, indexed=True, fast=True)
    directory.mkdir(parents=True)
    index = tantivy.Index(builder.build(), path=str(directory))
    index.register_tokenizer(ANALYZER, english_analyzer())
    writer = index.writer(15_000_000, 1)
    for doc in docs:
        writer.add_document(tantivy.Document(id=doc.id, key=doc_key(doc.id), name=doc.name, hidden="no"))
    writer.commit()
    writer.wait_merging_threads()
    marker = {
        "schema_version": 1,
        "tantivy": importlib.metadata.version("tantivy"),
        "count": len(docs),
        "digest": f"{combine(fingerprint(d) for d in docs):016x}",
    }
    (directory / MARKER_FILE).write_text(json.dumps(marker))


def test_an_index_from_before_documentation_was_indexed_is_rebuilt_at_load(index_dir: Path) -> None:
    docs = [listing("a", documentation="scanned invoices"), listing("b")]
    _write_schema_v1_index(index_dir / "keyword", docs)
    with EmbeddedBackend(index_dir, DIM) as backend:
        assert backend.load(docs) is True
        assert ids(backend.keyword("invoices", ANY, 5)) == ["a"]
        assert set(ids(backend.keyword("listing", ANY, 5))) == {"a", "b"}
    with EmbeddedBackend(index_dir, DIM) as backend:  # and the upgraded index is trusted from then on
        assert backend.load(docs) is False
        assert ids(backend.keyword("invoices", ANY, 5)) == ["a"]


def test_an_index_from_before_restricted_listings_were_marked_is_rebuilt_at_load(index_dir: Path) -> None:
    """Visibility excludes listings marked ``restricted`` that do not name the viewer; an index written
    before that mark existed (schema 2) lacks it, so trusting it would show private listings to anyone."""
    docs = [listing("public"), listing("private", visibility="private", owner_id="alice")]
    directory = index_dir / "keyword"
    directory.mkdir(parents=True)
    index = tantivy.Index(build_schema(), path=str(directory))
    index.register_tokenizer(ANALYZER, english_analyzer())
    writer = index.writer(15_000_000, 1)
    for doc in docs:  # as schema 2 wrote them: readers, but no restricted mark
        fields = {"id": doc.id, "key": doc_key(doc.id), "name": doc.name, "hidden": "no"}
        writer.add_document(tantivy.Document(**fields, readers=list(readers_of(doc))))
    writer.commit()
    writer.wait_merging_threads()
    marker = {
        "schema_version": 2,
        "tantivy": importlib.metadata.version("tantivy"),
        "count": len(docs),
        "digest": f"{combine(fingerprint(d) for d in docs):016x}",
    }
    (directory / MARKER_FILE).write_text(json.dumps(marker))
    stranger, owner = SearchFilters(viewer_id="bob"), SearchFilters(viewer_id="alice")
    with EmbeddedBackend(index_dir, DIM) as backend:
        assert backend.load(docs) is True
        assert ids(backend.keyword("listing", stranger, 5)) == ["public"]
        assert set(ids(backend.keyword("listing", owner, 5))) == {"public", "private"}
        assert set(ids(backend.keyword("listing", SearchFilters(), 5))) == {"public"}
