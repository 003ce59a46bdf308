"""Listings: create, update, delete, read — with access rules on every path and the index kept in step.

A listing and its index entry are written together or not at all: the embedding is computed first (outside
the transaction, so no lock is held while the model runs), the row is written and flushed, the index is
updated before the commit, and if the commit fails the index change is undone.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, bindparam, delete, exists, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from catalog.access import (
    AUDIENCE_REFUSAL,
    can_modify,
    can_see,
    may_show_to_others,
    visible_among,
    visible_to,
)
from catalog.actors import Actor
from catalog.artifact_refs import REFERENCING_COLUMNS, every_digest, refuse_foreign_artifacts
from catalog.choices import parse_choices
from catalog.enums import ListingKind, Visibility
from catalog.formats import normalize_format, validate_listing_io
from catalog.indexing import ListingIndex, shares_of, shares_read
from catalog.keyset import check_page_size, decode_cursor, encode_cursor, newest_first
from catalog.listing_input import (
    ListingFields,
    ListingInput,
    check_version_newer,
    parse_listing,
    parse_listing_patch,
)
from catalog.listing_view import VIEW_SELECT, ListingView
from catalog.pipelines.audience import refuse_unreachable_listing
from catalog.pipelines.published_chain import refuse_unfit_listing
from catalog.provenance import refuse_redistribution
from catalog.versions import RUNS_CODE, latest_published_version
from infra.cursor_signing import CursorSigner
from infra.db import Database
from infra.errors import BadInput, Conflict, Forbidden, NotFound, Unauthenticated
from infra.tables import Account, Listing, ListingShare, ListingVersion, Pipeline, account_name_key, utcnow

DEFAULT_PAGE_SIZE = 20
LISTINGS_CURSOR = "listings"  # what a cursor of ``list`` is signed for: no other list takes it
PAGE_IDS = "page_ids"  # the expanding parameter of ``_visible_page_select``
# Set by mlrepo itself (publishing, verification, job metrics), never by a producer's input.
SYSTEM_FIELDS = frozenset(
    {
        "verification_status",
        "status",
        "latency_p50_ms",
        "latency_p95_ms",
        "accuracy",
        "accuracy_metric",
        "accuracy_dataset",
        "storage_location",
        "version",
        "size_bytes",
        "producer_name",
    }
)
EMBEDDED_FIELDS = (
    "name",
    "category",
    "subcategories",
    "tags",
    "description",
)  # what the vector is built from
IO_FIELDS = ("input_format", "input_schema", "output_format", "output_schema")


@dataclass(frozen=True, slots=True)
class ListingFilter:
    """Exact filters for browsing (``list``); text search goes through ``SearchService``."""

    kinds: tuple[str, ...] | None = None
    category: str | None = None
    subcategory: str | None = None
    owner_id: str | None = None
    input_format: str | None = None
    output_format: str | None = None


def filter_digest(filter: ListingFilter) -> str:
    """What a ``list`` cursor carries of the filter it was issued under (README: another list's cursor is
    refused; the same list under another filter is another list). Spellings the filter treats alike
    (kinds in any order, a category in other capitals, a format's aliases) digest alike."""
    material = {
        "kinds": sorted(set(filter.kinds)) if filter.kinds else None,
        "category": filter.category.strip().lower() if filter.category else None,
        "subcategory": filter.subcategory.lower() if filter.subcategory else None,
        "owner_id": filter.owner_id or None,
        # Checked by ``_filter_conditions`` first: a format here is one ``normalize_format`` takes.
        "input_format": normalize_format(filter.input_format) if filter.input_format else None,
        "output_format": normalize_format(filter.output_format) if filter.output_format else None,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Page:
    items: list[ListingView]
    end_cursor: str | None
    has_next_page: bool
    total_count: int
    cursors: list[str]  # cursors[i] resumes after items[i] (the edges' cursors)


@dataclass(frozen=True, slots=True)
class PreparedListing:
    """A validated row not yet written, with the account ids it is shared with."""

    row: Listing
    shares: list[str]


@dataclass(frozen=True, slots=True)
class SubcategoryCount:
    name: str
    count: int


@dataclass(frozen=True, slots=True)
class CategoryCount:
    name: str
    count: int
    subcategories: list[SubcategoryCount]


async def require_modifiable(
    session: AsyncSession, actor: Actor, row: Listing | None, listing_id: str, refusal: str
) -> Listing:
    """``row`` when ``actor`` may change it. A listing the actor cannot even see is NOT_FOUND with the
    message of a missing id (FORBIDDEN would confirm that a private listing exists); one they see but do
    not own is FORBIDDEN with ``refusal``. Every write path (edits, publishing versions) goes through here."""
    if row is None:
        raise NotFound(f"no listing with id {listing_id!r}")
    if not can_modify(actor, row):
        shares = await shares_of(session, [row.id])
        if not can_see(actor, row, set(shares.get(row.id, []))):
            raise NotFound(f"no listing with id {listing_id!r}")
        raise Forbidden(refusal)
    return row


# ---------------------------------------------------------------------------- helpers


async def refuse_requester_audience(session: AsyncSession, actor: Actor, row: Listing) -> None:
    """FORBIDDEN when ``actor`` widens the audience of a listing only producers could show to others: a
    requester's listing made by ``createListing`` (its versions are bare metadata) stays private, while
    one mlrepo wrote for them (a trained model's package, a published pipeline) may be shared."""
    if actor.is_producer:
        return
    written_by_platform = await latest_published_version(session, row.id) is not None or (
        row.kind == ListingKind.PIPELINE
        and await session.scalar(select(exists().where(Pipeline.listing_id == row.id)))
    )
    if not may_show_to_others(actor, bool(written_by_platform)):
        raise Forbidden(AUDIENCE_REFUSAL, field="visibility")


async def metadata_version(session: AsyncSession, listing_id: str, version: str) -> ListingVersion:
    """The version row of an edit that changes only the listing's fields.

    Jobs, verification and pipelines run a listing's latest version. A version number given by an edit
    changes no code, so its row points at the artifact of the latest version that has one (its package
    or image, manifest, encryption and verification signatures): the listing keeps running what it ran.
    A listing that never had an artifact (created from fields alone) gets a bare ``metadata`` row."""
    published = await latest_published_version(session, listing_id)
    if published is None:
        return ListingVersion(listing_id=listing_id, version=version, artifact_kind="metadata")
    return ListingVersion(
        listing_id=listing_id,
        version=version,
        artifact_kind=published.artifact_kind,
        artifact_digest=published.artifact_digest,
        image_ref=published.image_ref,
        manifest=dict(published.manifest or {}),
        encrypted=published.encrypted,
        reference_signatures=dict(published.reference_signatures or {}),
        notes=f"fields edited; runs the {published.artifact_kind} of version {published.version}",
    )


async def refuse_contract_edit(session: AsyncSession, row: Listing, values: dict[str, Any]) -> None:
    """BAD_INPUT when an edit changes the formats or schemas of a listing that runs code.

    They are the contract of the code its latest version carries: requesters fit it into pipelines by
    them, and its verification signatures were taken under its output schema. An edit changes no code,
    so it could declare a contract the code does not keep (a requester's pipeline then breaks at run
    time) with nothing checking it; a new version is tested and verified under the contract it declares.
    ``values`` are the edit's columns as ``_check_update`` normalized them; an unchanged value passes."""
    changed = [column for column in IO_FIELDS if column in values and values[column] != getattr(row, column)]
    if not changed:
        return
    published = await latest_published_version(session, row.id)
    if published is None or published.artifact_kind not in RUNS_CODE:
        return
    raise BadInput(
        f"{changed[0]}: listing {row.id} runs the {published.artifact_kind} of version {published.version}, "
        "whose formats and schemas are part of what was tested and verified; publish a new version to "
        "change them",
        field=changed[0],
    )


def subcategory_values(db: Database):
    """The elements of ``listings.subcategories`` as a table (JSON functions differ per engine)."""
    if db.is_sqlite:
        return func.json_each(Listing.subcategories).table_valued("value")
    return func.json_array_elements_text(Listing.subcategories).table_valued("value")


def check_kind_rules(kind: str, values: dict[str, Any]) -> None:
    if values.get("training_resources") and kind != ListingKind.ALGORITHM:
        raise BadInput(
            "training_resources: only algorithms are trained; remove it or use kind 'algorithm'",
            field="training_resources",
        )


def check_kind_kept(row: Listing, kind: str) -> None:
    """A listing keeps its kind for life, whether edited (``ListingService.update``) or given a new version
    (``catalog.publishing.listing_writer``): the trainings, pipelines and reviews that name it rely on
    it, and a dataset that became a model would break them. Another kind is another listing."""
    if kind != row.kind:
        raise BadInput(
            f"kind: listing {row.id} is a {row.kind} and stays one; a {kind} is a listing of its own",
            field="kind",
        )


def check_io(values: dict[str, Any]) -> None:
    """Normalise formats to ``name@version`` and fill/check the exact schemas (``catalog.formats``)."""
    for side in ("input", "output"):
        fmt, schema = values.get(f"{side}_format"), values.get(f"{side}_schema")
        try:  # each side in its own place, so that an error names the side it is about
            args = (fmt, schema, None, None) if side == "input" else (None, None, fmt, schema)
            checked = validate_listing_io(*args)
        except BadInput as exc:
            message = exc.message if exc.message.startswith(side) else f"{side}_format: {exc.message}"
            # A schema the format refuses is the schema's fault: name that field, not the format.
            schema_at_fault = message.startswith(f"{side}_schema") and "without" not in message
            field = f"{side}_schema" if schema_at_fault else f"{side}_format"
            raise BadInput(message, field=field, **exc.details) from None
        normalized = checked[:2] if side == "input" else checked[2:]
        values[f"{side}_format"], values[f"{side}_schema"] = normalized


@functools.lru_cache(maxsize=1024)
def _visible_page_select(actor: Actor) -> Select:
    """The listings of a search page (the ids as the expanding parameter ``PAGE_IDS``) that ``actor``
    may read, built once per actor: constructing the clause (the visibility rule, an IN of literal ids)
    for every page and generating its cache key took ~0.3 ms of CPU of each page's 0.8 ms at 10k."""
    return VIEW_SELECT.where(Listing.id.in_(bindparam(PAGE_IDS, expanding=True)), visible_to(actor))


class ListingService:
    def __init__(self, db: Database, index: ListingIndex, cursors: CursorSigner) -> None:
        self.db = db
        self.index = index
        self.cursors = cursors

    # ------------------------------------------------------------------ reads

    async def get(self, actor: Actor, listing_id: str) -> ListingView:
        """One listing; NOT_FOUND both when it does not exist and when ``actor`` may not see it."""
        async with self.db.session() as session:
            row = await session.scalar(select(Listing).where(Listing.id == listing_id, visible_to(actor)))
            if row is None:
                raise NotFound(f"no listing with id {listing_id!r}")
            shares = await shares_of(session, [row.id])
            return ListingView.of(row, shares.get(row.id, ()))

    async def get_many(self, actor: Actor, ids: Sequence[str]) -> dict[str, ListingView]:
        """The visible listings among ``ids`` (search results are hydrated through here).

        Every search page that misses the view cache reads here, so it reads plain rows of the view's
        columns through ``Database.read``: ORM objects in a session, with the 1.5 KB embedding each, took
        ~3 ms for a page of 10 at 100k listings, rows through aiosqlite ~1.7 ms, rows on ``read``'s
        SQLite reader thread ~1.0 ms (most of it SQLAlchemy's; the bare sqlite3 query is ~0.13 ms), and
        ~0.5 ms of CPU at 10k with the statement built once per actor (``_visible_page_select``)."""
        if not ids:
            return {}
        query, page = _visible_page_select(actor), {PAGE_IDS: list(ids)}

        def read(connection: Connection) -> dict[str, ListingView]:
            rows = connection.execute(query, page).all()
            shared = [r.id for r in rows if r.visibility == Visibility.SHARED]
            shares = shares_read(connection, shared) if shared else {}
            return {r.id: ListingView.of(r, shares.get(r.id, ())) for r in rows}

        return await self.db.read(read)

    async def list(
        self,
        actor: Actor,
        filter: ListingFilter | None = None,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        max_page_size: int = 100,
    ) -> Page:
        """Newest first, with an opaque cursor (``after`` = the previous page's ``end_cursor``)."""
        check_page_size(first, max_page_size)
        filter = filter or ListingFilter()
        conditions = [visible_to(actor), *self._filter_conditions(filter)]
        digest = filter_digest(filter)
        position = decode_cursor(self.cursors, LISTINGS_CURSOR, after, filtered_by=digest) if after else None
        async with self.db.session() as session:
            total = await session.scalar(select(func.count()).select_from(Listing).where(*conditions)) or 0
            query = newest_first(select(Listing).where(*conditions), Listing, position, first)
            rows = list((await session.scalars(query)).all())
            has_next = len(rows) > first
            rows = rows[:first]
            shares = await shares_of(session, [r.id for r in rows if r.visibility == Visibility.SHARED])
        items = [ListingView.of(r, shares.get(r.id, ())) for r in rows]
        cursors = [
            encode_cursor(self.cursors, LISTINGS_CURSOR, r.created_at, r.id, filtered_by=digest) for r in rows
        ]
        end = cursors[-1] if cursors else None
        return Page(items=items, end_cursor=end, has_next_page=has_next, total_count=total, cursors=cursors)

    def _filter_conditions(self, filter: ListingFilter) -> list[Any]:
        conditions: list[Any] = []
        kinds = parse_choices(ListingKind, filter.kinds, "kinds")
        if kinds:
            conditions.append(Listing.kind.in_(kinds))
        # Case-insensitive with the database's lower() on both sides: SQLite folds only ASCII, so a
        # Python-lowered "électronique" never equalled the column's "Électronique".
        if filter.category:
            conditions.append(func.lower(Listing.category) == func.lower(filter.category.strip()))
        if filter.subcategory:
            values = subcategory_values(self.db)
            conditions.append(
                exists(
                    select(1)
                    .select_from(values)
                    .where(func.lower(values.c.value) == func.lower(filter.subcategory))
                )
            )
        if filter.owner_id:
            conditions.append(Listing.owner_id == filter.owner_id)
        for column, value, field in (
            (Listing.input_format, filter.input_format, "inputFormat"),
            (Listing.output_format, filter.output_format, "outputFormat"),
        ):
            if value:
                try:
                    conditions.append(column == normalize_format(value))
                except BadInput as exc:  # name the facet, as search does
                    raise BadInput(f"{field}: {exc.message}", field=field, **exc.details) from None
        return conditions

    async def categories(self, actor: Actor) -> list[CategoryCount]:
        """Every category the actor can see something in, with counts, and per-subcategory counts."""
        visible = visible_to(actor)
        async with self.db.session() as session:
            per_category = (
                await session.execute(
                    select(Listing.category, func.count()).where(visible).group_by(Listing.category)
                )
            ).all()
            values = subcategory_values(self.db)
            per_sub = (
                await session.execute(
                    select(Listing.category, values.c.value, func.count())
                    .select_from(Listing)
                    .join(values, true())
                    .where(visible)
                    .group_by(Listing.category, values.c.value)
                )
            ).all()
        subs: dict[str, list[SubcategoryCount]] = {}
        for category, sub, count in per_sub:
            subs.setdefault(category, []).append(SubcategoryCount(str(sub), count))
        return sorted(
            (
                CategoryCount(name, count, sorted(subs.get(name, []), key=lambda s: (-s.count, s.name)))
                for name, count in per_category
            ),
            key=lambda c: (-c.count, c.name),
        )

    async def versions(self, actor: Actor, listing_id: str) -> list[ListingVersion]:
        """A listing's version history, oldest first; NOT_FOUND when ``actor`` may not see it."""
        histories = await self.versions_many(actor, [listing_id])
        if listing_id not in histories:
            raise NotFound(f"no listing with id {listing_id!r}")
        return histories[listing_id]

    async def versions_many(
        self, actor: Actor, listing_ids: Sequence[str]
    ) -> dict[str, list[ListingVersion]]:
        """``versions`` for every listing of a page in two queries (which are visible, then all their
        versions), not two per listing; listings ``actor`` may not see are absent."""
        async with self.db.session() as session:
            visible = await visible_among(session, actor, listing_ids)
            if not visible:
                return {}
            rows = await session.scalars(
                select(ListingVersion)
                .where(ListingVersion.listing_id.in_(visible))
                .order_by(ListingVersion.created_at, ListingVersion.id)
            )
            histories: dict[str, list[ListingVersion]] = {listing_id: [] for listing_id in visible}
            for row in rows:
                histories[row.listing_id].append(row)
            return histories

    # ------------------------------------------------------------------ writes

    async def create(
        self, actor: Actor, data: dict[str, Any] | ListingInput, *, written_by_platform: bool = False
    ) -> ListingView:
        """Create a listing owned by ``actor``: any signed-in account, but only producers (and admins)
        make one others can see, unless mlrepo derived it (``written_by_platform``: a published pipeline)."""
        if actor.is_anonymous:
            raise Unauthenticated("sign in to create listings")
        listing = data if isinstance(data, ListingInput) else parse_listing(data)
        if listing.owner is not None:
            raise BadInput("owner: a listing belongs to the account that creates it", field="owner")
        visibility = listing.visibility or Visibility.PUBLIC
        if visibility != Visibility.PRIVATE and not may_show_to_others(actor, written_by_platform):
            raise Forbidden(AUDIENCE_REFUSAL, field="visibility")
        if every_digest(listing.columns()):
            async with self.db.session() as session:
                await refuse_foreign_artifacts(session, actor, listing.columns())
        if listing.producer is None and actor.name:
            listing = listing.model_copy(update={"producer": actor.name})
            listing.model_fields_set.add("producer")
        created = await self.create_many(actor.account_id, [listing])
        return created[0]

    async def create_many(self, owner_id: str | None, inputs: Sequence[ListingInput]) -> list[ListingView]:
        """Insert listings in one transaction with one batched encode and one index write.

        Trusted path (the importer and ``create``): the caller has decided who owns them. The first
        invalid listing fails the whole call; the importer uses ``prepare``/``insert`` to go line by line.
        """
        prepared = await self.prepare(owner_id, inputs)
        for item in prepared:
            if isinstance(item, BadInput):
                raise item
        ready = [p for p in prepared if isinstance(p, PreparedListing)]
        await self.index.embed([p.row for p in ready])
        return await self.insert(ready)

    async def prepare(
        self, owner_id: str | None, inputs: Sequence[ListingInput]
    ) -> list[PreparedListing | BadInput]:
        """Check what only the catalog can check (formats, kind rules, share targets) for each input."""
        prepared: list[PreparedListing | BadInput] = []
        async with self.db.session() as session:
            for listing in inputs:
                try:
                    values = listing.columns()
                    values.setdefault("visibility", Visibility.PUBLIC.value)
                    check_io(values)
                    check_kind_rules(values["kind"], values)
                    shares = await self._resolve_shares(session, listing, values["visibility"])
                    prepared.append(PreparedListing(Listing(**values, owner_id=owner_id), shares))
                except BadInput as exc:
                    prepared.append(exc)
        return prepared

    async def insert(self, prepared: Sequence[PreparedListing]) -> list[ListingView]:
        """Write prepared (and embedded) rows with their shares and first versions, and index them: all
        or nothing."""
        rows = [p.row for p in prepared]
        try:
            async with self.index.atomic() as (session, changes):
                session.add_all(rows)
                await session.flush()
                for item in prepared:
                    session.add_all(ListingShare(listing_id=item.row.id, account_id=a) for a in item.shares)
                    session.add(
                        ListingVersion(
                            listing_id=item.row.id, version=item.row.version, artifact_kind="metadata"
                        )
                    )
                changes.put(*rows)
        except IntegrityError:
            names = ", ".join(repr(r.name) for r in rows[:5])
            raise Conflict(
                f"a listing with this name already exists for this owner ({names})", field="name"
            ) from None
        return [ListingView.of(p.row, p.shares) for p in prepared]

    async def update(
        self, actor: Actor, listing_id: str, data: dict[str, Any] | ListingFields
    ) -> ListingView:
        """Change the given fields; a new ``version`` adds a row to the version history."""
        patch = data if isinstance(data, ListingFields) else parse_listing_patch(data)
        if patch.owner is not None:
            raise BadInput("owner: ownership cannot be changed by an update", field="owner")
        values = patch.columns()
        for required in ("name", "kind", "category"):
            if required in values and values[required] is None:
                raise BadInput(f"{required}: must not be empty", field=required)
        async with self.db.session() as session:
            row = await self._modifiable(session, actor, listing_id)
            given_io = bool(set(IO_FIELDS) & set(values))
            self._check_update(row, values)
            if given_io:
                await refuse_contract_edit(session, row, values)
            kept = every_digest({c: getattr(row, c) for c in REFERENCING_COLUMNS})
            await refuse_foreign_artifacts(session, actor, values, kept)
            visibility = values.get("visibility", row.visibility)
            audience_changes = "shared_with" in patch.given() or "visibility" in values
            if audience_changes and visibility != Visibility.PRIVATE:
                await refuse_requester_audience(session, actor, row)
                await refuse_redistribution(session, row.id)
            new_shares = await self._resolve_shares(session, patch, visibility) if audience_changes else None
            if new_shares is not None and row.kind == ListingKind.PIPELINE:
                await refuse_unreachable_listing(session, row.id, visibility, new_shares)
            if row.kind == ListingKind.PIPELINE and (audience_changes or set(IO_FIELDS) & set(values)):
                declared = Listing(**{c: values.get(c, getattr(row, c)) for c in IO_FIELDS})
                await refuse_unfit_listing(session, row.id, visibility, declared)
        vector_row = None
        if set(EMBEDDED_FIELDS) & set(values):  # encode outside the transaction: no lock held while it runs
            vector_row = Listing(**{c: values.get(c, getattr(row, c)) for c in EMBEDDED_FIELDS})
            await self.index.embed([vector_row])
        try:
            async with self.index.atomic() as (session, changes):
                row = await self._modifiable(session, actor, listing_id)
                old_version = row.version
                for column, value in values.items():
                    setattr(row, column, value)
                if vector_row is not None:
                    row.embedding, row.embedding_model = vector_row.embedding, vector_row.embedding_model
                row.updated_at = utcnow()
                if new_shares is not None:
                    await session.execute(delete(ListingShare).where(ListingShare.listing_id == listing_id))
                    session.add_all(ListingShare(listing_id=listing_id, account_id=a) for a in new_shares)
                if row.version != old_version:
                    session.add(await metadata_version(session, row.id, row.version))
                changes.put(row)
                await session.flush()
                shares = (await shares_of(session, [row.id])).get(row.id, [])
        except IntegrityError as exc:
            if "version" in str(exc.orig).lower():
                raise Conflict(
                    f"version {values.get('version')!r} already exists for this listing", field="version"
                ) from None
            raise Conflict(
                f"a listing named {values.get('name')!r} already exists for this owner", field="name"
            ) from None
        return ListingView.of(row, shares)

    @staticmethod
    def _check_update(row: Listing, values: dict[str, Any]) -> None:
        """Re-check formats and kind rules on the listing as it will be after the update."""
        if "kind" in values:
            check_kind_kept(row, values["kind"])
        if values.get("version") is not None:
            check_version_newer(values["version"], row.version)
        io = {c: getattr(row, c) for c in IO_FIELDS}
        for side in ("input", "output"):
            if f"{side}_format" in values and f"{side}_schema" not in values:
                io[f"{side}_schema"] = None  # a new format brings its own default schema
        io.update({k: v for k, v in values.items() if k in io})
        check_io(io)
        values.update(io)
        check_kind_rules(
            values.get("kind", row.kind), {"training_resources": row.training_resources, **values}
        )

    async def delete(self, actor: Actor, listing_id: str) -> None:
        async with self.index.atomic() as (session, changes):
            row = await self._modifiable(session, actor, listing_id)
            await session.delete(row)
            changes.remove(listing_id)

    async def set_system_fields(self, listing_id: str, **values: Any) -> ListingView:
        """Trusted update of fields producers cannot set (verification, status, measured metrics) by the
        publishing workflow and the worker; the index follows in the same transaction."""
        unknown = set(values) - SYSTEM_FIELDS
        if unknown:
            raise BadInput(f"not system-managed listing fields: {sorted(unknown)}")
        async with self.index.atomic() as (session, changes):
            row = await session.get(Listing, listing_id)
            if row is None:
                raise NotFound(f"no listing with id {listing_id!r}")
            for column, value in values.items():
                setattr(row, column, value)
            row.updated_at = utcnow()
            changes.put(row)
            shares = (await shares_of(session, [row.id])).get(row.id, [])
        return ListingView.of(row, shares)

    async def _modifiable(self, session: AsyncSession, actor: Actor, listing_id: str) -> Listing:
        if actor.is_anonymous:
            raise Unauthenticated("sign in to change listings")
        row = await session.get(Listing, listing_id, with_for_update=not self.db.is_sqlite)
        return await require_modifiable(
            session, actor, row, listing_id, "only the listing's owner (or an admin) may change it"
        )

    # ------------------------------------------------------------------ shares

    async def _resolve_shares(
        self, session: AsyncSession, listing: ListingFields, visibility: str
    ) -> list[str]:
        """Account ids for ``shared_with`` (given as names or ids); only shared listings have shares."""
        names = listing.shared_with or []
        if names and visibility != Visibility.SHARED:
            raise BadInput(
                "shared_with: only listings with visibility 'shared' are shared with accounts",
                field="shared_with",
            )
        if not names:
            return []
        keys = {account_name_key(n) for n in names}  # a name in any case (accounts are unique so)
        rows = (
            await session.execute(
                select(Account.id, Account.name_key).where(
                    or_(Account.id.in_(names), Account.name_key.in_(keys))
                )
            )
        ).all()
        known = {value for row in rows for value in row}
        unknown = [n for n in names if n not in known and account_name_key(n) not in known]
        if unknown:
            raise BadInput(f"shared_with: no accounts named {unknown}", field="shared_with")
        return sorted({row.id for row in rows})

    # ------------------------------------------------------------------ index maintenance

    async def reindex(self, progress: Any = None) -> int:
        """Rebuild the whole index from the database (``mlrepo reindex``), even one that looks current."""
        return await self.index.rebuild(progress, force=True)
