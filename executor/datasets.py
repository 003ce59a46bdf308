"""Job inputs that come as data: JSON-lines uploads and dataset listings' stored files.

One JSON value per line. For inference, a line that is an object with ``input`` contributes that input
(so a labelled dataset can be scored as is); any other value is the input itself. Training reads the
same lines as examples (``executor.training.parse_examples``). A dataset published as an archive is
stored as uploaded; its lines are those of its ``.jsonl`` / ``.ndjson`` members in path order (other
members, a README or a licence, are not data), extracted with publishing's safety limits.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from catalog.publishing.archive_safety import ArchiveLimits, UnsafeArchive, detect_format, extract_archive
from executor.contract import reject_constant
from infra.artifacts import ArtifactStore
from infra.db import Database
from infra.errors import BadInput
from infra.settings import Settings
from infra.tables import ListingVersion

MAX_DATA_BYTES = 256 << 20
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")


def parse_json_lines(data: bytes, what: str) -> list[Any]:
    if len(data) > MAX_DATA_BYTES:
        raise BadInput(f"{what} is larger than {MAX_DATA_BYTES >> 20} MiB")
    values = []
    for number, line in enumerate(data.decode("utf-8-sig", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line, parse_constant=reject_constant))
        except ValueError:
            raise BadInput(
                f"{what} line {number} is not JSON (NaN and Infinity are not either); "
                "expected one JSON value per line"
            ) from None
    return values


def inference_inputs(lines: list[Any]) -> list[Any]:
    return [line["input"] if isinstance(line, dict) and "input" in line else line for line in lines]


async def dataset_lines(settings: Settings, db: Database, dataset_listing_id: str) -> list[Any]:
    """The JSON lines of a dataset listing's latest stored version (the caller checked it may see it)."""
    async with db.session() as session:
        version = await session.scalar(
            select(ListingVersion)
            .where(ListingVersion.listing_id == dataset_listing_id)
            .order_by(ListingVersion.created_at.desc())
            .limit(1)
        )
    if version is None or not version.artifact_digest:
        raise BadInput("the dataset listing has no stored data", field="datasetListingId")
    store = ArtifactStore.from_settings(settings)
    scratch = Path(tempfile.mkdtemp(prefix="dataset-"))
    try:
        path = await asyncio.to_thread(store.export, version.artifact_digest, scratch / "data")
        data = await asyncio.to_thread(_json_lines_of, path, ArchiveLimits.from_settings(settings))
        return parse_json_lines(data, "the dataset")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _json_lines_of(path: Path, limits: ArchiveLimits) -> bytes:
    """The stored file itself, or the JSON-lines members of the archive it is, joined in path order."""
    with open(path, "rb") as f:
        head = f.read(512)
    try:
        detect_format(head)
    except UnsafeArchive:  # a single-file dataset
        _check_size(path.stat().st_size)
        return path.read_bytes()
    root = path.parent / "extracted"
    report = extract_archive(path, root, limits)
    parts = sorted(name for name in report.files if name.lower().endswith(JSON_LINES_SUFFIXES))
    if not parts:
        raise BadInput(
            "the dataset archive holds no JSON-lines file (*.jsonl or *.ndjson) to read",
            field="datasetListingId",
        )
    _check_size(sum((root / name).stat().st_size for name in parts))
    return b"\n".join((root / name).read_bytes() for name in parts)


def _check_size(size: int) -> None:
    if size > MAX_DATA_BYTES:
        raise BadInput(f"the dataset is larger than {MAX_DATA_BYTES >> 20} MiB", field="datasetListingId")
