"""Listings through GraphQL: every query and mutation, access rules and the codes of refusals."""

from __future__ import annotations

from datetime import datetime, timedelta

from api_helpers import LISTING_FIELDS, new_listing
from sqlalchemy import select

from catalog.enums import VerificationStatus
from infra.tables import UsageEvent


async def test_create_then_read_every_field(api) -> None:
    token = await api.account("alice")
    created = (await new_listing(api, token, name="sentiment-small"))["createListing"]
    assert created["kind"] == "MODEL"
    assert created["accuracy"] == {"value": 0.91, "metric": "accuracy", "dataset": "sst2"}
    assert created["resources"] == {"cpu": 1.0, "memoryMb": 512, "gpu": 0}
    assert created["producer"]["name"] == "alice" and created["producer"]["id"]
    assert created["verificationStatus"] == VerificationStatus.UNVERIFIED.name
    assert created["inputFormat"].startswith("text") and created["outputFormat"].startswith("class-label")
    assert created["subcategories"] == ["Text Classification"]

    anonymous = await api.data(
        f"query($id: ID!) {{ listing(id: $id) {{ {LISTING_FIELDS} }} }}", {"id": created["id"]}
    )
    listing = anonymous["listing"]
    assert listing["name"] == "sentiment-small"
    assert listing["reviews"] == [] and listing["rating"] == {"average": None, "count": 0}
    assert [v["version"] for v in listing["versions"]] == ["1.0.0"]
    assert listing["sharedWith"] == []


async def test_update_records_a_version_and_is_owner_only(api) -> None:
    alice, bob = await api.account("alice"), await api.account("bob", "requester")
    listing_id = (await new_listing(api, alice))["createListing"]["id"]
    update = """mutation($id: ID!, $input: UpdateListingInput!) {
        updateListing(id: $id, input: $input) { description version versions { version } } }"""
    changed = await api.data(
        update, {"id": listing_id, "input": {"description": "v2", "version": "2.0.0"}}, alice
    )
    assert changed["updateListing"]["description"] == "v2"
    assert [v["version"] for v in changed["updateListing"]["versions"]] == ["1.0.0", "2.0.0"]

    assert await api.error_code(update, {"id": listing_id, "input": {"description": "x"}}, bob) == "FORBIDDEN"
    assert (
        await api.error_code(update, {"id": listing_id, "input": {"description": "x"}}) == "UNAUTHENTICATED"
    )
    assert (
        await api.error_code(update, {"id": "missing", "input": {"description": "x"}}, alice) == "NOT_FOUND"
    )
    # Publishing a version of another kind is refused; so is an edit (it turned a model into a dataset).
    assert (
        await api.error_code(update, {"id": listing_id, "input": {"kind": "DATASET"}}, alice) == "BAD_INPUT"
    )
    assert await api.error_code(update, {"id": listing_id, "input": {"accuracy": 2.0}}, alice) == "BAD_INPUT"


async def test_delete_removes_listing_and_is_owner_only(api) -> None:
    alice, bob = await api.account("alice"), await api.account("bob", "requester")
    listing_id = (await new_listing(api, alice))["createListing"]["id"]
    delete = "mutation($id: ID!) { deleteListing(id: $id) { id deleted } }"
    assert await api.error_code(delete, {"id": listing_id}, bob) == "FORBIDDEN"
    assert (await api.data(delete, {"id": listing_id}, alice))["deleteListing"] == {
        "id": listing_id,
        "deleted": True,
    }
    assert (
        await api.error_code("query($id: ID!) { listing(id: $id) { id } }", {"id": listing_id}) == "NOT_FOUND"
    )
    assert await api.error_code(delete, {"id": listing_id}, alice) == "NOT_FOUND"


async def test_anonymous_sees_public_listings_only(api) -> None:
    alice, bob = await api.account("alice"), await api.account("bob", "requester")
    carol = await api.account("carol", "requester")
    public = (await new_listing(api, alice, name="open-model"))["createListing"]["id"]
    private = (await new_listing(api, alice, name="secret-model", visibility="PRIVATE"))["createListing"][
        "id"
    ]
    shared = (await new_listing(api, alice, name="shared-model", visibility="SHARED", sharedWith=["bob"]))[
        "createListing"
    ]["id"]

    names = "query { listings(first: 50) { totalCount edges { node { id name sharedWith } } } }"

    def ids(data: dict) -> set[str]:
        return {edge["node"]["id"] for edge in data["listings"]["edges"]}

    assert ids(await api.data(names)) == {public}
    assert ids(await api.data(names, token=carol)) == {public}
    assert ids(await api.data(names, token=bob)) == {public, shared}
    owner_view = await api.data(names, token=alice)
    assert ids(owner_view) == {public, private, shared}
    shared_with = {e["node"]["name"]: e["node"]["sharedWith"] for e in owner_view["listings"]["edges"]}
    assert len(shared_with["shared-model"]) == 1
    bob_view = await api.data(names, token=bob)
    assert all(edge["node"]["sharedWith"] == [] for edge in bob_view["listings"]["edges"])

    one = "query($id: ID!) { listing(id: $id) { id } }"
    assert await api.error_code(one, {"id": private}) == "NOT_FOUND"
    assert await api.error_code(one, {"id": shared}, carol) == "NOT_FOUND"
    assert (await api.data(one, {"id": shared}, bob))["listing"]["id"] == shared


async def test_listings_cursor_pagination_and_filters(api) -> None:
    alice = await api.account("alice")
    for index in range(3):
        await new_listing(api, alice, name=f"model-{index}")
    await new_listing(api, alice, name="a-dataset", kind="DATASET", category="Tabular")
    page = """query($after: String, $filter: ListingFilterInput) {
        listings(first: 2, after: $after, filter: $filter) {
            totalCount pageInfo { hasNextPage endCursor } edges { cursor node { name } } } }"""
    first = (await api.data(page, {"filter": {"kinds": ["MODEL"]}}))["listings"]
    assert first["totalCount"] == 3 and first["pageInfo"]["hasNextPage"] is True
    assert first["edges"][-1]["cursor"] == first["pageInfo"]["endCursor"]
    second = (
        await api.data(page, {"filter": {"kinds": ["MODEL"]}, "after": first["pageInfo"]["endCursor"]})
    )["listings"]
    assert second["pageInfo"]["hasNextPage"] is False
    names = [e["node"]["name"] for e in first["edges"] + second["edges"]]
    assert sorted(names) == ["model-0", "model-1", "model-2"]

    datasets = (await api.data(page, {"filter": {"category": "tabular"}}))["listings"]
    assert [e["node"]["name"] for e in datasets["edges"]] == ["a-dataset"]

    assert await api.error_code(page, {"after": "not-a-cursor"}) == "BAD_INPUT"
    assert await api.error_code("{ listings(first: 0) { totalCount } }") == "BAD_INPUT"
    assert await api.error_code("{ listings(first: 1000) { totalCount } }") == "BAD_INPUT"


async def test_categories_count_visible_listings(api) -> None:
    alice = await api.account("alice")
    await new_listing(api, alice, name="m1")
    await new_listing(api, alice, name="m2", subcategory="Sentiment Analysis")
    await new_listing(api, alice, name="hidden", visibility="PRIVATE", category="Vision")
    query = "{ categories { name count subcategories { name count } } }"
    anonymous = (await api.data(query))["categories"]
    assert [(c["name"], c["count"]) for c in anonymous] == [("Natural Language Processing", 2)]
    subs = {s["name"]: s["count"] for s in anonymous[0]["subcategories"]}
    assert subs["Text Classification"] == 1 and subs["Sentiment Analysis"] == 1
    owner = {c["name"]: c["count"] for c in (await api.data(query, token=alice))["categories"]}
    assert owner == {"Natural Language Processing": 2, "Vision": 1}


async def test_me(api) -> None:
    assert (await api.data("{ me { name } }"))["me"] is None
    token = await api.account("alice", "producer")
    me = (await api.data("{ me { id name role quota { cpu memoryMb gpu } } }", token=token))["me"]
    assert me["name"] == "alice" and me["role"] == "PRODUCER" and me["quota"]["memoryMb"] > 0


async def test_every_datetime_carries_its_utc_offset(api) -> None:
    """A DateTime without an offset reads as the client's local time. On SQLite, which hands back naive
    datetimes, Account.createdAt and ListingVersion.createdAt (and a job's times) came without one while
    Listing.createdAt had +00:00: a client east of UTC read a version as made hours before its listing."""
    token = await api.account("alice", "producer")
    created = (await new_listing(api, token, name="dated"))["createListing"]
    me = (await api.data("{ me { createdAt } }", token=token))["me"]
    stamps = [created["createdAt"], created["updatedAt"], me["createdAt"]]
    stamps += [version["createdAt"] for version in created["versions"]]
    assert len(stamps) == 4
    for stamp in stamps:
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0), stamp


async def test_reviews(api) -> None:
    alice, bob = await api.account("alice"), await api.account("bob", "requester")
    listing_id = (await new_listing(api, alice))["createListing"]["id"]
    review = """mutation($id: ID!, $rating: Int!, $text: String!) {
        addReview(listingId: $id, rating: $rating, text: $text) { id rating text author listingId } }"""
    added = await api.data(review, {"id": listing_id, "rating": 4, "text": "works well"}, bob)
    assert added["addReview"].pop("id")
    assert added["addReview"] == {"rating": 4, "text": "works well", "author": "bob", "listingId": listing_id}
    await api.data(review, {"id": listing_id, "rating": 2, "text": "changed my mind"}, bob)
    read = await api.data(
        "query($id: ID!) { listing(id: $id) { rating { average count } reviews { rating text } } }",
        {"id": listing_id},
    )
    assert read["listing"]["rating"] == {"average": 2.0, "count": 1}
    assert read["listing"]["reviews"] == [{"rating": 2, "text": "changed my mind"}]
    paged = """query($id: ID!, $first: Int!, $offset: Int!) {
        listing(id: $id) { reviews(first: $first, offset: $offset) { rating } } }"""
    for first, offset, field in ((0, 0, "first"), (5, -1, "offset")):
        body = await api.gql(paged, {"id": listing_id, "first": first, "offset": offset})
        assert body["errors"][0]["extensions"] == {"code": "BAD_INPUT", "field": field}
        assert body["errors"][0]["message"].startswith(field)

    assert await api.error_code(review, {"id": listing_id, "rating": 5, "text": "mine"}, alice) == "FORBIDDEN"
    assert await api.error_code(review, {"id": listing_id, "rating": 9, "text": ""}, bob) == "BAD_INPUT"
    assert await api.error_code(review, {"id": listing_id, "rating": 3, "text": ""}) == "UNAUTHENTICATED"
    assert await api.error_code(review, {"id": "nope", "rating": 3, "text": ""}, bob) == "NOT_FOUND"

    # Its author withdraws it; nobody else can (NOT_FOUND: a review id is not proof of authorship).
    review_id = (await api.data(review, {"id": listing_id, "rating": 1, "text": "broken"}, bob))["addReview"]
    withdraw = "mutation($id: ID!) { deleteReview(id: $id) { id deleted } }"
    carol = await api.account("carol", "requester")
    assert await api.error_code(withdraw, {"id": review_id["id"]}, carol) == "NOT_FOUND"
    # Anonymous: an anonymous write is UNAUTHENTICATED (README), refused before any lookup.
    assert await api.error_code(withdraw, {"id": review_id["id"]}) == "UNAUTHENTICATED"
    deleted = await api.data(withdraw, {"id": review_id["id"]}, bob)
    assert deleted["deleteReview"] == {"id": review_id["id"], "deleted": True}
    read = await api.data(
        "query($id: ID!) { listing(id: $id) { rating { average count } } }", {"id": listing_id}
    )
    assert read["listing"]["rating"] == {"average": None, "count": 0}


async def test_listing_view_with_search_id_counts_as_selection(api) -> None:
    alice, rita = await api.account("alice"), await api.account("rita", "requester")
    listing_id = (await new_listing(api, alice))["createListing"]["id"]
    searcher = await api.services.catalog.accounts.authenticate(rita)
    search_id = await api.services.catalog.demand.log_search(
        "sentiment", result_count=1, account_id=searcher.account_id
    )
    viewed = "query($id: ID!, $s: String) { listing(id: $id, searchId: $s) { id } }"
    await api.data(viewed, {"id": listing_id, "s": search_id}, token=rita)
    async with api.services.catalog.db.session() as session:
        events = (await session.scalars(select(UsageEvent).where(UsageEvent.listing_id == listing_id))).all()
    assert [(e.kind, e.search_id) for e in events] == [("view", search_id)]


async def test_listing_view_refuses_a_search_id_as_run_job_does(api) -> None:
    """An unknown searchId was accepted silently (runJob refuses one), and any holder of a searchId could
    mark another's search selected. Both are NOT_FOUND now, with runJob's message, and nothing is
    recorded. An over-long id (it reached PostgreSQL's 32-character column as INTERNAL) is unknown too."""
    alice, rita = await api.account("alice"), await api.account("rita", "requester")
    listing_id = (await new_listing(api, alice))["createListing"]["id"]
    searcher = await api.services.catalog.accounts.authenticate(rita)
    ritas = await api.services.catalog.demand.log_search(
        "sentiment", result_count=1, account_id=searcher.account_id
    )
    viewed = "query($id: ID!, $s: String) { listing(id: $id, searchId: $s) { id } }"
    for search_id, token in (("no-such-search", rita), ("s" * 33, rita), (ritas, alice), (ritas, None)):
        (refused,) = (await api.gql(viewed, {"id": listing_id, "s": search_id}, token))["errors"]
        assert refused["extensions"]["code"] == "NOT_FOUND", (search_id, token)
        assert refused["message"] == f"no search with id {search_id!r}"
    async with api.services.catalog.db.session() as session:
        assert (await session.scalars(select(UsageEvent))).all() == []


async def test_listing_input_errors_name_the_graphql_fields(api) -> None:
    """The catalog checks listing fields under its own names (latency_ms, training_resources, ...);
    a GraphQL client sent latencyP50Ms, trainingResources, sharedWith and must be told those."""
    alice = await api.account("alice")
    create = "mutation($input: CreateListingInput!) { createListing(input: $input) { id } }"
    base = {"name": "x", "kind": "MODEL", "category": "nlp"}
    for extra, name in (
        ({"latencyP50Ms": -5}, "latencyP50Ms"),
        ({"trainingResources": {"cpu": 2}}, "trainingResources"),
        ({"sharedWith": ["bob"]}, "sharedWith"),
        ({"inputFormat": "no-such-format"}, "inputFormat"),
        ({"resources": {"memoryMb": -1}}, "resources.memoryMb"),
        ({"resources": {"memoryMb": 0}}, "resources.memoryMb"),
        ({"version": "banana"}, "version"),  # the manifests' 1.2.3 rule, on every door
        ({"storageLocation": "artifact:sha256:" + "0" * 64}, "storageLocation"),  # not the caller's to pin
        ({"storageLocation": "artifact:latest"}, "storageLocation"),
    ):
        (error,) = (await api.gql(create, {"input": {**base, **extra}}, alice))["errors"]
        assert error["extensions"]["code"] == "BAD_INPUT"
        named = error["extensions"].get("fields") or [error["extensions"].get("field")]
        assert named == [name], error
        assert error["extensions"]["field"] == name, error  # the key every BAD_INPUT names its field by
        assert error["message"].startswith(f"{name}:"), error


async def test_create_rejects_bad_fields_with_codes(api) -> None:
    alice = await api.account("alice")
    body = await api.gql(
        "mutation($input: CreateListingInput!) { createListing(input: $input) { id } }",
        {"input": {"name": "x", "kind": "MODEL", "category": "nlp", "accuracy": 1.5}},
        alice,
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_INPUT"
    assert "accuracy" in body["errors"][0]["message"]
    assert (
        await api.error_code(
            'mutation { createListing(input: {name: "x", kind: WIZARD, category: "c"}) { id } }', token=alice
        )
        == "BAD_INPUT"
    )
    assert (
        await api.error_code(
            "mutation($input: CreateListingInput!) { createListing(input: $input) { id } }",
            {"input": {"name": "n" * 500, "kind": "MODEL", "category": "nlp"}},
            alice,
        )
        == "BAD_INPUT"
    )
    await new_listing(api, alice, name="twice")
    again = await new_listing(api, alice, name="twice", expect_error=True)
    assert again == "CONFLICT"


async def test_a_requester_token_cannot_create_a_public_listing(api) -> None:
    """Only producers publish: a requester's createListing made a public listing anyway."""
    bob = await api.account("bob", "requester")
    create = "mutation($input: CreateListingInput!) { createListing(input: $input) { id visibility } }"
    base = {"name": "x", "kind": "MODEL", "category": "nlp"}
    for extra in ({}, {"visibility": "PUBLIC"}):
        (error,) = (await api.gql(create, {"input": {**base, **extra}}, bob))["errors"]
        assert error["extensions"]["code"] == "FORBIDDEN", error
        assert error["extensions"]["field"] == "visibility", error
    made = (await api.gql(create, {"input": {**base, "visibility": "PRIVATE"}}, bob))["data"]["createListing"]
    assert made["visibility"] == "PRIVATE"
