"""Versions stored before the one version rule, renumbered by ``mlrepo fix-versions`` (SQLite and
PostgreSQL): nothing lost, idempotent, one listing per transaction."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.legacy_versions import fix_versions, follows_rule, renumbered
from catalog.publishing.listing_writer import next_patch
from infra.tables import Listing, ListingVersion


def test_a_numeric_version_is_padded_and_anything_else_kept_as_build_metadata() -> None:
    assert renumbered("v2", set()) == "2.0.0"
    assert renumbered("1.0", set()) == "1.0.0"
    assert renumbered("1.0-rc1", set()) == "1.0.0-rc1"
    assert renumbered(" 1.2.3 ", set()) == "1.2.3"
    assert renumbered("banana", set()) == "0.0.0+legacy.banana"
    assert renumbered("release 2019/05", set()) == "0.0.0+legacy.release-2019-05"
    assert renumbered("1.2.3.4", set()) == "0.0.0+legacy.1.2.3.4"
    assert renumbered("", set()) == "0.0.0+legacy.empty"
    # Another version of the listing already has the padded number: unique all the same.
    assert renumbered("1.0", {"1.0.0"}) == "1.0.0+legacy.1.0"
    assert renumbered("banana", {"0.0.0+legacy.banana"}) == "0.0.0+legacy.banana.1"
    long = renumbered("x" * 80, set())
    assert follows_rule(long) and long.startswith("0.0.0+legacy.xxx")


async def _listing(app: CatalogApp, actor: Actor, name: str, *legacy: str) -> str:
    """A listing whose version rows (one per ``legacy`` version, oldest first) and current version were
    written before the rule: stored as they are, as the rows of an older deployment hold them."""
    view = await app.listings.create(actor, {"name": name, "kind": "model", "category": "Vision"})
    async with app.db.session() as session:
        first = await session.scalar(select(ListingVersion).where(ListingVersion.listing_id == view.id))
        assert first is not None
        first.version = legacy[0]
        for age, version in enumerate(legacy[1:], 1):
            session.add(
                ListingVersion(
                    listing_id=view.id,
                    version=version,
                    artifact_kind="metadata",
                    notes="fields edited" if version == "1.0" else "",
                    created_at=first.created_at + timedelta(seconds=age),
                )
            )
        await session.execute(update(Listing).where(Listing.id == view.id).values(version=legacy[-1]))
    return view.id


async def _versions(app: CatalogApp, listing_id: str) -> tuple[str, list[tuple[str, str]]]:
    async with app.db.session() as session:
        listing = await session.get(Listing, listing_id)
        rows = await session.scalars(
            select(ListingVersion)
            .where(ListingVersion.listing_id == listing_id)
            .order_by(ListingVersion.created_at)
        )
        return listing.version, [(row.version, row.notes) for row in rows]


async def test_stored_versions_from_before_the_rule_are_renumbered_without_losing_them(
    catalog_app: CatalogApp, alice: Actor
) -> None:
    """Publishing counts patch numbers up from a listing's version; from ``banana`` it restarted at
    1.0.0, and the versions themselves showed whatever an older deployment stored. No migration fixed
    them (the single initial migration never reaches a database already at its revision)."""
    odd = await _listing(catalog_app, alice, "odd versions", "v1", "1.0", "1.0.0", "banana")
    fine = await _listing(catalog_app, alice, "fine versions", "1.0.0")
    before = {odd: await _versions(catalog_app, odd), fine: await _versions(catalog_app, fine)}

    planned = await fix_versions(catalog_app.db, apply=False)
    assert [(c.old, c.new, c.what) for c in planned] == [
        ("v1", "1.0.0+legacy.v1", "version"),
        ("1.0", "1.0.0+legacy.1.0", "version"),
        ("banana", "0.0.0+legacy.banana", "version"),
        ("banana", "0.0.0+legacy.banana", "listing"),
    ]
    assert {c.listing_id for c in planned} == {odd}
    assert {odd: await _versions(catalog_app, odd), fine: await _versions(catalog_app, fine)} == before

    applied = await fix_versions(catalog_app.db, apply=True)
    assert applied == planned
    current, rows = await _versions(catalog_app, odd)
    assert current == "0.0.0+legacy.banana" and all(follows_rule(version) for version, _ in rows)
    assert rows[1] == (
        "1.0.0+legacy.1.0",
        "fields edited; renumbered from '1.0' to '1.0.0+legacy.1.0' by mlrepo fix-versions "
        "(the one version rule)",
    )
    assert rows[2] == before[odd][1][2]  # a version that followed the rule is untouched
    assert await _versions(catalog_app, fine) == before[fine]
    assert next_patch(current) == "0.0.1"

    assert await fix_versions(catalog_app.db, apply=True) == []  # idempotent
    assert await _versions(catalog_app, odd) == (current, rows)


async def test_the_index_of_a_serving_process_follows_the_renumbered_listing(
    catalog_app: CatalogApp, alice: Actor
) -> None:
    """The command writes rows only (a running ``mlrepo serve`` holds the index): the listing's
    ``updated_at`` moves, so that process's next sync reads the new version."""
    odd = await _listing(catalog_app, alice, "odd versions", "2")
    async with catalog_app.db.session() as session:
        stamped = (await session.get(Listing, odd)).updated_at
    await fix_versions(catalog_app.db, apply=True)
    async with catalog_app.db.session() as session:
        listing = await session.get(Listing, odd)
        assert listing.version == "2.0.0" and listing.updated_at > stamped
