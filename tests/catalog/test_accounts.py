"""Accounts and tokens: unique names, secrets stored only as hashes, revocation."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from catalog_helpers import listing_data
from sqlalchemy import make_url, select
from sqlalchemy.exc import IntegrityError

from catalog.account_duplicates import find_duplicate_names
from catalog.accounts import AccountService, hash_token
from catalog.app import CatalogApp
from catalog.listing_input import MIN_MEMORY_MB
from infra.db import Database
from infra.errors import BadInput, Conflict, NotFound, Unauthenticated
from infra.settings import Settings
from infra.tables import Account, ApiToken


async def test_account_names_are_unique(app: CatalogApp) -> None:
    await app.accounts.create("ada", "producer")
    with pytest.raises(Conflict):
        await app.accounts.create("ada", "requester")


async def test_account_names_are_unique_whatever_their_case(app: CatalogApp) -> None:
    """ "alice" and "ALICE" were two accounts: a producer's name shows on every listing, so one could pass
    for the other."""
    alice = await app.accounts.create("alice", "producer")
    for other in ("ALICE", "Alice", "alIce"):
        with pytest.raises(Conflict, match="'alice' already exists") as taken:
            await app.accounts.create(other, "producer")
        assert taken.value.details["field"] == "name"
    assert (await app.accounts.resolve("ALICE")).id == alice.id  # one name, found in any case
    assert (await app.accounts.find_by_name("Alice")).id == alice.id
    assert (await app.accounts.ensure("ALICE")).id == alice.id


async def test_the_database_refuses_a_second_name_differing_only_by_case(app: CatalogApp) -> None:
    """What stops two concurrent registrations from both winning: the unique key, not the check before."""
    await app.accounts.create("alice", "producer")
    with pytest.raises(IntegrityError):
        async with app.db.session() as session:
            session.add(Account(name="ALICE", role="producer"))
    results = await asyncio.gather(
        app.accounts.create("bob", "producer"), app.accounts.create("BOB", "producer"), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["AccountInfo", "Conflict"]


@pytest.mark.parametrize(
    "name",
    [
        "\uff41lice",  # full-width "a": NFKC makes it "alice"
        "\u0430lice",  # Cyrillic "a", looks the same
        "alice\u200b",  # zero-width space
        "ali\u200dce",  # zero-width joiner
        "\u202eecila",  # right-to-left override: displays as "alice"
        "ali\u00adce",  # soft hyphen: shows nothing
    ],
)
async def test_look_alike_invisible_and_bidi_account_names_are_refused(app: CatalogApp, name: str) -> None:
    await app.accounts.create("alice", "producer")
    with pytest.raises(BadInput, match="ASCII letters") as refused:
        await app.accounts.create(name, "producer")
    assert refused.value.details["field"] == "name"


@pytest.mark.parametrize("email", ["bob", "bob@", "@example.org", "bob smith@example.org", "a@b@c",
                                   "bob@-x.org", "bob@example..org", "x" * 250 + "@example.org"])  # fmt: skip
async def test_an_email_that_is_not_an_address_is_refused(app: CatalogApp, email: str) -> None:
    with pytest.raises(BadInput, match="email must be an address") as refused:
        await app.accounts.create("bob", "requester", email=email)
    assert refused.value.details["field"] == "email"
    assert await app.accounts.find_by_name("bob") is None


async def test_an_email_is_kept_trimmed_and_an_empty_one_is_none(app: CatalogApp) -> None:
    bob = await app.accounts.create("bob", "requester", email=" bob.smith+ml@mail.example.org ")
    assert bob.email == "bob.smith+ml@mail.example.org"
    assert (await app.accounts.create("cy", "requester", email="  ")).email is None


@pytest.mark.parametrize("name", ["", "a b", "-lead", "x" * 101, "semi;colon"])
async def test_bad_account_names_are_refused(app: CatalogApp, name: str) -> None:
    with pytest.raises(BadInput):
        await app.accounts.create(name, "producer")


async def test_unknown_role_is_refused(app: CatalogApp) -> None:
    with pytest.raises(BadInput, match="role"):
        await app.accounts.create("ada", "superuser")


async def test_token_authenticates_and_is_stored_only_as_hash(app: CatalogApp) -> None:
    account = await app.accounts.create("ada", "producer")
    issued = await app.accounts.create_token(account.id, "laptop")
    actor = await app.accounts.authenticate(issued.secret)
    assert (actor.account_id, actor.role, actor.name) == (account.id, "producer", "ada")
    async with app.db.session() as session:
        stored = (await session.scalars(select(ApiToken))).all()
    assert [t.token_hash for t in stored] == [hash_token(issued.secret)]
    assert all(issued.secret not in (t.token_hash, t.name) for t in stored)


async def test_wrong_missing_and_revoked_tokens_are_unauthenticated(app: CatalogApp) -> None:
    account = await app.accounts.create("ada", "producer")
    issued = await app.accounts.create_token(account.id)
    for bad in (None, "", "mlr_not-a-token", issued.secret + "x"):
        with pytest.raises(Unauthenticated):
            await app.accounts.authenticate(bad)
    await app.accounts.revoke_token(account.as_actor(), issued.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await app.accounts.authenticate(issued.secret)


async def test_only_admins_issue_tokens_for_others(app: CatalogApp) -> None:
    ada = (await app.accounts.create("ada", "producer")).as_actor()
    bob = await app.accounts.create("bob", "requester")
    root = (await app.accounts.create("root", "admin")).as_actor()
    with pytest.raises(NotFound, match=f"no account named '{bob.id}'"):  # as an unknown account
        await app.accounts.issue_token(ada, bob.id)
    issued = await app.accounts.issue_token(root, bob.id)
    assert (await app.accounts.authenticate(issued.secret)).account_id == bob.id
    with pytest.raises(NotFound):  # someone else's token id looks like no token at all
        await app.accounts.revoke_token(ada, issued.id)


async def test_a_token_label_is_checked_not_cut(app: CatalogApp) -> None:
    """An empty label was stored as "", a 300-character one cut to 100 characters, both silently."""
    ada = (await app.accounts.create("ada", "producer")).as_actor()
    for bad in ("", "   ", "x" * 101):
        with pytest.raises(BadInput, match="name") as caught:
            await app.accounts.issue_token(ada, name=bad)
        assert caught.value.details["field"] == "name"
    assert (await app.accounts.issue_token(ada, name=" laptop ")).name == "laptop"
    assert [t.name for t in await app.accounts.tokens(ada)] == ["laptop"]


async def test_the_operator_sets_quotas_and_only_the_values_given_change(app: CatalogApp) -> None:
    ada = await app.accounts.create("ada", "requester")
    assert (ada.quota_cpu, ada.quota_memory_mb, ada.quota_gpu) == (4.0, 8192, 0)
    changed = await app.accounts.set_quota("ada", gpu=2)
    assert (changed.quota_cpu, changed.quota_memory_mb, changed.quota_gpu) == (4.0, 8192, 2)
    changed = await app.accounts.set_quota(ada.id, cpu=0.5, memory_mb=1024)
    assert (changed.quota_cpu, changed.quota_memory_mb, changed.quota_gpu) == (0.5, 1024, 2)
    assert (await app.accounts.get(ada.id)).quota_gpu == 2  # stored, not only returned


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"cpu": -1}, "cpu"),
        ({"cpu": float("nan")}, "cpu"),
        ({"cpu": 5000}, "cpu"),
        ({"memory_mb": 1.5}, "memory_mb"),
        ({"gpu": 65}, "gpu"),
        ({"gpu": True}, "gpu"),
        ({"gpu": 1, "memory_mb": -5}, "memory_mb"),
        # Under the smallest sandbox no job can run (the floor jobs themselves are held to): was accepted.
        ({"memory_mb": 10}, "memory_mb"),
        ({"memory_mb": 0}, "memory_mb"),
    ],
)
async def test_bad_quotas_are_refused_and_change_nothing(app: CatalogApp, values: dict, field: str) -> None:
    await app.accounts.create("ada", "requester")
    with pytest.raises(BadInput, match=f"quota {field} must be") as refused:
        await app.accounts.set_quota("ada", **values)
    assert refused.value.details["field"] == field
    if field == "memory_mb" and values["memory_mb"] >= 0:
        assert f"from {MIN_MEMORY_MB} to" in str(refused.value)
    ada = await app.accounts.resolve("ada")
    assert (ada.quota_cpu, ada.quota_memory_mb, ada.quota_gpu) == (4.0, 8192, 0)


async def test_quota_of_an_unknown_account_is_not_found(app: CatalogApp) -> None:
    with pytest.raises(NotFound):
        await app.accounts.set_quota("nobody", gpu=1)


async def test_a_tokens_use_is_noted_to_the_minute(app: CatalogApp) -> None:
    account = await app.accounts.create("ada", "producer")
    issued = await app.accounts.create_token(account.id)
    assert [t.last_used_at for t in await app.accounts.tokens(None, account.id)] == [None]
    await app.accounts.authenticate(issued.secret)
    (first,) = [t.last_used_at for t in await app.accounts.tokens(None, account.id)]
    assert first is not None
    await app.accounts.authenticate(issued.secret)  # within the minute: no second write
    assert [t.last_used_at for t in await app.accounts.tokens(None, account.id)] == [first]


async def test_a_locked_sqlite_database_does_not_refuse_a_valid_token(sqlite_settings: Settings) -> None:
    """On SQLite another connection (here: a worker process, a CLI import) may hold the write lock past
    the busy timeout; the token's first use cannot stamp ``last_used_at`` then, and must still pass."""
    db = Database.from_settings(sqlite_settings.model_copy(update={"sqlite_busy_timeout_s": 0.2}))
    accounts = AccountService(db)
    account = await accounts.create("ada", "producer")
    issued = await accounts.create_token(account.id)
    holder = sqlite3.connect(make_url(sqlite_settings.resolved_database_url).database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held until the end of the check
        actor = await accounts.authenticate(issued.secret)
        assert actor.account_id == account.id
        holder.execute("ROLLBACK")
        assert [t.last_used_at for t in await accounts.tokens(None, account.id)] == [None]
        await accounts.authenticate(issued.secret)  # once the lock is free, the use is noted
        assert [t.last_used_at is not None for t in await accounts.tokens(None, account.id)] == [True]
    finally:
        holder.close()
        await db.dispose()


async def test_names_stored_before_the_case_rule_are_found(app: CatalogApp) -> None:
    """A database from before names were unique regardless of case can hold "alice" and "ALICE": the
    operator's report finds each such group (``mlrepo duplicate-accounts``), and only those."""
    alice = await app.accounts.create("alice", "producer")
    await app.accounts.create("bob", "requester")
    assert await find_duplicate_names(app.db) == []
    async with app.db.session() as session:  # as the older deployment stored them: no shared key
        for name in ("ALICE", "Alice"):
            session.add(Account(name=name, name_key=f"legacy:{name}", role="producer"))
    await app.listings.create(alice.as_actor(), listing_data())
    (group,) = await find_duplicate_names(app.db)
    assert group.key == "alice"
    assert [(a.name, a.listings) for a in group.accounts] == [("ALICE", 0), ("Alice", 0), ("alice", 1)]
