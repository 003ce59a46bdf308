"""Stored versions from before the one version rule (``catalog.listing_input.VERSION_RULE``), renumbered.

Every door checks a version on input now, but rows written before the rule can hold anything (``v2``,
``1.0``, ``banana``), and publishing counts patch numbers up from a listing's version
(``listing_writer.next_patch``): from a free-form one it restarts at ``1.0.0``. Until the first release
there is one migration, regenerated from ``infra/tables.py``, so a data step there would never reach a
database already at that revision; this is an operator's command instead (``mlrepo fix-versions``).

Renumbering keeps what the version said: a numeric one is padded (``v2`` -> ``2.0.0``, ``1.0-rc1`` ->
``1.0.0-rc1``), anything else becomes ``0.0.0+legacy.<the old text>`` (characters the rule does not allow
as ``-``), and each renumbered version row's notes record the old text word for word. A listing's
versions stay unique: a renumbering that would meet another version of the same listing takes the
``+legacy.<old>`` form, then a counter. A listing's current ``version`` follows its version row.

Idempotent and recoverable: only versions that break the rule are touched, so a second run finds
nothing; each listing is renumbered in one transaction, so an interrupted run leaves every listing either
done or untouched, and running it again finishes the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sqlalchemy import select

from catalog.listing_input import MAX_VERSION_CHARS, VERSION_PATTERN
from infra.db import Database
from infra.tables import Listing, ListingVersion, utcnow

# A numeric version with one to three parts, an optional leading "v", then what the rule allows after.
_NUMERIC = re.compile(r"^[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?((?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)$")
_NOT_ALLOWED = re.compile(r"[^0-9A-Za-z.-]+")
LEGACY_CORE = "0.0.0"
NOTE = "renumbered from {old!r} to {new!r} by mlrepo fix-versions (the one version rule)"


def follows_rule(version: str) -> bool:
    return len(version) <= MAX_VERSION_CHARS and VERSION_PATTERN.match(version) is not None


def renumbered(old: str, taken: set[str]) -> str:
    """A version that follows the rule for ``old``, not in ``taken`` (the listing's other versions)."""
    text = old.strip()
    numeric = _NUMERIC.match(text)
    if numeric is not None:
        major, minor, patch, rest = numeric.groups()
        core = f"{int(major)}.{int(minor or 0)}.{int(patch or 0)}"
        candidate = core + rest
        if follows_rule(candidate) and candidate not in taken:
            return candidate
    if numeric is None or len(core) > MAX_VERSION_CHARS // 2:  # room for the old text after it
        core = LEGACY_CORE
    legacy = _NOT_ALLOWED.sub("-", text).strip("-") or "empty"
    for counter in range(len(taken) + 2):
        suffix = f".{counter}" if counter else ""
        room = MAX_VERSION_CHARS - len(core) - len("+legacy.") - len(suffix)
        candidate = f"{core}+legacy.{legacy[:room]}{suffix}"
        if candidate not in taken:
            return candidate
    raise AssertionError("unreachable: more counters than taken versions")


@dataclass(frozen=True)
class Renumbering:
    listing_id: str
    listing_name: str
    old: str
    new: str
    what: str  # "version" (a version row; its notes keep the old text) | "listing" (the current version)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def plan_listing(listing: Listing, versions: Iterable[ListingVersion]) -> dict[str, str]:
    """Old -> new for the listing's versions (rows first, oldest first; then its current version)."""
    rows = sorted(versions, key=lambda row: (row.created_at, row.id))
    taken = {row.version for row in rows if follows_rule(row.version)}
    plan: dict[str, str] = {}
    for row in rows:
        if not follows_rule(row.version) and row.version not in plan:
            plan[row.version] = renumbered(row.version, taken)
            taken.add(plan[row.version])
    if not follows_rule(listing.version) and listing.version not in plan:
        plan[listing.version] = renumbered(listing.version, taken)
    return plan


async def _listings_to_fix(db: Database) -> list[str]:
    async with db.session() as session:
        ids = set()
        for listing_id, version in (await session.execute(select(Listing.id, Listing.version))).all():
            if not follows_rule(version):
                ids.add(listing_id)
        rows = await session.execute(select(ListingVersion.listing_id, ListingVersion.version))
        for listing_id, version in rows.all():
            if not follows_rule(version):
                ids.add(listing_id)
    return sorted(ids)


async def fix_versions(db: Database, *, apply: bool) -> list[Renumbering]:
    """Every stored version that breaks the rule and what it becomes; with ``apply``, renumbered."""
    done: list[Renumbering] = []
    for listing_id in await _listings_to_fix(db):
        async with db.session() as session:  # one listing, one transaction
            listing = await session.get(Listing, listing_id, with_for_update=not db.is_sqlite)
            if listing is None:
                continue  # deleted meanwhile: its versions went with it
            versions = (
                await session.scalars(select(ListingVersion).where(ListingVersion.listing_id == listing_id))
            ).all()
            plan = plan_listing(listing, versions)
            for row in sorted(versions, key=lambda row: (row.created_at, row.id)):
                new = plan.get(row.version)
                if new is None:
                    continue
                done.append(Renumbering(listing.id, listing.name, row.version, new, "version"))
                if apply:
                    note = NOTE.format(old=row.version, new=new)
                    row.version, row.notes = new, f"{row.notes}; {note}" if row.notes else note
            new = plan.get(listing.version)
            if new is not None:
                done.append(Renumbering(listing.id, listing.name, listing.version, new, "listing"))
                if apply:
                    listing.version = new
                    listing.updated_at = utcnow()  # a serving process's index picks it up at its next sync
    return done
