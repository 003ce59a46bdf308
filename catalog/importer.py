"""Bulk import of listings from JSON Lines (``mlrepo import FILE.jsonl``).

Every bad line is reported with its line number and reason and the valid lines are imported. Throughput is
bounded by the embedding model, so lines go through in batches: one batched encode, one multi-row insert
and one index write per batch, and the next batch is encoded while the previous one is written.

Ownership: a line may name its ``owner`` (an existing account's name); otherwise the listing belongs to the
importing account, or to the system producer account ``mlrepo`` when none is given (the CLI case).
A line whose name the owner already uses is skipped with a warning (``on_existing="skip"``, which makes
seeding and re-running an import idempotent) or updates that listing (``on_existing="update"``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy import select, tuple_

from catalog.accounts import AccountService
from catalog.actors import Actor
from catalog.enums import Role
from catalog.listing_input import ListingInput, parse_listing
from catalog.listings import ListingService, PreparedListing
from infra.errors import BadInput, Conflict, MlrepoError
from infra.tables import Listing

DEFAULT_BATCH = 256
MAX_LINE_BYTES = 1_000_000
Progress = Callable[[int, int], None]  # (lines done, lines in total)


@dataclass(frozen=True, slots=True)
class LineProblem:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportReport:
    lines: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[LineProblem] = field(default_factory=list)
    warnings: list[LineProblem] = field(default_factory=list)
    created_ids: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def imported(self) -> int:
        return self.created + self.updated

    def summary(self) -> str:
        rate = self.imported / self.elapsed_s if self.elapsed_s else 0.0
        lines = f"{self.lines} line{'s' if self.lines != 1 else ''}"
        return (
            f"{lines}: {self.created} created, {self.updated} updated, {self.skipped} skipped, "
            f"{len(self.errors)} bad ({self.elapsed_s:.1f} s, {rate:.0f} listings/s)"
        )


@dataclass
class _Batch:
    prepared: list[tuple[int, PreparedListing]]
    embedding: asyncio.Task[None] | None = None


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        yield from enumerate(handle, start=1)


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


class Importer:
    def __init__(self, listings: ListingService, accounts: AccountService) -> None:
        self.listings = listings
        self.accounts = accounts

    async def import_file(
        self,
        path: str | Path,
        owner_id: str | None = None,
        progress: Progress | None = None,
        batch_size: int = DEFAULT_BATCH,
        on_existing: Literal["skip", "update"] = "skip",
    ) -> ImportReport:
        path = Path(path)
        if not path.is_file():
            raise BadInput(f"no such file: {path}", field="path")
        return await self.import_lines(
            read_lines(path), owner_id, progress, batch_size, on_existing, total=count_lines(path)
        )

    async def import_lines(
        self,
        lines: Iterable[tuple[int, str]],
        owner_id: str | None = None,
        progress: Progress | None = None,
        batch_size: int = DEFAULT_BATCH,
        on_existing: Literal["skip", "update"] = "skip",
        total: int = 0,
    ) -> ImportReport:
        """Import numbered JSON lines; returns what happened to each line that was not created."""
        if batch_size < 1:
            raise BadInput("batch_size must be at least 1", field="batch_size")
        started = time.perf_counter()
        report = ImportReport()
        default_owner = owner_id or (await self.accounts.system_account()).id
        owners: dict[str, str] = {}
        seen_names: dict[tuple[str, str], int] = {}
        pending: _Batch | None = None
        chunk: list[tuple[int, str]] = []
        done = 0

        async def flush(chunk: list[tuple[int, str]]) -> None:
            nonlocal pending, done
            batch = await self._prepare(chunk, default_owner, owners, seen_names, on_existing, report)
            rows = [p.row for _, p in batch.prepared]
            batch.embedding = asyncio.create_task(self.listings.index.embed(rows)) if rows else None
            if pending is not None:
                await self._write(pending, report)
            pending = batch
            done += len(chunk)
            if progress:
                progress(done, max(total, done))

        for number, line in lines:
            report.lines += 1
            chunk.append((number, line))
            if len(chunk) >= batch_size:
                await flush(chunk)
                chunk = []
        if chunk:
            await flush(chunk)
        if pending is not None:
            await self._write(pending, report)
        report.elapsed_s = time.perf_counter() - started
        return report

    async def _prepare(
        self,
        chunk: list[tuple[int, str]],
        default_owner: str,
        owners: dict[str, str],
        seen_names: dict[tuple[str, str], int],
        on_existing: str,
        report: ImportReport,
    ) -> _Batch:
        parsed: list[tuple[int, str, ListingInput]] = []
        for number, line in chunk:
            if not line.strip():
                continue
            try:
                data = self._decode(line)
                listing = parse_listing(data)
                owner = await self._owner(listing.owner, default_owner, owners)
            except MlrepoError as exc:
                report.errors.append(LineProblem(number, exc.message))
                continue
            if listing.unknown_fields:
                report.warnings.append(
                    LineProblem(
                        number, f"unknown fields kept in 'extra': {', '.join(listing.unknown_fields)}"
                    )
                )
            key = (owner, listing.name)
            if key in seen_names:
                report.errors.append(
                    LineProblem(
                        number, f"name {listing.name!r} repeats line {seen_names[key]} for the same owner"
                    )
                )
                continue
            seen_names[key] = number
            parsed.append((number, owner, listing))

        existing = await self._existing_ids([(owner, listing.name) for _, owner, listing in parsed])
        batch = _Batch(prepared=[])
        by_owner: dict[str, list[tuple[int, ListingInput]]] = {}
        for number, owner, listing in parsed:
            listing_id = existing.get((owner, listing.name))
            if listing_id is None:
                by_owner.setdefault(owner, []).append((number, listing))
            elif on_existing == "update":
                await self._update_existing(number, owner, listing_id, listing, report)
            else:
                report.skipped += 1
                report.warnings.append(LineProblem(number, f"skipped: {listing.name!r} already exists"))
        for owner, items in by_owner.items():
            prepared = await self.listings.prepare(owner, [listing for _, listing in items])
            for (number, _), item in zip(items, prepared, strict=True):
                if isinstance(item, BadInput):
                    report.errors.append(LineProblem(number, item.message))
                else:
                    batch.prepared.append((number, item))
        return batch

    async def _write(self, batch: _Batch, report: ImportReport) -> None:
        if batch.embedding is not None:
            await batch.embedding
        if not batch.prepared:
            return
        try:
            views = await self.listings.insert([p for _, p in batch.prepared])
        except Conflict:
            # Someone created one of these names meanwhile: fall back to one by one to name the line.
            for number, item in batch.prepared:
                try:
                    (view,) = await self.listings.insert([item])
                except Conflict as exc:
                    report.errors.append(LineProblem(number, exc.message))
                else:
                    report.created += 1
                    report.created_ids.append(view.id)
            return
        report.created += len(views)
        report.created_ids.extend(v.id for v in views)

    async def _update_existing(
        self, number: int, owner: str, listing_id: str, listing: ListingInput, report: ImportReport
    ) -> None:
        actor = Actor(account_id=owner, role=Role.PRODUCER)
        try:
            await self.listings.update(actor, listing_id, listing)
        except MlrepoError as exc:
            report.errors.append(LineProblem(number, exc.message))
        else:
            report.updated += 1

    @staticmethod
    def _decode(line: str) -> object:
        if len(line) > MAX_LINE_BYTES:
            raise BadInput(f"line is longer than {MAX_LINE_BYTES} bytes")
        try:
            return json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInput(f"not valid JSON: {exc.msg} at column {exc.colno}") from None

    async def _owner(self, name: str | None, default_owner: str, owners: dict[str, str]) -> str:
        if name is None:
            return default_owner
        if name not in owners:
            account = await self.accounts.find_by_name(name)
            if account is None:
                raise BadInput(f"owner: no account named {name!r}")
            owners[name] = account.id
        return owners[name]

    async def _existing_ids(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not keys:
            return {}
        found: dict[tuple[str, str], str] = {}
        async with self.listings.db.session() as session:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                rows = await session.execute(
                    select(Listing.owner_id, Listing.name, Listing.id).where(
                        tuple_(Listing.owner_id, Listing.name).in_(chunk)
                    )
                )
                for owner, name, listing_id in rows:
                    found[(owner, name)] = listing_id
        return found
