"""Producers follow categories and are prompted: an inbox of new demand, and live alerts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from demand_support import WINDOW_S, MovableClock, People, add_listing

from catalog.demand import DemandService
from catalog.demand_alerts import DemandAlert
from infra.db import Database
from infra.settings import Settings
from infra.tables import Listing
from search.embeddings import Encoder

ALERT_TIMEOUT_S = 10


async def test_subscribe_is_idempotent_and_case_insensitive(demand: DemandService, people: People) -> None:
    first = await demand.subscribe(people.producer, "Computer Vision")
    again = await demand.subscribe(people.producer, "computer  vision")
    await demand.subscribe(people.producer, "Audio")

    assert again == first
    assert [s.category for s in await demand.subscriptions(people.producer)] == ["Audio", "Computer Vision"]
    assert await demand.unsubscribe(people.producer, "COMPUTER VISION") is True
    assert await demand.unsubscribe(people.producer, "Computer Vision") is False
    assert [s.category for s in await demand.subscriptions(people.producer)] == ["Audio"]
    assert await demand.subscriptions(people.other_producer) == []


async def test_a_category_nothing_uses_is_followed_with_a_warning_naming_the_catalogs(
    demand: DemandService, people: People, db: Database
) -> None:
    """ "NLP" in a catalog that says "Natural Language Processing" was accepted silently, and the
    producer got none of that demand. It is still accepted (searches filtered by "NLP" are filed under
    it), with a warning naming the categories public listings use, never a private listing's."""
    await add_listing(db, "bert", "Natural Language Processing")
    await add_listing(db, "yolo", "Computer Vision")
    secret = await add_listing(db, "internal", "Secret Research")
    async with db.session() as session:
        (await session.get(Listing, secret)).visibility = "private"

    nlp = await demand.subscribe(people.producer, "NLP")
    assert nlp.category == "NLP" and nlp.warning is not None
    assert "no public listing and no logged demand uses the category 'NLP'" in nlp.warning
    assert nlp.warning.endswith("The catalog's categories: Computer Vision, Natural Language Processing.")
    assert (await demand.subscribe(people.producer, "nlp")).warning == nlp.warning  # idempotent, still said
    assert [s.category for s in await demand.subscriptions(people.producer)] == ["NLP"]

    for used in ("natural language processing", "Computer Vision"):
        assert (await demand.subscribe(people.producer, used)).warning is None
    assert (await demand.subscribe(people.producer, "Secret Research")).warning is not None
    await demand.log_search("simulate qubits", result_count=0, category="Quantum ML")
    assert (await demand.subscribe(people.producer, "quantum ml")).warning is None  # demand uses it


async def test_inbox_shows_new_demand_in_subscribed_categories_until_seen(
    demand: DemandService, people: People, clock: MovableClock
) -> None:
    await demand.log_search("detect potholes in road photos", result_count=0, category="Computer Vision")
    clock.advance(1)
    await demand.subscribe(people.producer, "Computer Vision")
    assert (await demand.inbox(people.producer)).topics == ()  # older than the subscription

    clock.advance(1)
    await demand.log_search("segment brain tumors in MRI", result_count=0, category="computer vision")
    await demand.log_search("predict customer churn", result_count=0, category="Tabular")
    inbox = await demand.inbox(people.producer)
    assert [t.label for t in inbox.topics] == ["segment brain tumors in MRI"]
    assert [s.category for s in inbox.subscriptions] == ["Computer Vision"]
    assert (await demand.inbox(people.other_producer)).topics == ()

    clock.advance(1)
    # A search with results made before "seen" becomes unmet after it: it belongs in the next inbox.
    await demand.log_search("classify bird species in photos", result_count=5, category="Computer Vision")
    seen = await demand.mark_seen(people.producer)
    assert seen[0].last_seen_at == clock.now
    assert (await demand.inbox(people.producer)).topics == ()

    clock.advance(WINDOW_S + 1)
    inbox = await demand.inbox(people.producer)
    assert [(t.label, t.no_selection) for t in inbox.topics] == [("classify bird species in photos", 1)]


async def _next_alert(stream: AsyncIterator[DemandAlert]) -> DemandAlert:
    return await asyncio.wait_for(anext(stream), ALERT_TIMEOUT_S)


async def _listening(demand: DemandService, listeners: int) -> None:
    """Wait until the alert stream has registered (it first reads the subscriptions)."""
    for _ in range(500):
        if demand.alert_hub.listener_count == listeners:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the alert stream never started listening")


async def test_alerts_arrive_for_subscribed_categories_only(demand: DemandService, people: People) -> None:
    await demand.subscribe(people.producer, "Audio")
    stream = demand.alerts(people.producer)
    pending = asyncio.ensure_future(_next_alert(stream))
    try:
        await _listening(demand, 1)
        await demand.log_search("predict customer churn", result_count=0, category="Tabular")
        await demand.log_search("speech to text", result_count=3, category="Audio")  # not unmet (yet)
        gap_id = await demand.log_gap(people.requester, "audio", "audio@1", "text@1")

        alert = await pending
        assert (alert.search_id, alert.category, alert.reason) == (gap_id, "audio", "pipeline_gap")
        assert alert.text == "convert audio to text"
    finally:
        pending.cancel()
        await stream.aclose()
    await _listening(demand, 0)


async def test_a_running_stream_follows_later_unsubscribes_and_subscribes(
    demand: DemandService, people: People
) -> None:
    await demand.subscribe(people.producer, "Audio")
    stream = demand.alerts(people.producer)
    pending = asyncio.ensure_future(_next_alert(stream))
    try:
        await _listening(demand, 1)
        assert await demand.unsubscribe(people.producer, "audio") is True
        await demand.subscribe(people.producer, "Tabular")
        await demand.subscribe(people.other_producer, "Audio")  # another account's change is not ours
        await demand.log_search("transcribe spanish podcasts", result_count=0, category="Audio")
        later = await demand.log_search("predict customer churn", result_count=0, category="Tabular")

        alert = await pending
        assert (alert.search_id, alert.category) == (later, "Tabular")
    finally:
        pending.cancel()
        await stream.aclose()


async def test_alert_when_a_selection_window_closes(
    demand: DemandService, people: People, clock: MovableClock
) -> None:
    stream = demand.alerts(people.admin, "Audio")
    pending = asyncio.ensure_future(_next_alert(stream))
    try:
        await _listening(demand, 1)
        search_id = await demand.log_search("transcribe spanish podcasts", result_count=3, category="Audio")
        assert await demand.sweep_expired() == 0  # still inside its window
        clock.advance(WINDOW_S + 1)
        assert await demand.sweep_expired() == 1
        alert = await pending
        assert (alert.search_id, alert.reason) == (search_id, "no_selection")
        assert await demand.sweep_expired() == 0  # each search is announced once
    finally:
        pending.cancel()
        await stream.aclose()


async def test_alerts_do_not_replay_windows_that_closed_while_nobody_listened(
    demand: DemandService, people: People, clock: MovableClock
) -> None:
    await demand.log_search("transcribe spanish podcasts", result_count=3, category="Audio")
    clock.advance(WINDOW_S + 1)  # its window closes before anyone listens: the inbox has it, not alerts
    stream = demand.alerts(people.producer, "Audio")
    pending = asyncio.ensure_future(_next_alert(stream))
    try:
        await _listening(demand, 1)
        assert await demand.sweep_expired() == 0
        later = await demand.log_search("speech to text in spanish", result_count=3, category="Audio")
        clock.advance(WINDOW_S + 1)
        assert await demand.sweep_expired() == 1
        assert (await pending).search_id == later
    finally:
        pending.cancel()
        await stream.aclose()


async def test_a_category_with_accented_capitals_matches_itself(
    demand: DemandService, people: People
) -> None:
    """SQLite's lower() folds ASCII only, so the column never equalled the Python-lowered name: on
    SQLite a producer could not unsubscribe from, mark seen or see demand in "Électronique"."""
    await demand.subscribe(people.producer, "Électronique")
    assert await demand.subscribe(people.producer, "Électronique") is not None  # idempotent, no clash
    await demand.log_search("amplifier schematics", result_count=0, category="Électronique")
    assert [t.label for t in await demand.unmet_demand(people.producer, category="Électronique")] == [
        "amplifier schematics"
    ]
    assert [s.category for s in await demand.mark_seen(people.producer, "Électronique")] == ["Électronique"]
    assert await demand.unsubscribe(people.producer, "Électronique") is True


async def test_alerts_reach_listeners_served_by_another_api_process(
    demand: DemandService,
    people: People,
    clock: MovableClock,
    db: Database,
    settings: Settings,
    encoder: Encoder,
) -> None:
    """Two ``mlrepo serve`` behind one address: the search is logged by one, the producer listens on the
    other. Each process alerts live on its own searches only; the other's reach it by the sweep."""
    # Sweeps only when the test says (the machine may be slow enough for a timed one to run midway).
    quiet = {"demand_window_s": WINDOW_S, "demand_alert_sweep_s": 3600}
    other = DemandService(db, settings.model_copy(update=quiet), encoder, clock=clock)
    stream = other.alerts(people.producer, "Audio")
    pending = asyncio.ensure_future(anext(stream))  # its timeout starts once the alerts are due
    try:
        await _listening(other, 1)
        clock.advance(1)
        search_id = await demand.log_search("transcribe spanish podcasts", result_count=0, category="Audio")
        gap_id = await demand.log_gap(people.requester, "audio", "audio@1", "text@1")
        assert await other.sweep_expired() == 2
        alerts = [await asyncio.wait_for(pending, ALERT_TIMEOUT_S), await _next_alert(stream)]
        assert {(a.search_id, a.reason) for a in alerts} == {
            (search_id, "no_results"),
            (gap_id, "pipeline_gap"),
        }
        assert await other.sweep_expired() == 0  # each is announced once

        own = await other.log_search("speech to text in spanish", result_count=0, category="Audio")
        assert (await _next_alert(stream)).search_id == own  # live, where it was logged
        clock.advance(1)
        assert await other.sweep_expired() == 0  # and not again by the sweep
    finally:
        pending.cancel()
        await stream.aclose()
        await other.close()


async def test_a_stream_follows_subscriptions_made_through_another_api_process(
    demand: DemandService, people: People, db: Database, settings: Settings, encoder: Encoder
) -> None:
    """The producer's stream runs on one server; they subscribe to another category through the other."""
    quiet = {"demand_window_s": WINDOW_S, "demand_alert_sweep_s": 3600}  # sweeps when the test says
    other = DemandService(db, settings.model_copy(update=quiet), encoder)
    await other.subscribe(people.producer, "Audio")
    stream = other.alerts(people.producer)
    pending = asyncio.ensure_future(anext(stream))
    try:
        await _listening(other, 1)
        await demand.subscribe(people.producer, "Tabular")
        await demand.unsubscribe(people.producer, "Audio")
        await other.sweep_expired()
        await other.log_search("transcribe spanish podcasts", result_count=0, category="Audio")
        churn = await other.log_search("predict customer churn", result_count=0, category="Tabular")
        assert (await asyncio.wait_for(pending, ALERT_TIMEOUT_S)).search_id == churn
    finally:
        pending.cancel()
        await stream.aclose()
        await other.close()
