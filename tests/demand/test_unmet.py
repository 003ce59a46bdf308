"""Which searches are unmet demand: no results, or no selection within the window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from demand_support import WINDOW_S, MovableClock, People, add_listing, add_usage
from sqlalchemy import select

from catalog.actors import ANONYMOUS
from catalog.demand import DemandService
from infra.db import Database
from infra.errors import BadInput, NotFound
from infra.settings import Settings
from infra.tables import SearchEvent
from search.embeddings import Encoder


async def test_searches_without_results_become_one_topic(demand: DemandService, people: People) -> None:
    for text in [
        "segment brain tumors in MRI",
        "tumor segmentation for MRI scans",
        "segment brain tumors in MRI",
    ]:
        await demand.log_search(
            text, result_count=0, category="Computer Vision", account_id=people.requester.account_id
        )

    topics = await demand.unmet_demand(people.producer)

    assert len(topics) == 1
    topic = topics[0]
    assert topic.count == 3 and topic.no_results == 3 and topic.no_selection == 0
    assert topic.examples == ("segment brain tumors in MRI", "tumor segmentation for MRI scans")
    assert topic.label in topic.examples
    assert topic.requesters == 1
    assert [(c.category, c.count) for c in topic.categories] == [("Computer Vision", 3)]
    assert topic.keywords == ("mri", "tumor", "brain")
    assert topic.first_seen <= topic.last_seen


async def test_search_with_results_is_pending_until_its_window_closes(
    demand: DemandService, people: People, clock: MovableClock
) -> None:
    await demand.log_search("detect potholes in road photos", result_count=4, top_ids=["a", "b"])

    assert await demand.unmet_demand(people.producer) == []
    clock.advance(WINDOW_S - 5)
    assert await demand.unmet_demand(people.producer) == []
    clock.advance(10)
    topics = await demand.unmet_demand(people.producer)
    assert [(t.label, t.no_selection, t.no_results) for t in topics] == [
        ("detect potholes in road photos", 1, 0)
    ]


async def test_searches_followed_by_a_selection_are_not_unmet(
    demand: DemandService, people: People, clock: MovableClock, db: Database
) -> None:
    listing = await add_listing(db, "pothole-detector")
    selected = await demand.log_search("detect potholes in road photos", result_count=3)
    viewed = await demand.log_search("pothole detection from dashcam images", result_count=3)
    run = await demand.log_search("find road damage in street images", result_count=3)
    ignored = await demand.log_search("road surface defect detector", result_count=3)
    assert selected and viewed and run and ignored
    await demand.record_selection(selected, listing, ANONYMOUS)
    await add_usage(db, listing, viewed, kind="view")
    await add_usage(db, listing, run, kind="inference")

    clock.advance(WINDOW_S + 1)
    topics = await demand.unmet_demand(people.producer)

    assert [t.examples for t in topics] == [("road surface defect detector",)]


async def test_first_selection_is_kept(demand: DemandService, db: Database) -> None:
    first, second = await add_listing(db, "first"), await add_listing(db, "second")
    search_id = await demand.log_search("colorize old photos", result_count=2)
    assert search_id
    await demand.record_selection(search_id, first, ANONYMOUS)
    await demand.record_selection(search_id, second, ANONYMOUS)
    async with db.session() as session:
        row = await session.get(SearchEvent, search_id)
        assert row is not None and row.selected_listing_id == first


async def test_query_embedding_from_the_search_is_stored_and_reused(
    demand: DemandService, people: People, db: Database
) -> None:
    assert demand.encoder is not None
    vector = demand.encoder.encode_query("generate music from a text description")
    given = await demand.log_search(
        "generate music from a text description", result_count=0, embedding=vector
    )
    missing = await demand.log_search("text to music generation", result_count=0)

    topics = await demand.unmet_demand(people.producer)

    assert len(topics) == 1 and topics[0].count == 2
    async with db.session() as session:
        stored_given = await session.get(SearchEvent, given)
        backfilled = await session.get(SearchEvent, missing)
        assert stored_given is not None and stored_given.embedding == vector.tobytes()
        # Grouping encoded the query that came without a vector, and kept it for the next time.
        assert backfilled is not None and backfilled.embedding is not None
        assert len(backfilled.embedding) == 4 * demand.encoder.dim


async def test_searches_without_text_are_not_logged(demand: DemandService, people: People) -> None:
    assert await demand.log_search("   ", result_count=0, facets={"kinds": ["model"]}) is None
    assert await demand.unmet_demand(people.producer) == []


async def test_pipeline_gap_is_unmet_demand_at_once(demand: DemandService, people: People) -> None:
    await demand.log_gap(people.requester, "Audio", "audio@1", "text@1")
    await demand.log_gap(people.requester, "Audio", "audio@1", "text@1", text="convert audio to text")
    await demand.log_search("speech to text", result_count=0, category="Audio")

    topics = await demand.unmet_demand(people.producer)

    assert len(topics) == 1
    topic = topics[0]
    assert (topic.count, topic.pipeline_gaps, topic.no_results) == (3, 2, 1)
    assert [(g.input_format, g.output_format, g.count) for g in topic.format_gaps] == [
        ("audio@1", "text@1", 2)
    ]


async def test_an_overlong_category_is_shortened_not_refused(demand: DemandService, people: People) -> None:
    await demand.log_search("detect potholes in road photos", result_count=0, category="  Vision " * 30)
    [topic] = await demand.unmet_demand(people.producer)
    [counted] = topic.categories
    assert len(counted.category) == 100 and counted.category.startswith("Vision Vision")


async def test_searches_logged_in_the_background_are_written_in_one_batch(
    demand: DemandService, people: People, db: Database
) -> None:
    texts = ["segment brain tumors in MRI", "count cars in parking lot photos", "detect potholes"]
    ids = [demand.log_search_soon(text, result_count=0) for text in texts]
    assert len(set(ids)) == 3

    async with db.session() as session:  # nothing written yet: the batch is still gathering
        assert (await session.scalars(select(SearchEvent))).all() == []
    assert demand._log.task is not None
    await demand._log.task  # the background writer drains the queue by itself, no reader needed

    async with db.session() as session:
        rows = {row.id: row.text for row in (await session.scalars(select(SearchEvent))).all()}
    assert rows == dict(zip(ids, texts, strict=True))


async def test_a_failed_background_batch_is_reported_and_later_searches_still_logged(
    demand: DemandService, people: People, db: Database, caplog
) -> None:
    demand.log_search_soon("segment brain tumors in MRI", result_count=0, facets={"bad": object()})
    await demand.flush()  # a facet the JSON column cannot hold: the database refuses the batch
    assert "could not log 1 searches for unmet demand" in caplog.text

    kept = demand.log_search_soon("count cars in parking lot photos", result_count=0)
    await demand.flush()
    async with db.session() as session:
        assert [row.id for row in (await session.scalars(select(SearchEvent))).all()] == [kept]


async def test_since_means_the_same_instant_whatever_its_utc_offset(
    demand: DemandService, people: People, clock: MovableClock
) -> None:
    """SQLite compares the stored UTC text with the bound value's wall-clock digits: a ``since`` in
    another offset filtered by the wrong instant there, and correctly on PostgreSQL."""
    await demand.log_search("count penguins in drone footage", result_count=0)
    an_hour_earlier = clock.now - timedelta(hours=1)
    for offset in (0, 5, -8):
        since = an_hour_earlier.astimezone(timezone(timedelta(hours=offset)))
        assert [t.label for t in await demand.unmet_demand(people.producer, since=since)] == [
            "count penguins in drone footage"
        ], since.isoformat()
        later = (clock.now + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=offset)))
        assert await demand.unmet_demand(people.producer, since=later) == [], later.isoformat()


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_a_since_whose_utc_instant_no_date_holds_is_bad_input(
    demand: DemandService, people: People, since: str
) -> None:
    """Its conversion to UTC overflowed: the client got INTERNAL."""
    with pytest.raises(BadInput, match="since") as caught:
        await demand.unmet_demand(people.producer, since=datetime.fromisoformat(since))
    assert caught.value.details["field"] == "since"


async def test_a_selection_through_another_api_process_finds_a_search_still_being_logged(
    demand: DemandService, db: Database, settings: Settings, encoder: Encoder
) -> None:
    """The requester searched on one server and runs or views the pick on another at once: the search is
    still in the first one's logging batch, and must not be refused as an unknown search."""
    listing = await add_listing(db, "colorizer")
    other = DemandService(db, settings, encoder)
    try:
        search_id = demand.log_search_soon("colorize old photos", result_count=2)  # queued, not written
        await other.require_search(search_id, ANONYMOUS)
        await other.record_selection(search_id, listing, ANONYMOUS)
        async with db.session() as session:
            row = await session.get(SearchEvent, search_id)
            assert row is not None and row.selected_listing_id == listing
        with pytest.raises(NotFound):
            await other.require_search("0" * 32, ANONYMOUS)  # never logged anywhere: refused after the grace
    finally:
        await other.close()


async def test_only_the_searcher_marks_their_search_selected(
    demand: DemandService, people: People, db: Database
) -> None:
    """Any holder of a searchId could mark that search selected, hiding another's unmet need. It is bound
    to the account that searched now; another caller is told what an unknown id is told. An anonymous
    search has no account to bind it to: whoever holds its id may."""
    listing = await add_listing(db, "colorizer")
    rita = people.requester
    searched = await demand.log_search("colorize old photos", result_count=2, account_id=rita.account_id)
    assert searched
    for stranger in (people.producer, people.admin, ANONYMOUS):
        with pytest.raises(NotFound) as refused:
            await demand.require_search(searched, stranger)
        assert refused.value.message == f"no search with id {searched!r}"
        with pytest.raises(NotFound, match="no search with id"):
            await demand.record_selection(searched, listing, stranger)
    async with db.session() as session:
        assert (await session.get(SearchEvent, searched)).selected_listing_id is None
    await demand.require_search(searched, rita)
    await demand.record_selection(searched, listing, rita)
    async with db.session() as session:
        assert (await session.get(SearchEvent, searched)).selected_listing_id == listing

    anonymous = await demand.log_search("restore faded photos", result_count=2)
    assert anonymous
    for holder in (ANONYMOUS, rita):
        await demand.require_search(anonymous, holder)
    with pytest.raises(NotFound, match="no search with id"):  # longer than any id: refused without waiting
        await demand.require_search("s" * 33, rita)
