"""Sweep the artifact store: remove blobs no row references, their encryption keys, and partial writes.

The caller (``catalog.artifact_gc``) says which digests the database references; this module knows
only files. A file is garbage when nothing references it AND it was last modified before ``cutoff``
(the start of the collection minus the grace period). Why both: a blob is written *before* the row
that references it commits (a publication stores its package, then lists the version; a job stores
its outputs, then its final transaction names them), so a young unreferenced blob may be one a writer
is about to reference. The grace period must exceed the longest such gap (seconds to minutes).

Two races remain, and both are closed here and in ``infra.artifacts``:

* A writer whose content is *already* stored (deduplication) references an old blob. It first makes the
  blob young (``artifacts.refresh``), and a sweep never unlinks a file it saw old without checking
  again: it renames the file aside (atomic), looks at its modification time once more, and puts it
  back (a hard link, which never overwrites) when it became young in between. A writer that refreshes
  after the rename finds nothing and stores its content again.
* The same holds for an encrypted blob's key file, which a writer reuses when it re-encrypts content
  whose key exists.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from infra.artifacts import DIGEST_PREFIX, ArtifactStore

_BLOB_NAME = re.compile(r"([0-9a-f]{64})(\.enc)?")
_KEY_NAME = re.compile(r"([0-9a-f]{64})\.key")
_KEY_TEMP_PREFIX = ".k-"  # ArtifactStore._create_key's partial key files
_TRASH_PREFIX = ".gc-"


@dataclass
class SweepTally:
    """How many files of one sort, and their bytes on disk."""

    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size


@dataclass
class SweepReport:
    """What a sweep found; ``deleted`` is False for a dry run (``garbage`` then says what would go)."""

    deleted: bool
    referenced: SweepTally = field(default_factory=SweepTally)  # blobs a row references
    young: SweepTally = field(default_factory=SweepTally)  # unreferenced, inside the grace period
    garbage: SweepTally = field(default_factory=SweepTally)  # unreferenced blobs past the grace period
    keys: SweepTally = field(default_factory=SweepTally)  # key files of garbage (or vanished) blobs
    partial: SweepTally = field(default_factory=SweepTally)  # stale partial writes (tmp/, key temps)
    kept_racing: int = 0  # files a writer made young while this sweep was removing them
    garbage_digests: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return self.garbage.bytes + self.keys.bytes + self.partial.bytes


@dataclass(frozen=True)
class _Entry:
    digest: str
    path: Path
    size: int
    mtime: float


def _entries(
    directory: Path, pattern: re.Pattern[str]
) -> Iterator[tuple[re.Match[str], Path, os.stat_result]]:
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as it:
        for item in it:
            match = pattern.fullmatch(item.name)
            if match is None or not item.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):  # removed since the listing: nothing to do
                yield match, Path(item.path), item.stat(follow_symlinks=False)


def _blobs(store: ArtifactStore) -> Iterator[_Entry]:
    root = store.root / "blobs" / "sha256"
    with contextlib.suppress(FileNotFoundError):
        fanout = sorted(p for p in root.iterdir() if p.is_dir())
        for directory in fanout:
            for match, path, st in _entries(directory, _BLOB_NAME):
                yield _Entry(DIGEST_PREFIX + match.group(1), path, st.st_size, st.st_mtime)


def remove_if_still_old(path: Path, cutoff: float, trash_dir: Path) -> bool:
    """Unlink ``path`` unless it was modified at or after ``cutoff``; True when it was removed.

    The file is first renamed into ``trash_dir`` (same file system), so a writer that refreshes it
    from now on finds it gone; its time is then read again, and a file refreshed before the rename is
    linked back into place."""
    trash = trash_dir / f"{_TRASH_PREFIX}{os.urandom(8).hex()}-{path.name}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return False  # someone else removed it
    try:
        if os.lstat(trash).st_mtime >= cutoff:
            with contextlib.suppress(FileExistsError):  # a writer stored it afresh: that one stays
                os.link(trash, path)
            return False
        return True
    finally:
        trash.unlink(missing_ok=True)


def sweep(store: ArtifactStore, referenced: set[str], cutoff: float, *, delete: bool) -> SweepReport:
    """Find (and with ``delete``, remove) the store's garbage; ``referenced``: every digest a row names,
    read *after* ``cutoff`` was fixed (see the module docstring for why that order matters)."""
    report = SweepReport(deleted=delete)
    trash_dir = store.root / "tmp"
    blob_kept: set[str] = set()  # digests with a blob that stays (so their key stays too)
    for entry in _blobs(store):
        if entry.digest in referenced:
            report.referenced.add(entry.size)
            blob_kept.add(entry.digest)
        elif entry.mtime >= cutoff:
            report.young.add(entry.size)
            blob_kept.add(entry.digest)
        elif not delete or remove_if_still_old(entry.path, cutoff, trash_dir):
            report.garbage.add(entry.size)
            report.garbage_digests.append(entry.digest)
        else:
            report.kept_racing += 1
            blob_kept.add(entry.digest)
    for match, path, st in _entries(store.key_dir, _KEY_NAME):
        digest = DIGEST_PREFIX + match.group(1)
        if digest in referenced or digest in blob_kept or st.st_mtime >= cutoff:
            continue  # an encrypted blob being written gets its key first: a young key stays
        if not delete or remove_if_still_old(path, cutoff, store.key_dir):
            report.keys.add(st.st_size)
        else:
            report.kept_racing += 1
    _sweep_partial(store, cutoff, delete, report)
    return report


def _sweep_partial(store: ArtifactStore, cutoff: float, delete: bool, report: SweepReport) -> None:
    """Partial writes of crashed processes: temp files in ``tmp/`` and ``key_dir`` untouched since
    before ``cutoff``. A live writer keeps its temp file young while it writes; one stalled longer than
    the grace period loses it and fails (its final link finds nothing), it never publishes half a blob."""
    candidates = [(p, store.root / "tmp") for p in _files(store.root / "tmp")]
    candidates += [
        (p, store.key_dir)
        for p in _files(store.key_dir)
        if p.name.startswith((_KEY_TEMP_PREFIX, _TRASH_PREFIX))
    ]
    for path, directory in candidates:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_mtime >= cutoff:
            continue
        if not delete or remove_if_still_old(path, cutoff, directory):
            report.partial.add(st.st_size)


def _files(directory: Path) -> list[Path]:
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as it:
        return [Path(e.path) for e in it if e.is_file(follow_symlinks=False)]
    return []
