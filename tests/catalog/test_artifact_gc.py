"""Artifact garbage collection against the database (SQLite and PostgreSQL): every kind of row that
references a blob keeps it, deleting what referenced it frees it, and young blobs always stay."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import event

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.artifact_gc import collect_garbage, digests_in
from catalog.job_output_retention import expire_job_outputs, outputs_expire_before
from catalog.listing_input import parse_listing
from catalog.publishing.listing_writer import Target, write_version
from executor.job_outputs import write_outputs
from infra.artifacts import ArtifactStore, StoredArtifact
from infra.settings import Settings
from infra.tables import Job, Publication, utcnow
from tests.job_rows import finished_job as finished_job_row

OLD_S = 3 * 86_400  # well past the default grace period (one day)


@pytest.fixture
def store(settings: Settings) -> ArtifactStore:
    return ArtifactStore.from_settings(settings)


def age(*paths: Path) -> None:
    then = time.time() - OLD_S
    for path in paths:
        os.utime(path, (then, then))


def old_blob(store: ArtifactStore, data: bytes, encrypt: bool = False) -> StoredArtifact:
    art = store.put_bytes(data, encrypt=encrypt)
    age(art.path)
    return art


async def list_package(app: CatalogApp, actor: Actor, name: str, art: StoredArtifact) -> str:
    """A listing with one version pointing at ``art``, written the way publishing writes it."""
    return await write_version(
        app.listings,
        actor,
        Target(None, "1.0.0", None),
        {"name": name, "kind": "algorithm", "category": "nlp", "description": f"{name} for gc tests"},
        {"artifact_kind": "package", "artifact_digest": art.digest, "encrypted": art.encrypted},
        {"producer_name": "alice"},
    )


async def add_row(app: CatalogApp, row: Any) -> None:
    async with app.db.session() as session:
        session.add(row)


async def set_status(app: CatalogApp, table: Any, row_id: str, status: str) -> None:
    async with app.db.session() as session:
        (await session.get(table, row_id)).status = status


async def gc(app: CatalogApp, settings: Settings, delete: bool = True):
    return await collect_garbage(settings, app.db, delete=delete)


async def test_deleting_a_listing_frees_its_package(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore
) -> None:
    art = old_blob(store, b"package of a listing")
    listing_id = await list_package(catalog_app, alice, "tagger", art)
    report = await gc(catalog_app, settings)
    assert report.store.garbage.files == 0 and store.exists(art.digest)

    await catalog_app.listings.delete(alice, listing_id)
    dry = await gc(catalog_app, settings, delete=False)
    assert dry.store.garbage_digests == [art.digest] and store.exists(art.digest)
    report = await gc(catalog_app, settings)
    assert report.store.garbage_digests == [art.digest]
    assert report.freed_bytes >= len(b"package of a listing")
    assert not store.exists(art.digest)


async def test_deleting_an_encrypted_listing_frees_its_key(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore
) -> None:
    art = old_blob(store, b"encrypted package", encrypt=True)
    age(store._key_path(art.digest))
    listing_id = await list_package(catalog_app, alice, "secret", art)
    assert (await gc(catalog_app, settings)).store.keys.files == 0
    await catalog_app.listings.delete(alice, listing_id)
    report = await gc(catalog_app, settings)
    assert report.store.keys.files == 1 and not store._key_path(art.digest).exists()


async def test_a_trained_models_storage_location_keeps_its_package(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore
) -> None:
    art = old_blob(store, b"model")
    listing = await catalog_app.listings.create(alice, {"name": "m", "kind": "model", "category": "nlp"})
    # As training names its model's package (a caller may not type in a digest: catalog.artifact_refs).
    await catalog_app.listings.set_system_fields(listing.id, storage_location=f"artifact:{art.digest}")
    assert (await gc(catalog_app, settings)).store.garbage.files == 0


async def test_a_digest_in_a_listings_extra_fields_keeps_its_blob(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore
) -> None:
    art = old_blob(store, b"weights referenced from extra")
    # The trusted path (the operator's bulk import): a caller may not type in a digest.
    (listing,) = await catalog_app.listings.create_many(
        alice.account_id,
        [parse_listing({"name": "w", "kind": "model", "category": "nlp", "weights": art.digest})],
    )
    assert (await gc(catalog_app, settings)).store.garbage.files == 0
    await catalog_app.listings.delete(alice, listing.id)
    assert (await gc(catalog_app, settings)).store.garbage_digests == [art.digest]


async def test_job_outputs_stay_while_referenced_crashed_ones_go(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore, tmp_path: Path
) -> None:
    finished = write_outputs(store, tmp_path / "a", [{"id": 1, "output": "kept"}])
    crashed = write_outputs(store, tmp_path / "b", [{"id": 1, "output": "never referenced"}])
    age(store.locate(finished.digest).path, store.locate(crashed.digest).path)
    await add_row(
        catalog_app,
        Job(
            owner_id=alice.account_id,
            task="inference",
            status="succeeded",
            outputs_digest=finished.digest,
            outputs_count=1,
        ),
    )
    report = await gc(catalog_app, settings)
    assert report.store.garbage_digests == [crashed.digest]
    assert store.exists(finished.digest)


async def test_a_running_jobs_outputs_are_not_collected(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore, tmp_path: Path
) -> None:
    """Outputs are stored before the job's final transaction names them: the grace period covers it."""
    job = Job(owner_id=alice.account_id, task="inference", status="running")
    await add_row(catalog_app, job)
    outputs = write_outputs(store, tmp_path / "out", [{"id": 1, "output": "just written"}])
    report = await gc(catalog_app, settings)
    assert report.store.young.files == 1 and report.store.garbage.files == 0
    async with catalog_app.db.session() as session:
        row = await session.get(Job, job.id)
        row.status, row.outputs_digest, row.outputs_count = "succeeded", outputs.digest, 1
    age(store.locate(outputs.digest).path)
    assert (await gc(catalog_app, settings)).store.garbage.files == 0
    assert store.read_bytes(outputs.digest).startswith(b'{"id":1')


async def test_a_waiting_job_keeps_its_pinned_dataset_after_the_listing_is_deleted(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore
) -> None:
    data = old_blob(store, b'{"text": "a record"}\n')
    listing_id = await list_package(catalog_app, alice, "corpus", data)
    job = Job(
        owner_id=alice.account_id,
        task="inference",
        status="queued",
        inputs={"dataset_listing_id": listing_id, "dataset_digest": data.digest},
    )
    await add_row(catalog_app, job)
    await catalog_app.listings.delete(alice, listing_id)
    assert (await gc(catalog_app, settings)).store.garbage.files == 0
    await set_status(catalog_app, Job, job.id, "failed")  # a final job never reads its inputs again
    assert (await gc(catalog_app, settings)).store.garbage_digests == [data.digest]


async def test_an_unfinished_publication_keeps_its_package_a_failed_one_does_not(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore
) -> None:
    art = old_blob(store, b"package being listed")
    pub = Publication(
        owner_id=alice.account_id, source_kind="package", status="running", artifact_digest=art.digest
    )
    await add_row(catalog_app, pub)
    assert (await gc(catalog_app, settings)).store.garbage.files == 0
    await set_status(catalog_app, Publication, pub.id, "failed")
    assert (await gc(catalog_app, settings)).store.garbage_digests == [art.digest]


async def collect_aged_dirs(
    app: CatalogApp,
    settings: Settings,
    dirs: dict[str, Path],
    file_name: str,
    collected: int,
    aged: bool = True,
) -> set[str]:
    """Each of ``dirs`` made holding a 5-byte ``file_name``, both past the grace period unless not
    ``aged``; a dry run that counts ``collected`` of them and removes none, then a collection that removes
    those: the names of the directories still there."""
    for path in dirs.values():
        path.mkdir(parents=True)
        (path / file_name).write_bytes(b"12345")
        if aged:
            age(path / file_name, path)
    dry = await gc(app, settings, delete=False)
    assert dry.directories.files == collected and all(p.exists() for p in dirs.values())
    report = await gc(app, settings)
    assert (report.directories.files, report.directories.bytes) == (collected, 5 * collected)
    return {name for name, path in dirs.items() if path.exists()}


async def runs_of_a_running_publication(app: CatalogApp, owner: Actor, staging: Path) -> dict[str, Path]:
    """A publication RUNNING at its second attempt: the staging directories of its first run (superseded,
    can no longer write), its second (holding it) and a third (claimed after gc read the row)."""
    running = Publication(owner_id=owner.account_id, source_kind="package", status="running", attempts=2)
    await add_row(app, running)
    return {
        "superseded run": staging / running.id / "1",
        "holding run": staging / running.id / "2",
        "later claim": staging / running.id / "3",
    }


async def test_uploads_and_staging_of_finished_publications_and_jobs_go(
    catalog_app: CatalogApp, alice: Actor, settings: Settings
) -> None:
    failed = Publication(owner_id=alice.account_id, source_kind="package", status="failed")
    queued = Publication(owner_id=alice.account_id, source_kind="package", status="queued")
    running = Job(owner_id=alice.account_id, task="inference", status="running")
    for row in (failed, queued, running):
        await add_row(catalog_app, row)
    dirs = {
        "failed upload": settings.data_dir / "uploads" / failed.id,
        "queued upload": settings.data_dir / "uploads" / queued.id,
        "running job": settings.data_dir / "staging" / f"job-{running.id}-x1",
        "crashed job": settings.data_dir / "staging" / f"job-{'0' * 32}-x2",
        "verification": settings.data_dir / "staging" / "verify-x3",
    }
    kept = await collect_aged_dirs(catalog_app, settings, dirs, "upload", collected=2)
    assert kept == {"queued upload", "running job", "verification"}


async def test_staging_of_publication_runs_that_can_no_longer_write_goes(
    catalog_app: CatalogApp, alice: Actor, settings: Settings
) -> None:
    """A publication still queued or running kept every run's staging directory, though only the run
    holding it (RUNNING, its ``attempts``) can write: a run killed on one worker and re-run on another left
    its directory on the first for good. Those of runs that can no longer write now go (past the grace
    period); the holding run's stays, and so does that of a run that claimed it after the read."""
    requeued = Publication(owner_id=alice.account_id, source_kind="package", status="queued", attempts=1)
    await add_row(catalog_app, requeued)
    staging = settings.data_dir / "staging"
    dirs = await runs_of_a_running_publication(catalog_app, alice, staging)
    dirs["re-queued run"] = staging / requeued.id / "1"
    kept = await collect_aged_dirs(catalog_app, settings, dirs, "package.tar.gz", collected=2)
    assert kept == {"holding run", "later claim"}


async def test_staging_of_a_fenced_run_goes_without_waiting_for_the_grace_period(
    catalog_app: CatalogApp, alice: Actor, settings: Settings
) -> None:
    """A run that can no longer write (its claim superseded) kept its staging directory for the grace
    period (a day by default) though nothing can use it again; it now goes at the first collection. The
    holding run's and a later claim's stay, and so do a finished publication's (its row cannot tell it
    from a re-queued one), all as fresh as the fenced run's."""
    failed = Publication(owner_id=alice.account_id, source_kind="package", status="failed", attempts=1)
    await add_row(catalog_app, failed)
    staging = settings.data_dir / "staging"
    dirs = await runs_of_a_running_publication(catalog_app, alice, staging)
    dirs["failed publication"] = staging / failed.id
    kept = await collect_aged_dirs(catalog_app, settings, dirs, "package.tar.gz", collected=1, aged=False)
    assert kept == {"holding run", "later claim", "failed publication"}


async def finished_job(
    app: CatalogApp, actor: Actor, store: ArtifactStore, directory: Path, days_ago: float, output: str
) -> Job:
    """A succeeded job with one stored output (its blob aged too), finished ``days_ago`` days ago."""
    outputs = write_outputs(store, directory, [{"output": output}])
    age(store.locate(outputs.digest).path)
    job = finished_job_row(actor.account_id, outputs.digest, days_ago)
    await add_row(app, job)
    return job


async def job_row(app: CatalogApp, job_id: str) -> Job:
    async with app.db.session() as session:
        return await session.get(Job, job_id)


async def test_outputs_past_their_retention_are_dropped_and_their_blob_swept(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore, tmp_path: Path
) -> None:
    """Finished jobs' outputs were kept forever. Past ``job_output_retention_days`` the row drops its
    reference (keeping status, summary, metrics and count) and the same collection sweeps the blob."""
    assert settings.job_output_retention_days == 30
    old = await finished_job(catalog_app, alice, store, tmp_path / "a", 31, "old")
    recent = await finished_job(catalog_app, alice, store, tmp_path / "b", 29, "recent")
    old_digest = old.outputs_digest

    dry = await gc(catalog_app, settings, delete=False)
    assert dry.expired_outputs == 1 and dry.store.garbage_digests == [old_digest]
    assert dry.as_dict()["expired_outputs"] == 1 and dry.as_dict()["retention_days"] == 30
    assert (await job_row(catalog_app, old.id)).outputs_digest == old_digest and store.exists(old_digest)

    report = await gc(catalog_app, settings)
    assert report.expired_outputs == 1 and report.store.garbage_digests == [old_digest]
    assert not store.exists(old_digest) and store.exists(recent.outputs_digest)
    row = await job_row(catalog_app, old.id)
    assert row.outputs_digest is None and row.outputs_expired_at is not None
    assert (row.status, row.result, row.metrics, row.outputs_count) == (
        "succeeded",
        {"succeeded": 1, "failed": 0},
        {"records": 1},
        1,
    )
    assert (await job_row(catalog_app, recent.id)).outputs_expired_at is None
    assert (await gc(catalog_app, settings)).expired_outputs == 0


async def test_a_crash_after_expiring_the_row_leaves_the_blob_for_the_next_collection(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore, tmp_path: Path
) -> None:
    """The row is updated first; the blob goes only with a later sweep, so no row names a missing blob."""
    job = await finished_job(catalog_app, alice, store, tmp_path / "a", 40, "old")
    now = utcnow()
    assert await expire_job_outputs(catalog_app.db, outputs_expire_before(settings, now), now) == 1
    assert store.exists(job.outputs_digest)  # the process "crashed" here
    report = await gc(catalog_app, settings)
    assert report.expired_outputs == 0 and report.store.garbage_digests == [job.outputs_digest]


async def test_outputs_another_job_still_holds_stay_and_zero_days_keeps_forever(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore, tmp_path: Path
) -> None:
    old = await finished_job(catalog_app, alice, store, tmp_path / "a", 40, "same")
    recent = await finished_job(catalog_app, alice, store, tmp_path / "b", 1, "same")
    assert old.outputs_digest == recent.outputs_digest  # one content-addressed blob
    forever = settings.model_copy(update={"job_output_retention_days": 0})
    report = await gc(catalog_app, forever)
    assert (report.expired_outputs, report.store.garbage.files) == (0, 0)
    assert (await job_row(catalog_app, old.id)).outputs_digest == old.outputs_digest

    report = await gc(catalog_app, settings)
    assert report.expired_outputs == 1 and report.store.garbage.files == 0
    assert store.exists(recent.outputs_digest)


async def test_a_backlog_of_expired_outputs_is_dropped_in_bounded_transactions(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore, tmp_path: Path
) -> None:
    """A first collection after months found every old job at once and dropped them in one UPDATE, which
    held its locks (on SQLite: the whole database) for as long as that took. Now each transaction drops a
    bounded number of them; all go, and only they."""
    old = [
        await finished_job(catalog_app, alice, store, tmp_path / str(n), 40 + n, f"o{n}") for n in range(5)
    ]
    recent = await finished_job(catalog_app, alice, store, tmp_path / "recent", 1, "recent")
    running = await finished_job(catalog_app, alice, store, tmp_path / "running", 40, "running")
    await set_status(catalog_app, Job, running.id, "running")
    updated: list[int] = []
    commits: list[int] = []

    def on_execute(_conn, cursor, statement: str, *_args) -> None:
        if statement.lstrip().upper().startswith("UPDATE JOBS"):
            updated.append(cursor.rowcount)

    def on_commit(_conn) -> None:
        commits.append(len(updated))

    engine = catalog_app.db.engine.sync_engine
    event.listen(engine, "after_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    try:
        now = utcnow()
        expired = await expire_job_outputs(
            catalog_app.db, outputs_expire_before(settings, now), now, batch_rows=2
        )
    finally:
        event.remove(engine, "after_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)
    # Seven jobs, two a transaction (in id order, so which ones go together varies): four transactions,
    # each updating at most two rows, committed before the next one started.
    assert expired == 5 and sum(updated) == 5 and max(updated) <= 2
    assert len(commits) == 4 and commits[-1] == len(updated)
    for job in old:
        assert (await job_row(catalog_app, job.id)).outputs_digest is None
    for job in (recent, running):
        assert (await job_row(catalog_app, job.id)).outputs_digest == job.outputs_digest


async def test_unfinished_jobs_keep_their_outputs_whatever_their_age(
    catalog_app: CatalogApp, alice: Actor, settings: Settings, store: ArtifactStore, tmp_path: Path
) -> None:
    job = await finished_job(catalog_app, alice, store, tmp_path / "a", 40, "old")
    await set_status(catalog_app, Job, job.id, "running")  # e.g. a stale finished_at of an earlier attempt
    report = await gc(catalog_app, settings)
    assert report.expired_outputs == 0 and store.exists(job.outputs_digest)


def test_a_negative_retention_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="job_output_retention_days"):
        Settings(data_dir=tmp_path, job_output_retention_days=-1)


def test_digests_are_found_anywhere_in_a_document() -> None:
    digest = "sha256:" + "ab" * 32
    assert digests_in({"steps": [{"config": {"model": f"artifact:{digest}"}}]}) == {digest}
    assert digests_in(None) == set() and digests_in("sha256:short") == set()


def test_a_grace_period_under_an_hour_is_refused(tmp_path: Path) -> None:
    """A publication's package is named by no row until its image is pushed and its version listed."""
    with pytest.raises(ValidationError, match="gc_grace_s"):
        Settings(data_dir=tmp_path, gc_grace_s=600)
