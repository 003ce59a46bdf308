"""Job inputs that come as data: JSON-lines uploads and dataset listings' stored files.

One JSON value per line. For inference, a line that is an object with ``input`` contributes that input
(so a labelled dataset can be scored as is); any other value is the input itself. Training reads the
same lines as examples (``executor.training.example_of``), streamed too. A dataset published as an archive is
stored as uploaded; its lines are those of its ``.jsonl`` / ``.ndjson`` members in path order (other
members, a README or a licence, are not data), extracted with publishing's safety limits.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from catalog.publishing.archive_safety import (
    GZIPPED_FILE,
    ArchiveLimits,
    UnsafeArchive,
    detect_format,
    extract_archive,
)
from executor.contract import reject_constant
from infra.artifacts import ArtifactStore
from infra.db import Database
from infra.errors import BadInput
from infra.settings import Settings
from infra.tables import ListingVersion

MAX_DATA_BYTES = 256 << 20
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")


def parse_json_lines(data: bytes, what: str, field: str | None = None) -> list[Any]:
    """The JSON values of ``data``'s lines; ``field`` is the input they came in (an upload's ``file``),
    named in the BadInput like any other invalid field."""
    named = {"field": field} if field else {}
    if len(data) > MAX_DATA_BYTES:
        raise BadInput(f"{what} is larger than {MAX_DATA_BYTES >> 20} MiB", **named)
    return list(_json_values(data.decode("utf-8-sig", "replace").splitlines(), what, field=field))


def _json_values(
    lines: Iterable[str], what: str, first_number: int = 1, field: str | None = None
) -> Iterator[Any]:
    for number, line in enumerate(lines, first_number):
        if not line.strip():
            continue
        try:
            yield json.loads(line, parse_constant=reject_constant)
        except ValueError:
            raise BadInput(
                f"{what} line {number} is not JSON (NaN and Infinity are not either); "
                "expected one JSON value per line",
                **({"field": field} if field else {}),
            ) from None


@dataclass(frozen=True)
class DatasetInput:
    """A dataset listing whose records a job scores, and its stored file, pinned when the job is queued
    (a later version of the dataset does not change what the job reads)."""

    listing_id: str
    digest: str

    def job_inputs(self, records: int) -> dict[str, Any]:
        """What the job row keeps of it: references and the count (``records``), never the records."""
        return {
            "dataset_listing_id": self.listing_id,
            "dataset_digest": self.digest,
            "dataset_records": records,
        }


def check_inline_count(settings: Settings, count: int) -> None:
    """Records given in the request (a list or an uploaded file) ride on the job row; a dataset listing
    is the way to score more (its records are streamed from its stored file)."""
    limit = settings.job_max_inline_records
    if count > limit:
        raise BadInput(
            f"at most {limit} records per job in the request; got {count} (publish them as a dataset "
            "listing and pass datasetListingId to score more)",
            field="records",
        )


def inference_inputs(lines: Iterable[Any]) -> Iterator[Any]:
    return (line["input"] if isinstance(line, dict) and "input" in line else line for line in lines)


async def dataset_digest(db: Database, dataset_listing_id: str) -> str:
    """The stored file of a dataset listing's latest version (the caller checked it may see it)."""
    async with db.session() as session:
        version = await session.scalar(
            select(ListingVersion)
            .where(ListingVersion.listing_id == dataset_listing_id)
            .order_by(ListingVersion.created_at.desc())
            .limit(1)
        )
    if version is None or not version.artifact_digest:
        raise BadInput("the dataset listing has no stored data", field="datasetListingId")
    return version.artifact_digest


class DatasetReader:
    """A dataset's stored file, readable one JSON value at a time: memory stays bounded whatever its size.

    The file is exported from the artifact store into ``scratch``; an archive (zip, tar, tar.gz) is
    extracted there with publishing's safety limits and its ``.jsonl`` / ``.ndjson`` members are read in
    path order; a gzipped file (``.jsonl.gz``) is decompressed under the same limits and read whole.
    """

    def __init__(self, settings: Settings, digest: str, scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        path = ArtifactStore.from_settings(settings).export(digest, scratch / "data")
        self.parts = _json_lines_files(path, scratch / "extracted", ArchiveLimits.from_settings(settings))

    def values(self) -> Iterator[Any]:
        for part in self.parts:
            with open(part, encoding="utf-8-sig", errors="replace") as lines:
                yield from _json_values((line.rstrip("\n") for line in lines), "the dataset")

    def inputs(self) -> Iterator[Any]:
        return inference_inputs(self.values())


def job_inputs(settings: Settings, digest: str | None, inline: list[Any], scratch: Path) -> Iterator[Any]:
    """An inference job's inputs in order: its dataset's records (``digest``: streamed from the stored
    file, exported into ``scratch``), then those given inline."""
    dataset = DatasetReader(settings, digest, scratch).inputs() if digest is not None else iter(())
    return itertools.chain(dataset, inline)


async def job_input_chunks(
    settings: Settings, inputs: dict[str, Any], scratch: Path
) -> tuple[int, AsyncIterator[list[Any]]]:
    """How many records a job has (its ``inputs`` row field: ``dataset_records`` counted at submission,
    plus those inline), and those records in order, ``job_max_batch_records`` at a time: a caller that
    is done with a chunk before taking the next holds one chunk, whatever the dataset's size."""
    inline = list(inputs.get("records") or [])
    total = int(inputs.get("dataset_records") or 0) + len(inline)
    source = await asyncio.to_thread(job_inputs, settings, inputs.get("dataset_digest"), inline, scratch)
    size = max(1, settings.job_max_batch_records)

    async def chunks() -> AsyncIterator[list[Any]]:
        while chunk := await asyncio.to_thread(lambda: list(itertools.islice(source, size))):
            yield chunk

    return total, chunks()


def _json_lines_files(path: Path, root: Path, limits: ArchiveLimits) -> list[Path]:
    """The stored file itself, or the JSON-lines files of the archive it is, in path order."""
    with open(path, "rb") as f:
        head = f.read(512)
    try:
        fmt = detect_format(head)
    except UnsafeArchive:  # a single-file dataset
        return [path]
    report = extract_archive(path, root, limits)
    if fmt == GZIPPED_FILE:  # one compressed file: its content is the data, whatever it was called
        return [root / name for name in report.files]
    parts = sorted(name for name in report.files if name.lower().endswith(JSON_LINES_SUFFIXES))
    if not parts:
        raise BadInput(
            "the dataset archive holds no JSON-lines file (*.jsonl or *.ndjson) to read",
            field="datasetListingId",
        )
    return [root / name for name in parts]


def check_dataset_size(size: int) -> None:
    """BadInput when a dataset's stored data (its JSON-lines files) is over ``MAX_DATA_BYTES``."""
    if size > MAX_DATA_BYTES:
        raise BadInput(f"the dataset is larger than {MAX_DATA_BYTES >> 20} MiB", field="datasetListingId")
