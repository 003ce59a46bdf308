"""The index is a faithful projection of the database: written with it or not at all, and kept in step
across processes (a worker writes rows; the process holding the index syncs them)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from catalog_helpers import listing_data
from sqlalchemy import event, func, select, text, update
from sqlalchemy.orm import Session

from catalog.actors import ANONYMOUS, Actor
from catalog.app import CatalogApp
from catalog.indexing import SYNC_OVERLAP, ListingIndex
from catalog.listing_view import vector_bytes, vector_of
from catalog.listings import ListingService
from catalog.search_service import SearchRequest
from catalog.usage import UsageService
from infra.errors import NotFound, Unavailable
from infra.settings import Settings
from infra.tables import Listing, ListingVersion, utcnow
from search.embeddings import Encoder
from search.keyword import MARKER_FILE, KeywordIndex
from search.opensearch import OpenSearchBackend
from search.types import SearchFilters
from tests.search.opensearch_cluster import InMemoryCluster

EVERYTHING = SearchFilters(viewer_is_admin=True, include_suspended=True)


async def row_count(app: CatalogApp, model: type = Listing) -> int:
    async with app.db.session() as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


async def test_a_failed_index_write_leaves_no_row(app: CatalogApp, alice: Actor) -> None:
    kept = await app.listings.create(alice, listing_data("kept"))
    app.backend.close()  # the index stops accepting writes (as when its directory is lost or locked)
    with pytest.raises(Unavailable):
        await app.listings.create(alice, listing_data("never-written"))
    assert await row_count(app) == 1 and await row_count(app, ListingVersion) == 1
    with pytest.raises(Unavailable):
        await app.listings.update(alice, kept.id, {"description": "A change the index never saw."})
    assert (await app.listings.get(alice, kept.id)).description == kept.description
    with pytest.raises(Unavailable):
        await app.listings.delete(alice, kept.id)
    assert (await app.listings.get(alice, kept.id)).id == kept.id


async def test_invalid_vector_is_refused_before_anything_is_written(app: CatalogApp, alice: Actor) -> None:
    """A row embedded by a different model (wrong dimension) cannot enter the index, so it is not written."""
    from catalog.listing_input import parse_listing

    (prepared,) = await app.listings.prepare(alice.account_id, [parse_listing(listing_data("odd-vector"))])
    prepared.row.embedding = b"\x00" * 16  # 4 floats instead of 384
    prepared.row.embedding_model = app.encoder.model_name
    with pytest.raises(Exception, match="embedding"):
        await app.listings.insert([prepared])
    assert await row_count(app) == 0 and app.backend.count(EVERYTHING) == 0


# PostgreSQL only: it needs a constraint checked at commit time (a deferred trigger), which SQLite lacks.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_failed_commit_undoes_the_index_write(app: CatalogApp, alice: Actor) -> None:
    async with app.db.session() as session:
        await session.execute(
            text(
                "CREATE FUNCTION refuse_doomed() RETURNS trigger AS $$ BEGIN "
                "IF NEW.name = 'doomed' THEN RAISE EXCEPTION 'commit refused'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
        )
        await session.execute(
            text(
                "CREATE CONSTRAINT TRIGGER refuse_doomed AFTER INSERT OR UPDATE ON listings "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_doomed()"
            )
        )
    with pytest.raises(Exception, match="commit refused"):
        await app.listings.create(alice, listing_data("doomed"))
    assert await row_count(app) == 0 and app.backend.count(EVERYTHING) == 0

    fine = await app.listings.create(alice, listing_data("fine"))
    with pytest.raises(Exception, match="commit refused"):
        await app.listings.update(alice, fine.id, {"name": "doomed"})
    assert app.backend.get([fine.id])[fine.id].name == "fine"
    assert (await app.listings.get(alice, fine.id)).name == "fine"


@pytest.fixture
async def worker(settings: Settings, encoder: Encoder) -> AsyncIterator[CatalogApp]:
    """Another process's view of the same database: it writes rows and holds no index."""
    app = await CatalogApp.open(settings, with_index=False, encoder=encoder)
    yield app
    await app.close()


async def test_worker_writes_reach_the_serving_index_by_sync(
    app: CatalogApp, worker: CatalogApp, alice: Actor
) -> None:
    created = await worker.listings.create(alice, listing_data("from-the-worker"))
    assert app.backend.get([created.id]) == {}
    assert await app.index.sync(force=True) == 1
    assert app.backend.get([created.id])[created.id].name == "from-the-worker"
    assert await app.index.sync() == 0  # throttled: at most once per second unless forced

    await worker.usage.record(created.id, "inference", success=True, latency_ms=7)
    await app.index.sync(force=True)
    indexed = app.backend.get([created.id])[created.id]
    assert (indexed.relative_usage, indexed.latency_p50_ms) == (1.0, 7)

    await worker.listings.delete(alice, created.id)
    await app.index.sync(force=True)
    assert app.backend.get([created.id]) == {}


async def test_a_listing_another_process_withdraws_leaves_search_results_by_the_next_sync(
    app: CatalogApp, worker: CatalogApp, alice: Actor, bob: Actor
) -> None:
    """What ``catalog.search_service`` promises: cached results are as fresh as the index, and a sync
    brings in another process's visibility change or deletion even for a listing served from cache."""
    made_private = await app.listings.create(alice, listing_data("withdrawn-sentiment-model"))
    deleted = await app.listings.create(alice, listing_data("deleted-sentiment-model"))

    async def found() -> set[str]:
        response = await app.search.search(bob, SearchRequest(text="sentiment model", limit=20))
        return {result.listing.id for result in response.results}

    assert {made_private.id, deleted.id} <= await found()  # and now in the view cache
    await worker.listings.update(alice, made_private.id, {"visibility": "private"})
    await worker.listings.delete(alice, deleted.id)
    await app.index.sync(force=True)
    assert not {made_private.id, deleted.id} & await found()


async def test_sync_reads_only_the_window_since_its_last_read_yet_catches_a_late_commit(
    app: CatalogApp, worker: CatalogApp, alice: Actor
) -> None:
    first = await worker.listings.create(alice, listing_data("written-just-now"))
    await app.index.sync(force=True)
    read_at = app.index._read_at
    assert read_at is not None and app.backend.get([first.id])

    # A transaction that stamped its row 20 s before the last read began and committed after it.
    late = await worker.listings.create(alice, listing_data("slow-transaction"))
    async with worker.db.session() as session:
        await session.execute(
            update(Listing).where(Listing.id == late.id).values(updated_at=read_at - timedelta(seconds=20))
        )
    assert await app.index.sync(force=True) == 1
    assert app.backend.get([late.id])[late.id].name == "slow-transaction"
    # Rows already read are not read again: the window starts at the previous read, less the overlap.
    assert app.index._sync_since() == app.index._read_at - SYNC_OVERLAP
    assert await app.index.sync(force=True) == 0


async def test_reindex_and_restart_rebuild_from_the_database(
    app: CatalogApp, settings: Settings, encoder: Encoder, alice: Actor
) -> None:
    first = await app.listings.create(alice, listing_data("first"))
    await app.listings.create(alice, listing_data("second", visibility="private"))
    app.backend.clear()
    assert app.backend.count(EVERYTHING) == 0
    assert await app.listings.reindex() == 2
    assert app.backend.count(EVERYTHING) == 2
    assert app.backend.count(SearchFilters()) == 1  # anonymous: the public one only
    await app.close()

    reopened = await CatalogApp.open(settings, encoder=encoder)
    try:
        assert reopened.backend.count(EVERYTHING) == 2
        assert reopened.backend.get([first.id])[first.id].embedding is not None
    finally:
        await reopened.close()
    with pytest.raises(NotFound):
        await reopened.listings.get(ANONYMOUS, "missing")


async def test_reindex_rebuilds_an_index_whose_marker_still_vouches_for_it(
    app: CatalogApp, settings: Settings, encoder: Encoder, alice: Actor
) -> None:
    """``mlrepo reindex`` is the operator's repair: it rewrites the index even when the marker (count and
    digest) matches the database, because the marker cannot see damage behind it."""
    created = await app.listings.create(alice, listing_data("zebrafish-counter"))
    projection = app.backend.get([created.id])[created.id]
    await app.close()

    # Damage behind the marker: the document's text changes while the marker keeps vouching for it.
    keyword = KeywordIndex(settings.index_dir / "keyword")
    marker = json.loads((keyword.directory / MARKER_FILE).read_text())
    try:
        keyword.apply([replace(projection, name="damaged")], [], marker["count"], int(marker["digest"], 16))
    finally:
        keyword.close()

    reopened = await CatalogApp.open(settings, encoder=encoder)
    try:
        assert reopened.backend.keyword("zebrafish", EVERYTHING, 5) == []  # startup trusts the marker
        assert await reopened.listings.reindex() == 1
        assert [h.id for h in reopened.backend.keyword("zebrafish", EVERYTHING, 5)] == [created.id]
    finally:
        await reopened.close()


async def test_rebuild_catches_up_with_writes_committed_while_it_loaded(
    app: CatalogApp, worker: CatalogApp, alice: Actor
) -> None:
    """A rebuild loads a snapshot; rows another process changed or deleted meanwhile (with OpenSearch:
    written to the physical index the alias swap then dropped) must not stay stale once it returns."""
    renamed = await app.listings.create(alice, listing_data("before-the-snapshot"))
    doomed = await app.listings.create(alice, listing_data("deleted-meanwhile"))
    loop = asyncio.get_running_loop()

    async def meanwhile() -> None:
        await worker.listings.update(alice, renamed.id, {"name": "after-the-snapshot"})
        await worker.listings.delete(alice, doomed.id)

    class WritesDuringTheLoad:
        """Called right after the backend took the snapshot: another process commits then."""

        def rebuild(self, listings: object) -> None:
            asyncio.run_coroutine_threadsafe(meanwhile(), loop).result()

        def update(self, upserted: object = (), removed: object = ()) -> None:
            pass

    app.index.listeners.append(WritesDuringTheLoad())
    assert await app.listings.reindex() == 2
    assert app.backend.get([renamed.id])[renamed.id].name == "after-the-snapshot"
    assert app.backend.get([doomed.id]) == {}


@pytest.fixture
def reply_lost_after_commit() -> Iterator[Callable[[], None]]:
    """Arms a failure *after* the database committed a transaction that wrote listings: what a caller sees
    when the connection drops before COMMIT's reply, or when its task is cancelled while awaiting it."""
    armed = False

    def note_listing_writes(session: Session, _context: object) -> None:
        if any(isinstance(row, Listing) for row in (*session.new, *session.dirty, *session.deleted)):
            session.info["wrote_listings"] = True

    def lose_the_reply(session: Session) -> None:
        nonlocal armed
        if armed and session.info.pop("wrote_listings", False):
            armed = False
            raise ConnectionError("connection lost after COMMIT")

    def arm() -> None:
        nonlocal armed
        armed = True

    event.listen(Session, "after_flush", note_listing_writes)
    event.listen(Session, "after_commit", lose_the_reply)
    try:
        yield arm
    finally:
        event.remove(Session, "after_commit", lose_the_reply)
        event.remove(Session, "after_flush", note_listing_writes)


async def test_a_write_whose_commit_outcome_is_unknown_is_repaired_by_the_next_sync(
    app: CatalogApp, alice: Actor, reply_lost_after_commit: Callable[[], None]
) -> None:
    """The index entry is put back when the commit raises, but the database may hold the new row anyway:
    the next sync must compare again instead of trusting the version it was handed before the commit."""
    changed = await app.listings.create(alice, listing_data("changed-after-all"))
    deleted = await app.listings.create(alice, listing_data("deleted-after-all"))

    reply_lost_after_commit()
    with pytest.raises(ConnectionError):
        await app.listings.update(alice, changed.id, {"description": "Committed before the reply was lost."})
    reply_lost_after_commit()
    with pytest.raises(ConnectionError):
        await app.listings.delete(alice, deleted.id)
    assert (await app.listings.get(alice, changed.id)).description == "Committed before the reply was lost."

    await app.index.sync(force=True)
    assert app.backend.get([changed.id])[changed.id].description == "Committed before the reply was lost."
    assert app.backend.get([deleted.id]) == {}


async def test_a_catalog_opened_for_reindex_reads_the_rows_once(
    app: CatalogApp, settings: Settings, encoder: Encoder, alice: Actor
) -> None:
    """``mlrepo reindex`` always rebuilds, so its catalog does not load the index first (every row read and
    projected twice, and the first load's rebuild thrown away)."""
    await app.listings.create(alice, listing_data("indexed-once"))
    await app.close()
    reopened = await CatalogApp.open(settings, encoder=encoder, load_index=False)
    try:
        assert reopened.backend.count(EVERYTHING) == 0
        assert await reopened.listings.reindex() == 1
        assert reopened.backend.count(EVERYTHING) == 1
    finally:
        await reopened.close()


async def test_rows_reembedded_at_startup_reach_an_opensearch_index_that_looks_current(
    app: CatalogApp, alice: Actor
) -> None:
    """After a change of embedding model or of the embedded text recipe, startup re-encodes the rows, but a
    shared OpenSearch index with as many documents as the database is kept and still holds the old
    vectors: they must be replaced by the time the load returns, or vector search compares new query
    vectors with old listing vectors."""
    created = await app.listings.create(alice, listing_data("re-embedded"))
    previous_model = np.zeros(app.encoder.dim, dtype=np.float32)
    previous_model[0] = 1.0
    async with app.db.session() as session:  # as the previous release left it, long ago
        await session.execute(
            update(Listing)
            .where(Listing.id == created.id)
            .values(
                embedding=vector_bytes(previous_model),
                embedding_model="previous-model+text-v1",
                updated_at=utcnow() - timedelta(days=1),
            )
        )
    cluster = InMemoryCluster()
    opensearch = OpenSearchBackend(cluster, "listings", app.encoder.dim)  # type: ignore[arg-type]
    opensearch.load([replace(app.backend.get([created.id])[created.id], embedding=previous_model)])

    assert await ListingIndex(app.db, opensearch, app.encoder).load() == 1
    async with app.db.session() as session:
        row = await session.get(Listing, created.id)
        assert row is not None and row.embedding_model == app.encoder.model_name
    indexed = np.asarray(cluster.served("listings")[created.id]["embedding"], dtype=np.float32)
    assert np.allclose(indexed, vector_of(row.embedding), atol=1e-6)


async def test_an_index_read_that_fails_before_any_index_write_undoes_nothing(
    app: CatalogApp, alice: Actor
) -> None:
    """A write reads the entries it is about to replace (to put them back if the commit fails); when that
    read fails nothing was written, so nothing may be "put back": removing the live entries of a shared
    index would hide the listings from every process until some sync repaired them."""
    created = await app.listings.create(alice, listing_data("still-listed"))
    cluster = InMemoryCluster()
    opensearch = OpenSearchBackend(cluster, "listings", app.encoder.dim)  # type: ignore[arg-type]
    index = ListingIndex(app.db, opensearch, app.encoder)
    await index.load()

    cluster.fail_next("mget")
    with pytest.raises(Unavailable):
        listings = ListingService(app.db, index, app.cursors)
        await listings.update(alice, created.id, {"description": "Never written."})
    assert cluster.served("listings")[created.id]["description"] == created.description


async def test_an_opensearch_index_kept_in_step_by_ordinary_writes_is_kept_at_the_next_start(
    app: CatalogApp, alice: Actor
) -> None:
    """Startup compares a digest of every document with the database's projection: documents written by
    creates, updates and usage must digest exactly as the rows read back at startup, or every start of
    every process would rebuild the shared index."""
    cluster = InMemoryCluster()
    opensearch = OpenSearchBackend(cluster, "listings", app.encoder.dim)  # type: ignore[arg-type]
    index = ListingIndex(app.db, opensearch, app.encoder)
    await index.load()
    listings = ListingService(app.db, index, app.cursors)
    created = await listings.create(alice, listing_data("kept-at-start"))
    await listings.create(alice, listing_data("also-kept"))
    await listings.update(alice, created.id, {"description": "Changed after it was listed."})
    await UsageService(app.db, index, 30).record(created.id, "inference", success=True, latency_ms=12.0)
    (served,) = cluster.aliases

    assert await ListingIndex(app.db, opensearch, app.encoder).load() == 2
    assert cluster.aliases == {served: "listings"}
    assert cluster.served("listings")[created.id]["description"] == "Changed after it was listed."


async def test_a_new_label_is_embedded_off_the_event_loop_by_writes_and_by_syncs(
    app: CatalogApp, worker: CatalogApp, alice: Actor
) -> None:
    """An index write that brings a new (category, subcategory) embeds the label's text for query
    understanding. Inside the write, on the event loop, that encode (and a fresh process's model load)
    stalled every request of the process; seen at 11-27 s under load. Here the embedding function is made
    to take 1 s, and the loop must keep ticking while a write, then a sync, brings a new label."""
    understanding = app.ranker.understanding
    real_embed = understanding._embed

    def slow_embed(texts):  # the real encode, slowed as a model load on a busy host would be
        import time

        time.sleep(1.0)
        return real_embed(texts)

    understanding._embed = slow_embed
    longest = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = loop.time()
            longest, last = max(longest, now - last), now

    ticking = asyncio.create_task(ticker())
    try:
        await app.listings.create(
            alice, listing_data("depth-model", category="Computer Vision", subcategory="Depth Estimation")
        )
        assert ("Computer Vision", "Depth Estimation") in understanding.space.position
        written_by_us = longest
        await worker.listings.create(
            alice, listing_data("asr-model", category="Audio", subcategory="Speech Recognition")
        )
        await app.index.sync(force=True)
        assert ("Audio", "Speech Recognition") in understanding.space.position
    finally:
        stop.set()
        await ticking
    assert written_by_us < 0.5 and longest < 0.5, (written_by_us, longest)
