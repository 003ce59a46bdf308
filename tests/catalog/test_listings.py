"""Listings: validation, ownership, visibility on every read path, versions, pagination, categories."""

from __future__ import annotations

import numpy as np
import pytest
from catalog_helpers import listing_data, make_actor

from catalog.actors import ANONYMOUS, Actor
from catalog.app import CatalogApp
from catalog.listings import LISTINGS_CURSOR, ListingFilter, filter_digest
from catalog.publishing.manifest import ManifestError, parse_manifest
from catalog.search_service import SearchRequest
from infra.artifacts import ArtifactStore
from infra.errors import BadInput, Conflict, Forbidden, NotFound, Unauthenticated
from infra.tables import ListingVersion
from search.types import SearchFilters
from tests.forged_cursors import old_style, position_in, with_position

ADMIN_VIEW = SearchFilters(viewer_is_admin=True)


async def test_create_validates_and_normalizes_fields(app: CatalogApp, alice: Actor) -> None:
    listing = await app.listings.create(
        alice, listing_data(accuracy={"value": 0.93, "metric": "f1", "dataset": "imdb"}, size="1.5 MB")
    )
    assert listing.owner_id == alice.account_id and listing.producer_name == "alice"
    assert (listing.accuracy, listing.accuracy_metric, listing.accuracy_dataset) == (0.93, "f1", "imdb")
    assert listing.subcategories == ["Text Classification"]
    assert listing.input_format == "text@1" and listing.output_format == "class-label@1"
    assert listing.input_schema["type"] == "string"  # filled from the format
    assert listing.latency_p50_ms == 12 and listing.size_bytes == 1_500_000
    assert listing.version == "1.0.0" and listing.visibility == "public"
    fetched = await app.listings.get(ANONYMOUS, listing.id)
    assert fetched == listing
    versions = await app.listings.versions(alice, listing.id)
    assert [v.version for v in versions] == ["1.0.0"]


async def test_a_new_version_must_come_after_the_current_one(app: CatalogApp, alice: Actor) -> None:
    """updateListing took version 0.9.0 after 1.1.0: the listing then showed 0.9.0 as its version, and
    publishing without a number counted on from it (0.9.1). Precedence is semantic versioning's."""
    listing = await app.listings.create(alice, listing_data(version="1.1.0"))
    for older in ("0.9.0", "1.0.9", "1.1.0-rc.1", "1.1.0+rebuild"):
        with pytest.raises(Conflict, match=r"not newer than the listing's current version 1\.1\.0") as caught:
            await app.listings.update(alice, listing.id, {"version": older, "description": "back-port"})
        assert caught.value.details["field"] == "version"
    after = await app.listings.get(alice, listing.id)
    assert (after.version, after.description) == ("1.1.0", listing.description)
    assert [v.version for v in await app.listings.versions(alice, listing.id)] == ["1.1.0"]
    for newer in ("1.1.1-alpha", "1.1.1-alpha.2", "1.1.1-alpha.10", "1.1.1-beta", "1.1.1", "1.10.0"):
        assert (await app.listings.update(alice, listing.id, {"version": newer})).version == newer
    assert (await app.listings.update(alice, listing.id, {"version": "1.10.0", "tags": ["x"]})).tags == ["x"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kind": "spreadsheet"}, "kind"),
        ({"name": "  "}, "name"),
        ({"category": None}, "category"),
        ({"accuracy": 1.5}, "accuracy"),
        ({"accuracy": True}, "accuracy"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"resources": {"cpu": 0}}, "resources.cpu"),
        ({"resources": {"ram": 2}}, "resources.ram"),
        ({"input_format": "hologram"}, "input_format"),
        ({"output_schema": {"type": "nonsense"}}, "output_schema"),
        ({"tags": [1, 2]}, "tags"),
        ({"version": "one two"}, "version"),
        ({"version": "banana"}, "version"),  # manifests refused it, createListing took it
        ({"version": "1.0"}, "version"),
        ({"resources": {"memory_mb": 0}}, "resources.memory_mb"),
        ({"resources": {"memory_mb": 32}}, "resources.memory_mb"),  # under the 64 MiB sandbox floor
        ({"visibility": "secret"}, "visibility"),
        ({"training_resources": {"cpu": 4}}, "training_resources"),
        ({"shared_with": ["bob"]}, "shared_with"),
        ({"size": "lots"}, "size"),
        ({"size": 1e300}, "size"),
        ({"size": 2**63}, "size"),
        ({"size": "99999999999 TB"}, "size"),
        ({"size": float("inf")}, "size"),
        ({"size": float("nan")}, "size"),
        ({"timeout": 0}, "timeout"),
    ],
)
async def test_bad_fields_are_named_in_the_error(
    app: CatalogApp, alice: Actor, overrides: dict, field: str
) -> None:
    with pytest.raises(BadInput) as caught:
        await app.listings.create(alice, listing_data(**overrides))
    assert field in caught.value.message
    assert caught.value.details.get("field", "").startswith(field.split(".")[0])  # not only ``fields``
    assert (await app.listings.list(alice)).total_count == 0


async def test_anonymous_cannot_write(app: CatalogApp, alice: Actor) -> None:
    with pytest.raises(Unauthenticated):
        await app.listings.create(ANONYMOUS, listing_data())
    listing = await app.listings.create(alice, listing_data())
    with pytest.raises(Unauthenticated):
        await app.listings.update(ANONYMOUS, listing.id, {"description": "x"})
    with pytest.raises(Unauthenticated):
        await app.listings.delete(ANONYMOUS, listing.id)


async def test_duplicate_name_for_same_owner_conflicts(app: CatalogApp, alice: Actor, bob: Actor) -> None:
    await app.listings.create(alice, listing_data())
    with pytest.raises(Conflict):
        await app.listings.create(alice, listing_data())
    await app.listings.create(bob, listing_data(visibility="private"))  # another owner may use the name


async def test_a_requester_cannot_show_a_listing_of_their_own_words_to_others(
    app: CatalogApp, alice: Actor, bob: Actor
) -> None:
    """A requester account made a public listing with createListing although only producers publish
    (publishPackage refuses them): now FORBIDDEN naming visibility, on create (the default visibility is
    public) and on an edit widening it; a private listing of their own stays theirs to make."""
    for visibility in (None, "public", "shared"):
        extra = {} if visibility is None else {"visibility": visibility}
        with pytest.raises(Forbidden, match="only producer accounts publish listings") as refused:
            await app.listings.create(bob, listing_data(**extra))
        assert refused.value.code == "FORBIDDEN" and refused.value.details["field"] == "visibility"
    mine = await app.listings.create(bob, listing_data(visibility="private"))
    for change in ({"visibility": "public"}, {"visibility": "shared", "shared_with": ["alice"]}):
        with pytest.raises(Forbidden, match="only producer accounts publish listings"):
            await app.listings.update(bob, mine.id, change)
    assert (await app.listings.get(bob, mine.id)).visibility == "private"
    with pytest.raises(NotFound):
        await app.listings.get(alice, mine.id)
    assert (await app.listings.update(bob, mine.id, {"description": "still mine"})).visibility == "private"
    assert (await app.listings.create(alice, listing_data(name="published"))).visibility == "public"


async def test_only_owner_or_admin_modifies(app: CatalogApp, alice: Actor, bob: Actor, admin: Actor) -> None:
    listing = await app.listings.create(alice, listing_data())
    with pytest.raises(Forbidden):
        await app.listings.update(bob, listing.id, {"description": "hijacked"})
    with pytest.raises(Forbidden):
        await app.listings.delete(bob, listing.id)
    updated = await app.listings.update(admin, listing.id, {"description": "Fixed by an admin."})
    assert updated.description == "Fixed by an admin."
    await app.listings.delete(alice, listing.id)
    with pytest.raises(NotFound):
        await app.listings.get(alice, listing.id)
    assert app.backend.get([listing.id]) == {}


async def test_update_changes_given_fields_and_records_versions(app: CatalogApp, alice: Actor) -> None:
    listing = await app.listings.create(alice, listing_data())
    updated = await app.listings.update(alice, listing.id, {"version": "1.1.0", "latency_ms": 8})
    assert (updated.version, updated.latency_p50_ms, updated.accuracy) == ("1.1.0", 8, 0.91)
    versions = await app.listings.versions(alice, listing.id)
    assert [v.version for v in versions] == ["1.0.0", "1.1.0"]
    with pytest.raises(Conflict, match="version"):  # history is immutable: a version is never reused
        await app.listings.update(alice, listing.id, {"version": "1.0.0"})
    other = await app.listings.create(alice, listing_data("other-name"))
    with pytest.raises(Conflict, match="name"):
        await app.listings.update(alice, other.id, {"name": listing.name})
    with pytest.raises(BadInput, match="accuracy"):
        await app.listings.update(alice, listing.id, {"accuracy": -0.1})
    with pytest.raises(BadInput, match="category"):
        await app.listings.update(alice, listing.id, {"category": None})
    assert (await app.listings.get(alice, listing.id)).accuracy == 0.91


async def test_an_edit_keeps_the_listings_kind(app: CatalogApp, alice: Actor) -> None:
    """Publishing a version of another kind was refused, but updateListing turned a model into a dataset,
    breaking the trainings, pipelines and reviews that name it."""
    listing = await app.listings.create(alice, listing_data())
    with pytest.raises(BadInput, match=f"kind: listing {listing.id} is a model and stays one") as refused:
        await app.listings.update(alice, listing.id, {"kind": "dataset", "description": "Now data."})
    assert refused.value.details.get("field") == "kind"
    unchanged = await app.listings.get(alice, listing.id)
    assert unchanged.kind == "model" and unchanged.description == listing.description
    assert [v.version for v in await app.listings.versions(alice, listing.id)] == ["1.0.0"]
    same = await app.listings.update(alice, listing.id, {"kind": "model", "description": "Same kind."})
    assert same.kind == "model" and same.description == "Same kind."


async def test_update_reembeds_text_changes(app: CatalogApp, alice: Actor) -> None:
    listing = await app.listings.create(alice, listing_data())
    before = app.backend.get([listing.id])[listing.id].embedding.copy()
    await app.listings.update(alice, listing.id, {"description": "Detects objects in street photos."})
    after = app.backend.get([listing.id])[listing.id]
    assert after.description == "Detects objects in street photos."
    assert float(before @ after.embedding) < 0.99


async def test_documentation_words_find_the_listing_and_edits_reindex(app: CatalogApp, alice: Actor) -> None:
    """A requester's words that only the producer's README holds find the listing; a README edit alone
    (no re-embedding) reaches the keyword index in the same transaction."""
    created = await app.listings.create(
        alice, listing_data(documentation="## Usage\nFeed it scanned invoices from retailers.")
    )
    before = app.backend.get([created.id])[created.id].embedding.copy()
    assert [h.id for h in app.backend.keyword("invoices", ADMIN_VIEW, 5)] == [created.id]
    await app.listings.update(alice, created.id, {"documentation": "Works on shipping manifests."})
    assert app.backend.keyword("invoices", ADMIN_VIEW, 5) == []
    assert [h.id for h in app.backend.keyword("manifests", ADMIN_VIEW, 5)] == [created.id]
    assert np.array_equal(app.backend.get([created.id])[created.id].embedding, before)  # not embedded
    response = await app.search.search(alice, SearchRequest(text="shipping manifests", limit=3))
    assert response.results[0].listing.id == created.id


# --------------------------------------------------------------------------- visibility


async def _three_visibilities(app: CatalogApp, alice: Actor, bob: Actor) -> dict[str, str]:
    public = await app.listings.create(alice, listing_data("open-model"))
    private = await app.listings.create(alice, listing_data("secret-model", visibility="private"))
    shared = await app.listings.create(
        alice, listing_data("team-model", visibility="shared", shared_with=[bob.name])
    )
    assert shared.shared_with == [bob.account_id]
    return {"public": public.id, "private": private.id, "shared": shared.id}


async def test_visibility_on_every_read_path(app: CatalogApp, alice: Actor, bob: Actor, admin: Actor) -> None:
    ids = await _three_visibilities(app, alice, bob)
    carol = await make_actor(app, "carol", "requester")
    expected = {
        "anonymous": (ANONYMOUS, {"public"}),
        "carol": (carol, {"public"}),
        "bob": (bob, {"public", "shared"}),
        "alice": (alice, {"public", "private", "shared"}),
        "admin": (admin, {"public", "private", "shared"}),
    }
    for who, (actor, visible) in expected.items():
        for kind, listing_id in ids.items():
            if kind in visible:
                assert (await app.listings.get(actor, listing_id)).id == listing_id, who
            else:
                with pytest.raises(NotFound):  # never FORBIDDEN: existence must not leak
                    await app.listings.get(actor, listing_id)
        listed = {item.id for item in (await app.listings.list(actor)).items}
        assert listed == {ids[k] for k in visible}, who
        many = await app.listings.get_many(actor, list(ids.values()))
        assert set(many) == {ids[k] for k in visible}, who
        categories = await app.listings.categories(actor)
        assert [(c.name, c.count) for c in categories] == [("Natural Language Processing", len(visible))], who
        assert categories[0].subcategories[0].count == len(visible)


async def test_a_search_page_statement_kept_for_one_actor_never_serves_another(
    app: CatalogApp, alice: Actor, bob: Actor, admin: Actor
) -> None:
    """Hydration keeps its statement per actor (the ids are a parameter): pages of any size, read by
    actors in turn and again, each see exactly what their own visibility rule admits."""
    ids = await _three_visibilities(app, alice, bob)
    carol = await make_actor(app, "carol", "requester")
    visible = {ANONYMOUS: {"public"}, carol: {"public"}, bob: {"public", "shared"}}
    visible |= {alice: set(ids), admin: set(ids)}
    for actor in [*visible, *reversed(visible)]:
        for kinds in (["private"], ["shared", "public"], list(ids), ["private", "private"]):
            page = await app.listings.get_many(actor, [ids[kind] for kind in kinds])
            assert set(page) == {ids[kind] for kind in kinds if kind in visible[actor]}, (actor, kinds)


async def test_invisible_listing_cannot_be_modified_or_reviewed(
    app: CatalogApp, alice: Actor, bob: Actor
) -> None:
    private = await app.listings.create(alice, listing_data(visibility="private"))
    with pytest.raises(NotFound):
        await app.listings.update(bob, private.id, {"description": "x"})
    with pytest.raises(NotFound):
        await app.reviews.add(bob, private.id, 5, "great")


async def test_changing_shares_updates_access(app: CatalogApp, alice: Actor, bob: Actor) -> None:
    listing = await app.listings.create(alice, listing_data(visibility="private"))
    with pytest.raises(NotFound):
        await app.listings.get(bob, listing.id)
    await app.listings.update(alice, listing.id, {"visibility": "shared", "shared_with": ["bob"]})
    assert (await app.listings.get(bob, listing.id)).shared_with == [bob.account_id]
    assert app.backend.get([listing.id])[listing.id].shared_with == (bob.account_id,)
    with pytest.raises(BadInput, match="shared_with"):
        await app.listings.update(alice, listing.id, {"shared_with": ["nobody-by-this-name"]})
    await app.listings.update(alice, listing.id, {"visibility": "private", "shared_with": []})
    with pytest.raises(NotFound):
        await app.listings.get(bob, listing.id)


async def test_names_and_categories_that_show_nothing_or_reorder_are_refused(
    app: CatalogApp, alice: Actor
) -> None:
    """A name or category of only zero-width characters was taken (an invisible listing, an invisible
    category in Query.categories), a name padded with one looked identical to another, and a bidi
    override made a name display reversed ("abc\u202edef" shows as "abcfed")."""
    for field, value in (("name", "\u200b"), ("category", "\u200b\ufeff"), ("name", " \u2060 ")):
        with pytest.raises(BadInput, match=f"{field}: must not be empty"):
            await app.listings.create(alice, listing_data(**{field: value}))
    for field, value in (("name", "abc\u202edef"), ("category", "a\u2066b"), ("tags", ["x\u202ey"])):
        with pytest.raises(BadInput, match=f"{field}: contains bidirectional control characters"):
            await app.listings.create(alice, listing_data(**{field: value}))
    padded = await app.listings.create(
        alice, listing_data("\u200bsentiment-model\u200b", category="NLP\u200d")
    )
    assert (padded.name, padded.category) == ("sentiment-model", "NLP")
    kept = await app.listings.create(  # inside a name, joiners and right-to-left text are text
        alice, listing_data("👩\u200d💻 نموذج", description="line one\u202e\nline two")
    )
    assert kept.name == "👩\u200d💻 نموذج"
    assert (await app.listings.list(alice)).total_count == 2


async def test_shares_name_accounts_exactly(app: CatalogApp, alice: Actor, bob: Actor) -> None:
    """Account names are unique regardless of case, so "Bob" in shared_with is bob (it was no account, or
    another one), and an empty name is refused (it shared with nobody, silently)."""
    with pytest.raises(Conflict):
        await make_actor(app, "Bob", "requester")
    listing = await app.listings.create(
        alice, listing_data(visibility="shared", shared_with=["bob", "Bob", "BOB"])
    )
    assert listing.shared_with == [bob.account_id]
    assert (await app.listings.get(bob, listing.id)).id == listing.id
    for bad in ([""], ["bob", "  "]):
        with pytest.raises(BadInput, match="shared_with: an account name is empty") as caught:
            await app.listings.update(alice, listing.id, {"shared_with": bad})
        assert caught.value.details["field"] == "shared_with"
    assert (await app.listings.get(alice, listing.id)).shared_with == listing.shared_with
    tagged = await app.listings.update(alice, listing.id, {"tags": ["Vision", "vision", ""]})
    assert tagged.tags == ["Vision"]  # words stay distinct regardless of case, empty ones dropped


async def test_suspended_listing_is_hidden_from_others(app: CatalogApp, alice: Actor, bob: Actor) -> None:
    listing = await app.listings.create(alice, listing_data())
    await app.listings.set_system_fields(listing.id, status="suspended")
    with pytest.raises(NotFound):
        await app.listings.get(bob, listing.id)
    assert (await app.listings.get(alice, listing.id)).status == "suspended"


# --------------------------------------------------------------------------- browsing


async def test_cursor_pagination_walks_every_listing_once(app: CatalogApp, alice: Actor) -> None:
    from catalog.listing_input import parse_listing

    inputs = [parse_listing(listing_data(f"model-{i:02d}")) for i in range(23)]
    await app.listings.create_many(alice.account_id, inputs)
    seen: list[str] = []
    after = None
    while True:
        page = await app.listings.list(ANONYMOUS, first=5, after=after)
        assert page.total_count == 23
        seen += [item.name for item in page.items]
        if not page.has_next_page:
            break
        after = page.end_cursor
    assert sorted(seen) == [f"model-{i:02d}" for i in range(23)]
    assert len(seen) == len(set(seen))
    with pytest.raises(BadInput, match="after"):
        await app.listings.list(ANONYMOUS, after="not-a-cursor")
    # A stamp that leaves datetime's range in UTC was an OverflowError: INTERNAL to the client. Only a
    # signed one reaches that check now (a key leaked, a bug): it is still refused as not issued.
    unfiltered = filter_digest(ListingFilter())
    out_of_range = app.cursors.seal(LISTINGS_CURSOR, ["0001-01-01T00:00:00+14:00", "x", unfiltered])
    with pytest.raises(BadInput, match="not a cursor this service issued"):
        await app.listings.list(ANONYMOUS, after=out_of_range)
    with pytest.raises(BadInput, match="first"):
        await app.listings.list(ANONYMOUS, first=0)


async def test_a_listings_cursor_a_client_changed_or_took_elsewhere_is_refused(
    app: CatalogApp, alice: Actor
) -> None:
    """Listings cursors were base64 of ``[created_at, id]``: a client could page from any position it
    made up. They are signed now, for this list and this deployment."""
    for i in range(4):
        await app.listings.create(alice, listing_data(f"signed-{i}"))
    page = await app.listings.list(ANONYMOUS, first=2)
    assert page.cursors[-1] == page.end_cursor and len(page.cursors) == 2
    assert page.items[-1].id not in page.end_cursor  # opaque: not the row's id in clear
    rest = await app.listings.list(ANONYMOUS, first=2, after=page.cursors[0])
    assert [item.id for item in rest.items] == [page.items[1].id, *[i.id for i in rest.items[1:]]]

    stamp, _, digest = position_in(page.end_cursor)
    newer = [stamp.replace("20", "29", 1), "z" * 32, digest]  # would page from the head again
    for forged in (with_position(page.end_cursor, newer), page.end_cursor[:-2]):
        with pytest.raises(BadInput, match="not a cursor this service issued"):
            await app.listings.list(ANONYMOUS, first=2, after=forged)
    with pytest.raises(BadInput, match="not a cursor this service issued"):
        await app.listings.list(ANONYMOUS, after=app.cursors.seal("my-jobs", position_in(page.end_cursor)))
    with pytest.raises(BadInput, match="earlier version"):
        await app.listings.list(ANONYMOUS, after=old_style(position_in(page.end_cursor)))


async def test_a_listings_cursor_is_refused_under_another_filter(app: CatalogApp, alice: Actor) -> None:
    """A cursor issued under one filter gave a page of another filter's list (README: another list's
    cursor is refused). It carries a digest of its filter now: the same filter spelled alike pages on."""
    for i in range(3):
        await app.listings.create(alice, listing_data(f"nlp-{i}", category="nlp"))
        await app.listings.create(alice, listing_data(f"vision-{i}", category="vision"))
    page = await app.listings.list(ANONYMOUS, ListingFilter(category="nlp"), first=2)
    same = await app.listings.list(ANONYMOUS, ListingFilter(category=" NLP "), first=2, after=page.end_cursor)
    names = {item.name for item in page.items + same.items}
    assert names == {"nlp-0", "nlp-1", "nlp-2"} and not same.has_next_page
    for other in (None, ListingFilter(category="vision"), ListingFilter(category="nlp", kinds=("dataset",))):
        with pytest.raises(BadInput, match="under another filter") as caught:
            await app.listings.list(ANONYMOUS, other, first=2, after=page.end_cursor)
        assert caught.value.details == {"field": "after"}
    unfiltered = await app.listings.list(ANONYMOUS, first=2)
    with pytest.raises(BadInput, match="under another filter"):
        await app.listings.list(ANONYMOUS, ListingFilter(category="nlp"), after=unfiltered.end_cursor)


async def test_list_filters_and_category_counts(app: CatalogApp, alice: Actor) -> None:
    await app.listings.create(alice, listing_data("a"))
    await app.listings.create(alice, listing_data("b", subcategories=["Sentiment Analysis"]))
    await app.listings.create(
        alice,
        listing_data(
            "c",
            kind="dataset",
            category="Computer Vision",
            subcategory="Object Detection",
            input_format=None,
            output_format=None,
        ),
    )
    page = await app.listings.list(ANONYMOUS, ListingFilter(subcategory="sentiment analysis"))
    assert [i.name for i in page.items] == ["b"]
    page = await app.listings.list(ANONYMOUS, ListingFilter(kinds=("dataset",)))
    assert [i.name for i in page.items] == ["c"]
    page = await app.listings.list(ANONYMOUS, ListingFilter(input_format="text"))
    assert {i.name for i in page.items} == {"a", "b"}
    with pytest.raises(BadInput, match="kind"):
        await app.listings.list(ANONYMOUS, ListingFilter(kinds=("spaceship",)))
    for facet, field in (("input_format", "inputFormat"), ("output_format", "outputFormat")):
        # Named like search names it: the message used to say only "unknown data format 'bogus'".
        with pytest.raises(BadInput, match=f"^{field}: unknown data format") as caught:
            await app.listings.list(ANONYMOUS, ListingFilter(**{facet: "bogus"}))
        assert caught.value.details["field"] == field
    categories = {c.name: c for c in await app.listings.categories(ANONYMOUS)}
    nlp = categories["Natural Language Processing"]
    assert nlp.count == 2
    assert {(s.name, s.count) for s in nlp.subcategories} == {
        ("Text Classification", 2),
        ("Sentiment Analysis", 1),
    }
    assert categories["Computer Vision"].count == 1


async def test_a_category_with_accented_capitals_filters_exactly(app: CatalogApp, alice: Actor) -> None:
    """SQLite's lower() folds ASCII only: comparing it with a Python-lowered filter found nothing there."""
    await app.listings.create(alice, listing_data(category="Électronique", subcategory="Écoute"))
    by_category = await app.listings.list(ANONYMOUS, ListingFilter(category="Électronique"))
    by_subcategory = await app.listings.list(ANONYMOUS, ListingFilter(subcategory="Écoute"))
    assert by_category.total_count == by_subcategory.total_count == 1


async def test_one_version_rule_for_listings_and_manifests(app: CatalogApp, alice: Actor) -> None:
    """createListing took ``banana`` while a manifest required ``1.2.3``; publishing a next version then
    had no patch number to count up from. Both doors now share one rule, and an update follows it too."""
    listing = await app.listings.create(alice, listing_data(version="2.0.0-rc.1+build.7"))
    assert listing.version == "2.0.0-rc.1+build.7"
    manifest = {"name": "m", "kind": "dataset", "category": "nlp", "version": "2.0.0-rc.1+build.7"}
    assert parse_manifest(manifest, "dataset").version == "2.0.0-rc.1+build.7"
    with pytest.raises(BadInput, match=r"version: must look like 1\.2\.3") as caught:
        await app.listings.update(alice, listing.id, {"version": "banana"})
    assert caught.value.details["field"] == "version"
    with pytest.raises(ManifestError, match=r"version: .*must look like 1\.2\.3"):
        parse_manifest({**manifest, "version": "banana"}, "dataset")
    assert (await app.listings.get(alice, listing.id)).version == "2.0.0-rc.1+build.7"


async def test_a_listing_names_only_artifacts_its_owner_may_reference(
    app: CatalogApp, alice: Actor, bob: Actor, admin: Actor
) -> None:
    """``storageLocation: artifact:<digest>`` was taken for any digest, so any account could pin any blob
    (another account's included) against the garbage collection, which keeps what a listing names."""
    digest = ArtifactStore.from_settings(app.settings).put_bytes(b"alice's packaged model").digest
    packaged = await app.listings.create(alice, listing_data(name="packaged"))
    async with app.db.session() as session:  # what publishing writes for alice's listing
        session.add(
            ListingVersion(
                listing_id=packaged.id, version="1.0.1", artifact_kind="package", artifact_digest=digest
            )
        )
    pinned = f"artifact:{digest}"
    with pytest.raises(BadInput, match=f"storage_location: {digest} is not an artifact of yours") as refused:
        await app.listings.create(bob, listing_data(visibility="private", storage_location=pinned))
    assert refused.value.details["field"] == "storage_location"
    bobs = await app.listings.create(bob, listing_data(visibility="private", storage="s3://bucket/model"))
    with pytest.raises(BadInput, match="is not an artifact of yours"):
        await app.listings.update(bob, bobs.id, {"storage_location": pinned})
    with pytest.raises(BadInput, match="is not an artifact of yours"):  # a digest nobody stored
        await app.listings.create(
            alice, listing_data(name="x", storage_location="artifact:sha256:" + "0" * 64)
        )
    with pytest.raises(BadInput, match="an artifact reference is 'artifact:sha256:'") as malformed:
        await app.listings.create(alice, listing_data(name="y", storage_location="artifact:latest"))
    assert malformed.value.details["field"] == "storage_location"
    assert (await app.listings.get(bob, bobs.id)).storage_location == "s3://bucket/model"

    mirror = await app.listings.create(alice, listing_data(name="mirror", storage_location=pinned))
    assert mirror.storage_location == pinned  # her own package
    assert (await app.listings.update(alice, mirror.id, {"description": "kept"})).storage_location == pinned
    assert (
        await app.listings.update(admin, bobs.id, {"storage_location": pinned})
    ).storage_location == pinned
    assert (await app.listings.update(bob, bobs.id, {"tags": ["kept"]})).storage_location == pinned


@pytest.mark.parametrize("side", ["input", "output"])
async def test_a_schema_that_does_not_refine_its_format_names_its_own_side(
    app: CatalogApp, alice: Actor, side: str
) -> None:
    """An output schema refused by class-label@1 was reported as 'outputFormat: input_schema does not
    refine...' with field outputFormat: the output side was checked in the input side's place."""
    schema = {"type": "object", "properties": {"other": {"type": "string"}}}
    with pytest.raises(BadInput) as caught:
        await app.listings.create(alice, listing_data(**{f"{side}_schema": schema}))
    assert caught.value.message.startswith(f"{side}_schema does not refine format")
    other = "output" if side == "input" else "input"
    assert f"{other}_schema" not in caught.value.message
    assert caught.value.details["field"] == f"{side}_schema"
    created = await app.listings.create(alice, listing_data())
    with pytest.raises(BadInput) as caught:
        await app.listings.update(alice, created.id, {f"{side}_schema": schema})
    assert caught.value.details["field"] == f"{side}_schema"
    assert (await app.listings.get(alice, created.id)).output_schema == created.output_schema
