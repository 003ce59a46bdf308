"""A job's per-record outputs: one JSON line per input record, stored in the artifact store.

Why not the job row: a 100k-record inference made one huge JSON value that every read of the job loaded
and every ``jobStatus`` update sent. The row keeps a small summary (``result``) and metrics; the outputs
are written as JSON lines to a private file while the job runs, stored as an artifact (written to a temp
file and linked into place: complete or absent), and referenced from the row (``outputs_digest``,
``outputs_count``) only by the transaction that makes the job final (``JobService.finish``). A worker that
dies before that leaves an unreferenced blob: nothing can reach it through a job, and being
content-addressed it never collides with a blob that is referenced, so it is harmless (disk only).

Each line is ``{"output": …}`` or ``{"error": …}`` (a pipeline's error also names its ``step_id`` and
``step``), in input order; readers page through them (``read_page``) without loading the whole file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.artifacts import ArtifactStore
from infra.cursor_signing import CursorSigner, not_issued
from infra.errors import BadInput


@dataclass(frozen=True)
class StoredOutputs:
    digest: str
    count: int


OUTPUTS_CURSOR = "job-outputs"  # what an outputs cursor is signed for (and for which job: its scope)
MAX_FILE_OFFSET = 2**63 - 1  # what a seek takes: a larger forged offset failed inside it as INTERNAL


@dataclass(frozen=True)
class OutputsCursor:
    """Where a page starts: the record's index and the byte offset of its line in the stored file (so
    the next page is a seek, not a re-read of everything before it)."""

    index: int
    offset: int

    def seal(self, signer: CursorSigner, job_id: str) -> str:
        """Opaque and signed for ``job_id``: a changed index or offset, or another job's cursor, is
        refused (a forged one could make the service number this job's records wrongly)."""
        return signer.seal(OUTPUTS_CURSOR, [self.index, self.offset], job_id)

    @classmethod
    def open(cls, signer: CursorSigner, job_id: str, text: str) -> OutputsCursor:
        position = signer.open(OUTPUTS_CURSOR, text, job_id)
        if len(position) != 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_FILE_OFFSET for n in position
        ):
            raise BadInput(not_issued(text), field="after")
        return cls(*position)


START = OutputsCursor(0, 0)


@dataclass(frozen=True)
class OutputsPage:
    """Records ``start.index ..`` of a job's outputs, the byte offset after each, and the total."""

    start: OutputsCursor
    records: list[dict[str, Any]]
    ends: list[int]  # ends[i]: where the line after records[i] starts
    total: int

    def cursor_after(self, position: int) -> OutputsCursor:
        """The cursor that resumes after ``records[position]``."""
        return OutputsCursor(self.start.index + position + 1, self.ends[position])

    @property
    def end(self) -> OutputsCursor:
        return self.cursor_after(len(self.records) - 1) if self.records else self.start

    @property
    def has_next_page(self) -> bool:
        return self.end.index < self.total


class OutputsWriter:
    """Appends output lines to a private temp file; ``store`` puts the complete file in the artifact store.
    Memory stays bounded whatever the number of records: a line is written as soon as it is known."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=directory, prefix="outputs-", suffix=".jsonl")
        self.path = Path(name)
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        self.count = 0

    def add(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
        self.count += 1

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self.add(record)

    def store(self, store: ArtifactStore) -> StoredOutputs:
        self._file.close()
        try:
            return StoredOutputs(store.put_file(self.path).digest, self.count)
        finally:
            self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


def write_outputs(store: ArtifactStore, directory: Path, records: Iterable[dict[str, Any]]) -> StoredOutputs:
    writer = OutputsWriter(directory)
    try:
        writer.extend(records)
    except BaseException:
        writer.discard()
        raise
    return writer.store(store)


def iter_lines(store: ArtifactStore, digest: str, start: int = 0) -> Iterator[bytes]:
    """The stored file's lines from byte ``start`` on (each with its newline), read chunk by chunk."""
    pending = b""
    for chunk in store.iter_plaintext(digest, start):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


def read_page(store: ArtifactStore, digest: str, total: int, after: OutputsCursor, limit: int) -> OutputsPage:
    """Up to ``limit`` records from ``after`` on: a seek to its line, then only the lines wanted."""
    if after.index > total:
        raise BadInput(f"'after' points past the job's {total} outputs", field="after")
    if after.offset and next(store.iter_plaintext(digest, after.offset - 1), b"")[:1] != b"\n":
        raise BadInput("'after' is not a cursor of this job's outputs", field="after")
    records: list[dict[str, Any]] = []
    ends: list[int] = []
    offset = after.offset
    if limit > 0 and after.index < total:
        for line in iter_lines(store, digest, after.offset):
            records.append(json.loads(line))
            offset += len(line)
            ends.append(offset)
            if len(records) == limit:
                break
    return OutputsPage(after, records, ends, total)


def read_all(store: ArtifactStore, digest: str) -> list[dict[str, Any]]:
    """Every record (for callers that asked for all of them, e.g. ``mlrepo run`` printing a job)."""
    return [json.loads(line) for line in iter_lines(store, digest)]
