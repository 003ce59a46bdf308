"""Free text that reaches a text column: NUL is refused as BAD_INPUT naming the field, on both engines.

PostgreSQL cannot store NUL in a text column (asyncpg refuses the row) while SQLite stores it: a review,
a pipeline, a token label or a demand category holding one was saved on SQLite and failed inside the
INSERT on PostgreSQL (a DBAPIError the GraphQL layer could only turn into an anonymous "text values must
not contain NUL characters"; the CLI and services saw the raw driver error). Listings already refuse
control characters and searches refuse NUL; these writes now do the same, and nothing is written.
"""

from __future__ import annotations

import pytest
from catalog_helpers import listing_data
from sqlalchemy import func, select

from catalog.actors import Actor
from catalog.app import CatalogApp
from infra.errors import BadInput
from infra.tables import ApiToken, DemandSubscription, Pipeline, Review

NUL = "\x00"


async def _count(app: CatalogApp, table: type) -> int:
    async with app.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_review_text_with_nul_is_bad_input(app: CatalogApp, alice: Actor, bob: Actor) -> None:
    listing = await app.listings.create(alice, listing_data())
    with pytest.raises(BadInput, match="text") as caught:
        await app.reviews.add(bob, listing.id, 4, f"good{NUL}model")
    assert caught.value.details["field"] == "text"
    assert await _count(app, Review) == 0


@pytest.mark.parametrize(
    ("name", "description", "field"), [(f"a{NUL}b", "", "name"), ("ok", NUL, "description")]
)
async def test_pipeline_text_with_nul_is_bad_input(
    app: CatalogApp, bob: Actor, name: str, description: str, field: str
) -> None:
    with pytest.raises(BadInput, match=field):
        await app.pipelines.create(bob, name, description)
    assert await _count(app, Pipeline) == 0


async def test_token_label_with_nul_is_bad_input(app: CatalogApp, bob: Actor) -> None:
    with pytest.raises(BadInput, match="name"):
        await app.accounts.issue_token(bob, name=f"laptop{NUL}")
    assert await _count(app, ApiToken) == 0


async def test_demand_category_with_nul_is_bad_input(app: CatalogApp, alice: Actor) -> None:
    with pytest.raises(BadInput, match="category"):
        await app.demand.subscribe(alice, f"Tab{NUL}ular")
    assert await _count(app, DemandSubscription) == 0
