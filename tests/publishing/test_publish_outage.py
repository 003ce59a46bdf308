"""A publication rides out a PostgreSQL restart in the middle of its run.

The outage is real, as in ``tests/executor/test_job_outcome_outage.py``: the test's own cluster is shut
down (its clients' connections cut, new ones refused) just before one of the publication's writes, and
started again a few seconds later."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from publishing_support import Unqueued, package_files, sentiment_manifest, versions_of, zip_bytes
from sqlalchemy import select

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing.service import PublishingService
from executor.publish_sandbox import ExecutorSandbox
from infra.db import is_unreachable
from infra.settings import Settings
from infra.tables import ListingVersion, Publication
from tests.db_outage import DOWN_S, DatabaseOutage, migrated_database

if TYPE_CHECKING:
    from tests.conftest import PostgresCluster


@pytest.fixture
def database_url(private_postgres_cluster: PostgresCluster) -> str:
    """Every fixture of this module (settings, app, alice) works on the cluster the test restarts."""
    return migrated_database(private_postgres_cluster)


def around(method: Callable[..., Awaitable[Any]], outage: DatabaseOutage, after: bool) -> Callable[..., Any]:
    """``method``, with the outage beginning just before it (``after=False``) or just after it."""

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not after:
            await outage.begin()
        result = await method(*args, **kwargs)
        if after:
            await outage.begin()
        return result

    return wrapped


# Which of the publication's writes meets the outage: (the workflow's part, its method, whether the outage
# begins after it rather than before).
WRITES = {
    "step record": ("workflow", "_verify", True),  # the verify step's body is done: its record comes next
    "listing write": ("index", "embed", True),  # the new listing's vector: its transaction comes next
    "outcome": ("workflow", "_finish", False),
}


@pytest.mark.parametrize("write", list(WRITES))
async def test_a_publication_rides_out_a_database_restart_at_its_writes(
    settings: Settings,
    app: CatalogApp,
    alice: Actor,
    bwrap_ok: bool,
    private_postgres_cluster: PostgresCluster,
    write: str,
) -> None:
    """A step's record, the listing write and the outcome were written once: a PostgreSQL restart at any
    of them stopped the run with an OSError (connection refused), leaving the publication RUNNING for
    recovery to run again from the start (or, had the database come back between a failed step and its
    record, FAILED for the producer). Each is now retried while the database is unreachable, for
    ``job_final_write_retry_s``, under the run's claim: the run publishes once, in one listing write."""
    bwrap = settings.model_copy(update={"runtime": "bwrap", "job_final_write_retry_s": 60.0})
    service = PublishingService(bwrap, app.db, app.listings, ExecutorSandbox(bwrap), queue=Unqueued())
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    outage = DatabaseOutage(private_postgres_cluster)
    part, method, after = WRITES[write]
    target = service.workflow if part == "workflow" else service.workflow.listings.index
    setattr(target, method, around(getattr(target, method), outage, after))
    try:
        outcome = await asyncio.wait_for(service.run(pub.id), 120)
        written_after = time.monotonic() - (outage.began or 0)
    finally:
        await outage.over()
    print(f"{write}: the run ended {written_after:.1f} s after the database went down for {DOWN_S} s")
    assert outage.began is not None, "the outage never began"
    assert outcome == "published"
    done = await service.get(alice, pub.id)
    assert (done.status, done.error, done.version) == ("published", None, "1.0.0")
    assert [s.status for s in done.steps] == ["succeeded"] * 5
    assert await versions_of(app, alice) == ["1.0.0"]
    async with app.db.session() as session:
        row = await session.get(Publication, pub.id)
        stored = await session.scalar(select(ListingVersion).where(ListingVersion.publication_id == pub.id))
    assert (row.attempts, row.upload_path, row.listing_id) == (1, None, stored.listing_id)
    assert not (service.workflow.staging_root / pub.id).exists()
    assert not (service.upload_root / pub.id).exists()
    assert written_after >= DOWN_S


async def test_a_publication_the_database_left_unable_to_go_on_is_run_again_not_failed(
    settings: Settings,
    app: CatalogApp,
    alice: Actor,
    bwrap_ok: bool,
    private_postgres_cluster: PostgresCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past ``job_final_write_retry_s`` a step that cannot reach the database stops the run, but not by
    failing the publication: its failure, recorded once the database was back, blamed the producer's
    upload ("internal error in step package") for the outage. It stays RUNNING, and recovery runs it
    again, as it does for a lost worker."""
    bwrap = settings.model_copy(
        update={
            "runtime": "bwrap",
            "job_final_write_retry_s": 5.0,
            "job_heartbeat_s": 0.2,
            "job_stale_after_s": 1.0,
        }
    )
    service = PublishingService(bwrap, app.db, app.listings, ExecutorSandbox(bwrap), queue=Unqueued())
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))

    def gave_up() -> bool:  # the database comes back once the package step has given up reading it
        return any(r.name == "mlrepo.publishing" and r.levelno >= logging.WARNING for r in caplog.records)

    outage = DatabaseOutage(private_postgres_cluster, back_when=gave_up)
    # The package's files are read: the step reads its target listing next, into the outage.
    service.workflow._package_code = around(service.workflow._package_code, outage, after=True)
    try:
        with pytest.raises(OSError) as unreachable:
            await asyncio.wait_for(service.run(pub.id), 120)
        assert is_unreachable(unreachable.value)
    finally:
        await outage.over()
    left = await service.get(alice, pub.id)
    assert (left.status, left.error) == ("running", None)
    assert [s.status for s in left.steps][:2] == ["running", "pending"]
    for _ in range(100):  # once its heartbeat is job_stale_after_s old
        await service.recover()
        if (await service.get(alice, pub.id)).status == "queued":
            break
        await asyncio.sleep(0.1)
    assert await asyncio.wait_for(service.run(pub.id), 120) == "published"
    done = await service.get(alice, pub.id)
    assert (done.status, done.error, done.version) == ("published", None, "1.0.0")
    assert await versions_of(app, alice) == ["1.0.0"]
    async with app.db.session() as session:
        assert (await session.get(Publication, pub.id)).attempts == 2
