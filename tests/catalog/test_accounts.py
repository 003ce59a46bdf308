"""Accounts and tokens: unique names, secrets stored only as hashes, revocation."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import make_url, select

from catalog.accounts import AccountService, hash_token
from catalog.app import CatalogApp
from catalog.listing_input import MIN_MEMORY_MB
from infra.db import Database
from infra.errors import BadInput, Conflict, Forbidden, NotFound, Unauthenticated
from infra.settings import Settings
from infra.tables import ApiToken


async def test_account_names_are_unique(app: CatalogApp) -> None:
    await app.accounts.create("ada", "producer")
    with pytest.raises(Conflict):
        await app.accounts.create("ada", "requester")


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
    with pytest.raises(Forbidden):
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
