"""Artifact garbage collection (``mlrepo gc``, and by itself daily by default: ``catalog.gc_schedule``).

The artifact store only grows: packages of failed publications, outputs of jobs that crashed before
their final transaction, packages of deleted listings and versions (and of trained models whose listing
was deleted), partial writes, staged uploads, staging directories and images nobody will come back for.
``collect_garbage`` finds them and, with ``delete=True``, removes them.

What counts as a reference (every row that can lead a reader to a blob):

* ``listing_versions.artifact_digest`` of every version, and any digest inside its ``manifest``;
  ``listings.storage_location`` (``artifact:<digest>``, trained models) and any digest in ``extra``;
* ``jobs.outputs_digest`` of every job, and any digest in its ``result``; the ``inputs`` of a job that
  is not final yet (its pinned dataset: the listing may be deleted while the job waits in the queue —
  a final job never reads its inputs again); a pipeline step's fed training examples
  (``inputs[FED_EXAMPLES_KEY]``, a blob made for that job alone) while the job can run and, once it is
  final, until it is past ``job_output_retention_days`` like its outputs (kept forever with 0);
* a publication that is not final yet: its ``artifact_digest`` and any digest in its metadata (a final
  one's package is referenced by its listing version, or by nothing when it failed or was deleted);
* any digest in a pipeline step's ``config``.

Before reading them, the collection drops the outputs references of jobs finished longer than
``job_output_retention_days`` ago (``catalog.job_output_retention``), so their blobs are swept as
unreferenced by this same run; a dry run drops nothing and counts those outputs as the garbage they would be.

Digests inside JSON are found by pattern (``sha256:`` + 64 hex), so a reference a later feature adds
to one of those documents is honoured without touching this module; holding a blob too long is the
safe mistake. Docker images (``image_ref``, image ids) are not in the artifact store and out of scope,
except two kinds nobody else removes. In the registry, the images publication runs pushed
(``catalog.publishing.registry``): those of this database's publications whose pushing run can no longer
write (``infra.fencing.may_still_write``) and that no listing version, listing or unfinished publication
names by digest — a run that failed or died before listing, the earlier run of a publication a later run
published, a version or listing deleted since. A PUBLISHED publication's image was listed, and a reader
may still be pulling it: it goes only once the publication is older than ``gc_grace_s``. And the staging
tags publication runs give the images they derive (``mlrepo-staging/<publication>-<run>``):
those of this database's publication runs that can no longer write (``infra.fencing.may_still_write``)
are removed from the engine this process reaches (a run removes its own, and a re-run those of earlier
runs on its engine, but a run killed on one host and re-run on another leaves its tags behind).

Why the grace period makes this safe against writers running right now: the cutoff is fixed *before*
the references are read, in one snapshot (REPEATABLE READ on PostgreSQL, one read transaction on
SQLite). A blob older than the cutoff whose reference is not in that snapshot would need a writer that
stored it more than the grace period before committing its row. Writers commit seconds to minutes after
writing (a publication lists its version right after storing and containerizing the package; a job's
final transaction names its outputs right after storing them; training stores the model and writes the
version), and a writer reusing an old blob makes it young first (``infra.artifacts.refresh``) — see
``infra.artifact_gc`` for how a sweep and such a writer cannot cross. Hence ``gc_grace_s`` has a floor
of an hour: a publication's package is named by no row until its image is pushed and its version listed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from catalog.enums import JobStatus
from catalog.job_output_retention import (
    FED_EXAMPLES_KEY,
    expire_job_outputs,
    is_expiring,
    outputs_expire_before,
)
from catalog.publishing.images import ImageService
from catalog.publishing.registry import PushedImage, Registry
from catalog.publishing.steps import PublicationStatus
from infra.artifact_gc import SweepReport, SweepTally, sweep
from infra.artifacts import ArtifactStore
from infra.db import Database
from infra.fencing import may_still_write
from infra.settings import Settings
from infra.tables import Job, Listing, ListingVersion, PipelineStep, Publication, utcnow

logger = logging.getLogger(__name__)

DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
_ACTIVE_JOBS = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
_ACTIVE_PUBLICATIONS = (PublicationStatus.QUEUED.value, PublicationStatus.RUNNING.value)
_PUBLISHED = PublicationStatus.PUBLISHED.value
_JOB_STAGING = re.compile(r"job-([0-9a-f]{32})-.+")
_PUBLICATION_DIR = re.compile(r"[0-9a-f]{32}")
_BATCH = 1000


@dataclass
class GcReport:
    """The store's sweep, plus the directories of finished (or vanished) publications and jobs, and the
    jobs whose outputs passed their retention (dropped, or for a dry run, that would be)."""

    store: SweepReport
    directories: SweepTally = field(default_factory=SweepTally)  # uploads/ and staging/ leftovers
    staging_images: int = 0  # staging tags of publication runs that can no longer write
    registry_images: int = 0  # manifests pushed by publication runs that can no longer write, unnamed
    grace_s: int = 0
    expired_outputs: int = 0  # jobs whose outputs reference was dropped (their blobs are in ``garbage``)
    retention_days: int = 0

    @property
    def freed_bytes(self) -> int:
        return self.store.freed_bytes + self.directories.bytes

    def as_dict(self) -> dict[str, Any]:
        s = self.store
        tally = {
            name: {"files": t.files, "bytes": t.bytes}
            for name, t in (
                ("referenced", s.referenced),
                ("young", s.young),
                ("garbage", s.garbage),
                ("keys", s.keys),
                ("partial", s.partial),
                ("directories", self.directories),
            )
        }
        return {
            "deleted": s.deleted,
            "grace_s": self.grace_s,
            "retention_days": self.retention_days,
            "expired_outputs": self.expired_outputs,
            **tally,
            "staging_images": self.staging_images,
            "registry_images": self.registry_images,
            "kept_racing": s.kept_racing,
            "freed_bytes": self.freed_bytes,
            "garbage_digests": list(s.garbage_digests),
        }


def digests_in(document: Any) -> set[str]:
    """Every artifact digest mentioned anywhere in a JSON document (or a plain string)."""
    if document is None:
        return set()
    text = document if isinstance(document, str) else json.dumps(document)
    return set(DIGEST_PATTERN.findall(text))


def _begin_snapshot(connection: Connection) -> None:
    """Make every following SELECT see the same committed state (a reference that moves from one row to
    another in one transaction is then seen in exactly one of them, never in neither)."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN")  # WAL: the snapshot is taken at the first read
    else:
        connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def _rows(connection: Connection, statement: Any) -> Iterable[Any]:
    return connection.execution_options(yield_per=_BATCH).execute(statement)


@dataclass
class References:
    """What the database references, read in one snapshot."""

    digests: set[str] = field(default_factory=set)
    # publications not final: their status and attempts (whose runs may still write: ``may_still_write``)
    active_publications: dict[str, tuple[str, int]] = field(default_factory=dict)
    active_jobs: set[str] = field(default_factory=set)  # ids of jobs not final
    expiring_outputs: int = 0  # jobs whose outputs were not counted: past retention (dry run)


def read_references(
    connection: Connection,
    outputs_expire_before: datetime | None = None,
    inputs_expire_before: datetime | None = None,
) -> References:
    """Every digest a row references, in one snapshot. A job finished before ``outputs_expire_before``
    does not reference its outputs (a dry run's view of what the retention would drop), nor one
    finished before ``inputs_expire_before`` its fed training examples (no row field is dropped for
    them: the blob is the job's alone, so the read judges their retention; None keeps them forever)."""
    _begin_snapshot(connection)
    refs: set[str] = set()
    versions = select(ListingVersion.artifact_digest, ListingVersion.manifest)
    for digest, manifest in _rows(connection, versions):
        refs |= digests_in(digest) | digests_in(manifest)
    for location, extra in _rows(connection, select(Listing.storage_location, Listing.extra)):
        refs |= digests_in(location) | digests_in(extra)
    active_jobs: set[str] = set()
    expiring_outputs = 0
    for job_id, status, outputs, result, inputs, finished_at in _rows(
        connection,
        select(Job.id, Job.status, Job.outputs_digest, Job.result, Job.inputs, Job.finished_at),
    ):
        if outputs is not None and is_expiring(status, finished_at, outputs_expire_before):
            expiring_outputs += 1
        else:
            refs |= digests_in(outputs)
        refs |= digests_in(result)
        if status in _ACTIVE_JOBS:
            active_jobs.add(job_id)
            refs |= digests_in(inputs)
        elif not is_expiring(status, finished_at, inputs_expire_before):
            refs |= digests_in((inputs or {}).get(FED_EXAMPLES_KEY))
    active_publications: dict[str, tuple[str, int]] = {}
    for pub_id, status, attempts, digest, meta in _rows(
        connection,
        select(
            Publication.id,
            Publication.status,
            Publication.attempts,
            Publication.artifact_digest,
            Publication.metadata_json,
        ).where(Publication.status.in_(_ACTIVE_PUBLICATIONS)),
    ):
        active_publications[pub_id] = (status, attempts)
        refs |= digests_in(digest) | digests_in(meta)
    for (config,) in _rows(connection, select(PipelineStep.config)):
        refs |= digests_in(config)
    return References(refs, active_publications, active_jobs, expiring_outputs)


def read_publication_runs(connection: Connection, ids: set[str]) -> dict[str, tuple[str, int]]:
    """The status and attempts of those of the publications ``ids`` that exist."""
    runs: dict[str, tuple[str, int]] = {}
    chunks = sorted(ids)
    for start in range(0, len(chunks), _BATCH):
        statement = select(Publication.id, Publication.status, Publication.attempts).where(
            Publication.id.in_(chunks[start : start + _BATCH])
        )
        runs.update(
            {pub_id: (status, attempts) for pub_id, status, attempts in connection.execute(statement)}
        )
    return runs


async def collect_garbage(
    settings: Settings, db: Database, *, delete: bool, store: ArtifactStore | None = None
) -> GcReport:
    """Report (and with ``delete``, remove) what no row references and is older than ``gc_grace_s``,
    after dropping the outputs of jobs past ``job_output_retention_days`` (a dry run only counts them)."""
    store = store or ArtifactStore.from_settings(settings)
    cutoff = time.time() - settings.gc_grace_s  # fixed before the references are read: see above
    now = utcnow()
    expire_before = outputs_expire_before(settings, now)
    expired = await expire_job_outputs(db, expire_before, now) if delete else 0  # committed before the read
    # Listed before the read: a tag is made after its run's claim, which the read then sees.
    images = ImageService.from_settings(settings)
    staged = await asyncio.to_thread(images.staging_images)
    refs = await db.read(
        partial(
            read_references,
            outputs_expire_before=None if delete else expire_before,
            inputs_expire_before=expire_before,
        )
    )
    swept = await asyncio.to_thread(sweep, store, refs.digests, cutoff, delete=delete)
    report = GcReport(
        swept,
        grace_s=settings.gc_grace_s,
        expired_outputs=expired if delete else refs.expiring_outputs,
        retention_days=settings.job_output_retention_days,
    )
    await asyncio.to_thread(
        _sweep_directories,
        settings.data_dir,
        refs.active_publications,
        refs.active_jobs,
        cutoff,
        delete,
        report,
    )
    runs = await db.read(partial(read_publication_runs, ids={image.publication_id for image in staged}))
    for image in staged:
        # Only this database's publications: an engine may serve other deployments (and test runs) too.
        if image.publication_id in runs and not may_still_write(*runs[image.publication_id], image.attempt):
            if delete:
                await asyncio.to_thread(images.remove, image.ref)
            report.staging_images += 1
    report.registry_images = await _collect_pushed_images(settings, db, cutoff, delete)
    logger.info(
        "artifact gc (%s): outputs of %d jobs expired; %d garbage blobs, %d bytes",
        "deleted" if delete else "dry run",
        report.expired_outputs,
        swept.garbage.files,
        report.freed_bytes,
    )
    return report


def read_image_references(
    connection: Connection, publication_ids: set[str], settled_before: datetime
) -> tuple[set[str], dict[str, tuple[str, int]], set[str]]:
    """In one snapshot: every image digest a listing version, a listing or an unfinished publication
    names, the status and attempts of those of ``publication_ids`` that exist, and those of them that
    are PUBLISHED and were last written before ``settled_before`` (past the grace)."""
    _begin_snapshot(connection)
    refs: set[str] = set()
    for (image_ref,) in _rows(connection, select(ListingVersion.image_ref)):
        refs |= digests_in(image_ref)
    for (location,) in _rows(connection, select(Listing.storage_location)):
        refs |= digests_in(location)
    unfinished = select(Publication.metadata_json).where(Publication.status.in_(_ACTIVE_PUBLICATIONS))
    for (meta,) in _rows(connection, unfinished):
        refs |= digests_in(meta)
    runs = read_publication_runs(connection, publication_ids)
    published = sorted(pub_id for pub_id, (status, _) in runs.items() if status == _PUBLISHED)
    settled: set[str] = set()
    for start in range(0, len(published), _BATCH):
        statement = select(Publication.id).where(
            Publication.id.in_(published[start : start + _BATCH]),
            Publication.status == _PUBLISHED,
            Publication.updated_at < settled_before,
        )
        settled |= set(connection.scalars(statement))
    return refs, runs, settled


def pushed_image_is_garbage(
    image: PushedImage,
    referenced: set[str],
    runs: dict[str, tuple[str, int]],
    settled: set[str] | frozenset[str] = frozenset(),
) -> bool:
    """Whether the collection deletes ``image``: pushed by a run of one of this database's publications
    (a registry may serve other deployments) that can no longer write, and named by no row. A PUBLISHED
    publication's images (its version's, deleted since, or an earlier run's) only once it is ``settled``:
    last written longer than the grace ago, as its version's image was listed and a reader that read the
    version before it was deleted may still pull it. An image from before the run label counts as the
    last run's."""
    if image.digest in referenced or image.publication_id not in runs:
        return False
    status, attempts = runs[image.publication_id]
    if status == _PUBLISHED and image.publication_id not in settled:
        return False
    return not may_still_write(status, attempts, attempts if image.run is None else image.run)


async def _collect_pushed_images(settings: Settings, db: Database, cutoff: float, delete: bool) -> int:
    """Count (and with ``delete``, delete) the registry's images that nothing names and no run will
    list. Listed before the read, as the staging tags: a push comes after its run's claim and before the
    version that names it, so the read sees the claim, and sees the version of any image it would keep."""
    if not settings.registry_url:
        return 0
    registry = Registry(settings.registry_url)
    try:
        try:
            pushed = await asyncio.to_thread(registry.published_images)
        except Exception as exc:  # the registry down must not stop the rest of the collection
            logger.warning("artifact gc: could not list the registry's images: %s", exc)
            return 0
        owners = {image.publication_id for image in pushed if image.publication_id}
        referenced, runs, settled = await db.read(
            partial(
                read_image_references,
                publication_ids=owners,
                settled_before=datetime.fromtimestamp(cutoff, UTC),
            )
        )
        garbage = [image for image in pushed if pushed_image_is_garbage(image, referenced, runs, settled)]
        if delete:
            for image in garbage:
                await asyncio.to_thread(registry.delete, image)
        return len(garbage)
    finally:
        registry.close()


def _sweep_directories(
    data_dir: Path,
    active_publications: dict[str, tuple[str, int]],
    active_jobs: set[str],
    cutoff: float,
    delete: bool,
    report: GcReport,
) -> None:
    """Staged uploads (``uploads/<publication>``) and staging directories (``staging/<publication>``,
    ``staging/job-<job>-*``) whose publication or job is final or gone, untouched since the cutoff, and
    a publication's run directories (``staging/<publication>/<run>``) whose run can no longer write,
    whatever their age. A directory whose row does not exist yet is young (the upload is staged just
    before its row commits), and a run newer than the read claimed the publication since
    (``may_still_write``). Other staging directories (verification, dataset scans) are removed by their
    owner's ``finally``.

    A run that can no longer write needs no grace: claims only count up and only a QUEUED row is
    claimed, so it never writes a row again, and its directory is its own (a later run stages in
    another). A fenced run still alive loses at most files it can no longer use (it stops at its next
    write), as when the publication's next run clears earlier runs' directories
    (``workflow._clear_earlier_runs``). The grace still covers the others: a final or missing row cannot
    tell a finished publication from one whose row has not committed yet, or one re-queued since."""
    candidates: list[tuple[Path, bool]] = []  # (directory, only once past the cutoff)
    for path in _subdirs(data_dir / "uploads"):
        if _PUBLICATION_DIR.fullmatch(path.name) and path.name not in active_publications:
            candidates.append((path, True))
    for path in _subdirs(data_dir / "staging"):
        job = _JOB_STAGING.fullmatch(path.name)
        owner = job.group(1) if job is not None else path.name
        active = active_jobs if job is not None else active_publications
        if (job is not None or _PUBLICATION_DIR.fullmatch(path.name)) and owner not in active:
            candidates.append((path, True))
        elif job is None and owner in active_publications:
            status, attempts = active_publications[owner]
            runs = [run for run in _subdirs(path) if run.name.isdigit()]
            candidates += [
                (run, False) for run in runs if not may_still_write(status, attempts, int(run.name))
            ]
    for path, graced in candidates:
        newest, size = _newest_and_size(path)
        if graced and newest >= cutoff:
            continue
        if delete:
            shutil.rmtree(path, ignore_errors=True)
        report.directories.add(size)


def _subdirs(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return []


def _newest_and_size(directory: Path) -> tuple[float, int]:
    newest = os.lstat(directory).st_mtime
    size = 0
    for root, dirs, files in os.walk(directory):
        for name, is_file in [(d, False) for d in dirs] + [(f, True) for f in files]:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            newest = max(newest, st.st_mtime)
            size += st.st_size if is_file else 0
    return newest, size
