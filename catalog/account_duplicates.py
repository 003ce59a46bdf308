"""Account names that are one name regardless of case, stored before that rule (``mlrepo
duplicate-accounts``).

Names are unique by ``infra.tables.account_name_key`` now ("alice" and "ALICE" are one), and the unique
``accounts.name_key`` column keeps them so. A database created before that rule can hold both, and until
the first release there is one migration, regenerated from ``infra/tables.py``: a step there never reaches
a database already at that revision. This finds them, so an operator can decide which account keeps the
name (merging or renaming accounts is a person's decision: their listings, tokens and jobs differ).

It reads only ``accounts.id``, ``accounts.name`` and the listings' owners, the columns every schema had,
so it runs on a database from before the ``name_key`` column too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

from sqlalchemy import text

from infra.db import Database
from infra.tables import account_name_key

_ACCOUNTS = text(
    "SELECT a.id, a.name, COUNT(l.id) AS listings FROM accounts a "
    "LEFT JOIN listings l ON l.owner_id = a.id GROUP BY a.id, a.name"
)


@dataclass(frozen=True, slots=True)
class NamedAccount:
    id: str
    name: str
    listings: int


@dataclass(frozen=True, slots=True)
class DuplicateName:
    """Accounts whose names are the same name (``key``), by name then id."""

    key: str
    accounts: list[NamedAccount]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def find_duplicate_names(db: Database) -> list[DuplicateName]:
    """Every group of two or more accounts whose names share ``account_name_key``, by key."""
    async with db.session() as session:
        rows = (await session.execute(_ACCOUNTS)).all()
    groups: dict[str, list[NamedAccount]] = defaultdict(list)
    for row in rows:
        groups[account_name_key(row.name)].append(NamedAccount(row.id, row.name, int(row.listings)))
    return [
        DuplicateName(key, sorted(accounts, key=lambda a: (a.name, a.id)))
        for key, accounts in sorted(groups.items())
        if len(accounts) > 1
    ]
