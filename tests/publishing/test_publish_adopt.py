"""A publication run that finds its own earlier write: a re-run after its worker died between writing the
version and recording the outcome, and a write retried after its acknowledgement was lost."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from publishing_support import (
    Unqueued,
    kill_worker_after,
    package_files,
    sentiment_manifest,
    versions_of,
    zip_bytes,
)
from sqlalchemy import select, update

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing import release_steps
from catalog.publishing.service import PublishingService
from executor.publish_sandbox import ExecutorSandbox
from infra.settings import Settings
from infra.tables import ListingVersion, Publication, utcnow


@pytest.mark.parametrize("pinned", [None, "2.0.0"], ids=["unpinned", "pinned"])
async def test_a_re_run_adopts_the_version_its_killed_run_wrote(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool, pinned: str | None
) -> None:
    """A worker killed after the listing step committed the version, before the outcome was recorded,
    left the publication RUNNING; recovery's re-run published it again: a second version (1.0.1) when no
    version was pinned, and FAILED on "version 2.0.0 already exists" when one was. The version now names
    its publication, and the re-run adopts it: PUBLISHED, one version."""
    bwrap = settings.model_copy(update={"runtime": "bwrap"})
    manifest = sentiment_manifest(**({"version": pinned} if pinned else {}))
    service = PublishingService(bwrap, app.db, app.listings, ExecutorSandbox(bwrap), queue=Unqueued())
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(manifest))))

    kill_worker_after(bwrap, pub.id, "_list")
    version = pinned or "1.0.0"
    assert await versions_of(app, alice) == [version]  # written, the outcome not recorded
    async with app.db.session() as session:
        await session.execute(  # its heartbeat stopped with it
            update(Publication)
            .where(Publication.id == pub.id)
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    assert (await service.get(alice, pub.id)).status == "running"
    assert await service.recover() == 1

    await service.run(pub.id)
    done = await service.get(alice, pub.id)
    assert (done.status, done.error, done.version) == ("published", None, version)
    assert await versions_of(app, alice) == [version]
    assert [s.status for s in done.steps] == ["succeeded"] * 5  # four by the killed run, list adopted
    assert "adopted version" in " ".join(next(s for s in done.steps if s.name == "list").log)
    async with app.db.session() as session:
        row = await session.get(Publication, pub.id)
        stored = await session.scalar(select(ListingVersion).where(ListingVersion.publication_id == pub.id))
        assert (row.attempts, row.upload_path, row.listing_id) == (2, None, stored.listing_id)
        assert row.artifact_digest == stored.artifact_digest is not None
    assert not (service.workflow.staging_root / pub.id).exists()  # the killed run's files removed too
    assert not (service.upload_root / pub.id).exists()

    if pinned:  # another publication of the same pinned version is refused as before
        again = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(manifest))))
        assert await service.run(again.id) == "failed"
        refused = await service.get(alice, again.id)
        assert refused.status == "failed" and "already exists" in refused.error, refused.error
        assert await versions_of(app, alice) == [version]


def answer_lost_once(write: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """``write``, whose first call commits and then loses its acknowledgement: the connection drops before
    the answer arrives, as a server that goes down right after a commit leaves it."""
    calls = 0

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await write(*args, **kwargs)
        if calls == 1:
            raise ConnectionResetError("the connection was lost before the commit was acknowledged")
        return result

    return wrapped


@pytest.mark.parametrize("write", ["listing write", "outcome"])
async def test_a_retried_write_that_had_landed_is_recognised(
    settings: Settings,
    app: CatalogApp,
    alice: Actor,
    bwrap_ok: bool,
    monkeypatch: pytest.MonkeyPatch,
    write: str,
) -> None:
    """A write retried after its acknowledgement was lost finds its own commit. Taken as a fresh write,
    the listing's retry failed the publication on "a listing named 'tiny-sentiment' already exists", and
    the outcome's retry found the publication final and reported the run superseded (its upload kept).
    The listing's retry now finds the version that names the publication; the outcome's, the row final
    with its status under the run's own claim."""
    bwrap = settings.model_copy(update={"runtime": "bwrap", "job_final_write_retry_s": 30.0})
    service = PublishingService(bwrap, app.db, app.listings, ExecutorSandbox(bwrap), queue=Unqueued())
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    if write == "listing write":
        monkeypatch.setattr(release_steps, "write_version", answer_lost_once(release_steps.write_version))
    else:
        service.workflow._write_outcome = answer_lost_once(service.workflow._write_outcome)
    assert await service.run(pub.id) == "published"
    done = await service.get(alice, pub.id)
    assert (done.status, done.error, done.version) == ("published", None, "1.0.0")
    assert await versions_of(app, alice) == ["1.0.0"]
    assert not (service.upload_root / pub.id).exists()
