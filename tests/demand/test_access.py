"""Who may read demand, and what bad input gets back."""

from __future__ import annotations

import pytest
from demand_support import People

from catalog.demand import DemandService
from infra.errors import BadInput, Forbidden, NotFound, Unauthenticated


async def test_producers_and_admins_see_unmet_demand(demand: DemandService, people: People) -> None:
    await demand.log_search("predict customer churn", result_count=0, account_id=people.requester.account_id)
    for actor in (people.producer, people.admin):
        assert [t.label for t in await demand.unmet_demand(actor)] == ["predict customer churn"]


async def test_requesters_are_forbidden_and_anonymous_callers_unauthenticated(
    demand: DemandService, people: People
) -> None:
    for actor, error in ((people.requester, Forbidden), (people.anonymous, Unauthenticated)):
        with pytest.raises(error):
            await demand.unmet_demand(actor)
        with pytest.raises(error):
            await demand.subscribe(actor, "Computer Vision")
        with pytest.raises(error):
            await demand.unsubscribe(actor, "Computer Vision")
        with pytest.raises(error):
            await demand.inbox(actor)
        with pytest.raises(error):
            await demand.mark_seen(actor)
        with pytest.raises(error):
            await anext(demand.alerts(actor, "Computer Vision"))


async def test_bad_input_is_refused_clearly(demand: DemandService, people: People) -> None:
    with pytest.raises(BadInput, match="limit"):
        await demand.unmet_demand(people.producer, limit=0)
    with pytest.raises(BadInput, match="limit"):
        await demand.unmet_demand(people.producer, limit=demand.settings.max_page_size + 1)
    with pytest.raises(BadInput, match="category"):
        await demand.unmet_demand(people.producer, category="  ")
    with pytest.raises(BadInput, match="category"):
        await demand.subscribe(people.producer, "x" * 101)
    with pytest.raises(BadInput, match="input_format"):
        await demand.log_gap(people.requester, "Audio", "", "text@1")
    with pytest.raises(BadInput, match="result_count"):
        await demand.log_search("anything", result_count=-1)
    with pytest.raises(NotFound):
        await demand.record_selection("0" * 32, "1" * 32, people.requester)
    with pytest.raises(NotFound):
        await demand.mark_seen(people.producer, "Never Subscribed")
    with pytest.raises(BadInput, match="subscribe"):
        await anext(demand.alerts(people.producer))
