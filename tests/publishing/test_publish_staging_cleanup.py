"""What a killed publication run leaves behind — its staging directory and the images it tagged in the real
Docker engine — goes once no run of it can write any more: with the re-run, with recovery when it gives
the publication up, and with the garbage collection."""

from __future__ import annotations

import io
import os
import tarfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from publishing_support import (
    Unqueued,
    kill_worker_after,
    package_files,
    sentiment_manifest,
    versions_of,
    zip_bytes,
)
from sqlalchemy import update

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.artifact_gc import collect_garbage, pushed_image_is_garbage
from catalog.publishing.images import staging_repository
from catalog.publishing.registry import PushedImage, Registry
from catalog.publishing.service import PublishingService
from executor.publish_sandbox import ExecutorSandbox
from infra.settings import Settings
from infra.tables import Publication, utcnow

# The method after which the worker dies, per runtime: once the package's image is built and tagged
# (in the list step), or, under bubblewrap alone, once the verify step ran in the staging directory.
KILLED_AFTER = {"auto": "_package_image_of", "bwrap": "_verify"}


def service_for(settings: Settings, app: CatalogApp, runtime: str, request: pytest.FixtureRequest, **more):
    engine = request.getfixturevalue("docker_services") if runtime == "auto" else {}
    updated = settings.model_copy(update={"runtime": runtime, **engine, **more})
    return PublishingService(updated, app.db, app.listings, ExecutorSandbox(updated), queue=Unqueued())


async def killed_mid_run(service: PublishingService, alice: Actor, after: str | None = None) -> str:
    """A publication whose worker was killed mid-run (run 1) once ``after`` returned (by default, the
    runtime's ``KILLED_AFTER``), its heartbeat long stopped."""
    pub = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    kill_worker_after(service.settings, pub.id, after or KILLED_AFTER[service.settings.runtime])
    async with service.db.session() as session:
        await session.execute(
            update(Publication)
            .where(Publication.id == pub.id)
            .values(heartbeat_at=utcnow() - timedelta(hours=1))
        )
    assert (service.workflow.staging_root / pub.id / "1").is_dir()
    if service.settings.runtime == "auto":
        tags = [i.ref for i in service.images.staging_images(pub.id)]
        assert tags == [f"{staging_repository(pub.id, 1)}:built"]
    return pub.id


def left_behind(service: PublishingService, publication_id: str) -> tuple[list[str], list[str]]:
    """The publication's staging tags in the engine and its staging directories."""
    tags = [i.ref for i in service.images.staging_images(publication_id)]
    root = service.workflow.staging_root / publication_id
    return tags, sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize("killed_after", ["_package_image_of", "_list"], ids=["built", "listed"])
async def test_a_re_run_removes_the_images_its_killed_run_tagged(
    settings: Settings,
    app: CatalogApp,
    alice: Actor,
    bwrap_ok: bool,
    request: pytest.FixtureRequest,
    killed_after: str,
) -> None:
    """A worker killed after building the package's image (or after listing the version too) left
    ``mlrepo-staging/<publication>-1:built`` in the engine: the re-run (or the run that adopts the
    version) removed the killed run's staging directory but none of its images, and nothing else ever
    did. It now untags those of the runs before its own."""
    service = service_for(settings, app, "auto", request)
    pub_id = await killed_mid_run(service, alice, killed_after)
    assert await service.recover() == 1
    assert await service.run(pub_id) == "published"
    assert await versions_of(app, alice) == ["1.0.0"]
    assert left_behind(service, pub_id) == ([], [])


@pytest.mark.parametrize("runtime", ["auto", "bwrap"])
async def test_recovery_that_gives_a_publication_up_removes_what_its_runs_left(
    settings: Settings,
    app: CatalogApp,
    alice: Actor,
    bwrap_ok: bool,
    request: pytest.FixtureRequest,
    runtime: str,
) -> None:
    """Recovery FAILS a publication that lost its worker on each of its ``job_max_attempts`` runs; no run
    comes back for it. It removed the staged upload only: the staging directory and images stayed
    until the garbage collection (the images forever). Now they go with the upload."""
    service = service_for(settings, app, runtime, request, job_max_attempts=1)
    pub_id = await killed_mid_run(service, alice)
    await service.recover()
    assert (await service.get(alice, pub_id)).status == "failed"
    assert left_behind(service, pub_id) == ([], [])
    assert not (service.upload_root / pub_id).exists()


async def test_gc_removes_what_runs_that_can_no_longer_write_left(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool, request: pytest.FixtureRequest
) -> None:
    """A run killed on one worker and re-run on another (or never re-run) leaves its staging directory
    and images where it ran: the collection swept only the directories of final publications, and no
    image. It now removes those of every run that can no longer write (here: recovery re-queued the
    publication, so run 1 never writes again), and leaves alone the tags of publications that are not
    this database's (an engine may serve others)."""
    service = service_for(settings, app, "auto", request)
    pub_id = await killed_mid_run(service, alice)
    assert await service.recover() == 1  # QUEUED: run 1 may no longer write
    run_dir = service.workflow.staging_root / pub_id / "1"
    then = time.time() - 3 * 86_400
    for path in [run_dir, *run_dir.rglob("*")]:
        os.utime(path, (then, then), follow_symlinks=False)
    images = service.images
    foreign = f"{staging_repository(uuid.uuid4().hex, 1)}"
    images.tag(images.base_image, foreign, "source")
    try:
        dry = await collect_garbage(service.settings, app.db, delete=False)
        assert (dry.staging_images, dry.directories.files) == (1, 1)
        assert left_behind(service, pub_id) == ([f"{staging_repository(pub_id, 1)}:built"], ["1"])
        report = await collect_garbage(service.settings, app.db, delete=True)
        assert (report.staging_images, report.directories.files) == (1, 1)
        assert report.as_dict()["staging_images"] == 1
        assert left_behind(service, pub_id) == ([], [])
        assert [i.ref for i in images.staging_images(foreign.rsplit("/", 1)[1][:32])] == [f"{foreign}:source"]
    finally:
        images.remove(f"{foreign}:source")
    assert await service.run(pub_id) == "published"  # the next run is not hindered
    assert left_behind(service, pub_id) == ([], [])


def test_a_staging_tag_names_its_run() -> None:
    from catalog.publishing.images import staging_image

    found = staging_image(f"{staging_repository('ab' * 16, 12)}:normalized")
    assert found is not None and (found.publication_id, found.attempt) == ("ab" * 16, 12)
    assert staging_image("mlrepo/alice/tiny:1.0.0") is None
    assert staging_image(f"registry:5000/{staging_repository('ab' * 16, 1)}:built") is None
    assert Path(staging_repository("ab" * 16, 3)).name == f"{'ab' * 16}-3"


async def test_a_run_whose_image_build_failed_untags_the_source_it_tagged(
    docker_publishing: PublishingService, alice: Actor, tmp_path: Path
) -> None:
    """A run untagged its images only once it had derived one, so a producer's image whose derived
    build failed stayed tagged ``mlrepo-staging/<publication>-1:source`` for good. A run now untags
    whatever it tagged."""
    svc = docker_publishing
    dockerfile = f'FROM {svc.settings.base_image}\nCOPY model.py /app\nENTRYPOINT ["python3", "/app"]\n'
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile.encode()), ("model.py", b"print('hi')\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    local = f"producer-test/{uuid.uuid4().hex[:10]}:1"  # its /app is a file: WORKDIR /app cannot be made
    svc.images.client.images.build(fileobj=context, custom_context=True, tag=local, network_mode="none")
    try:
        tarball = tmp_path / "image.tar"
        with open(tarball, "wb") as f:
            for chunk in svc.images.client.images.get(local).save(named=True):
                f.write(chunk)
        manifest = sentiment_manifest(name="app-is-a-file", verify=False)
        with open(tarball, "rb") as f:
            pub = await svc.submit_image(alice, manifest, tarball=f)
        await svc.queue.drain()
        done = await svc.get(alice, pub.id)
        assert done.status == "failed" and "image build failed" in (done.error or ""), done.error
        assert left_behind(svc, pub.id) == ([], [])
    finally:
        svc.images.remove(local)


async def test_gc_deletes_the_registry_images_of_failed_publications(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool, request: pytest.FixtureRequest
) -> None:
    """A run pushes its image before it lists it: one that failed or died in between left the image in
    the real registry forever, named by no listing, and nothing deleted it. The collection now deletes
    the manifests of runs that can no longer write (here: killed after its push, then given up by
    recovery), and keeps a published listing's image: here its retry, of the same name and version (it
    re-pointed the version's tag, which left the failed run's manifest untagged, out of the collection's
    sight, until each run pushed under a tag of its own)."""
    service = service_for(settings, app, "auto", request, job_max_attempts=1)
    failed_id = await killed_mid_run(service, alice, after="_containerize")
    await service.recover()
    assert (await service.get(alice, failed_id)).status == "failed"
    registry = Registry(service.settings.registry_url)
    try:
        [left] = [i for i in registry.published_images() if i.publication_id == failed_id]
        assert (left.repository, left.run) == ("mlrepo/alice/tiny-sentiment", 1)
        kept = await service.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
        assert await service.run(kept.id) == "published"
        kept_ref = (await service.get(alice, kept.id)).image_ref
        assert kept_ref and "/mlrepo/alice/tiny-sentiment@sha256:" in kept_ref

        dry = await collect_garbage(service.settings, app.db, delete=False)
        assert dry.registry_images == 1 and dry.as_dict()["registry_images"] == 1
        assert [i.digest for i in registry.published_images() if i.publication_id == failed_id] == [
            left.digest
        ]
        report = await collect_garbage(service.settings, app.db, delete=True)
        assert report.registry_images == 1
        owners = {i.publication_id for i in registry.published_images()}
        assert failed_id not in owners and kept.id in owners
        assert (await collect_garbage(service.settings, app.db, delete=False)).registry_images == 0
    finally:
        registry.close()


async def test_gc_deletes_the_registry_images_of_published_publications_nothing_names_any_more(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool, request: pytest.FixtureRequest
) -> None:
    """A PUBLISHED publication's images stayed in the real registry forever: the one its run 1 pushed
    before it was killed (run 2 published under a tag of its own), and the one its listing named once
    the listing was deleted. The collection now deletes them once the publication is past the grace (a
    reader that read the version before it went may still pull it), and keeps a listed version's image."""
    service = service_for(settings, app, "auto", request, job_max_attempts=2)
    pub_id = await killed_mid_run(service, alice, after="_containerize")
    assert await service.recover() == 1
    assert await service.run(pub_id) == "published"
    listing_id = (await service.get(alice, pub_id)).listing_id
    assert listing_id
    kept = await service.submit_package(
        alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest(name="tiny-sentiment-kept"))))
    )
    assert await service.run(kept.id) == "published"
    registry = Registry(service.settings.registry_url)

    def images_of(publication_id: str) -> list[PushedImage]:
        return sorted((i for i in registry.published_images() if i.publication_id == publication_id), key=str)

    async def settle(*publication_ids: str) -> None:  # past the grace: last written two graces ago
        async with app.db.session() as session:
            await session.execute(
                update(Publication)
                .where(Publication.id.in_(publication_ids))
                .values(updated_at=utcnow() - timedelta(seconds=2 * settings.gc_grace_s))
            )

    try:
        assert sorted(i.run for i in images_of(pub_id)) == [1, 2]
        await app.listings.delete(alice, listing_id)
        # Within the grace, nothing of a published publication goes.
        assert (await collect_garbage(service.settings, app.db, delete=True)).registry_images == 0
        assert len(images_of(pub_id)) == 2
        await settle(pub_id, kept.id)
        dry = await collect_garbage(service.settings, app.db, delete=False)
        assert dry.registry_images == 2 and len(images_of(pub_id)) == 2
        assert (await collect_garbage(service.settings, app.db, delete=True)).registry_images == 2
        assert images_of(pub_id) == []
        assert [i.run for i in images_of(kept.id)] == [1]  # its listing still names it
        assert (await collect_garbage(service.settings, app.db, delete=False)).registry_images == 0
    finally:
        registry.close()


def test_only_images_of_runs_that_can_no_longer_write_and_that_nothing_names_are_garbage() -> None:
    pub, digest = "ab" * 16, "sha256:" + "1" * 64
    image = PushedImage("mlrepo/alice/x", digest, pub, 1)
    cases = [
        ({pub: ("failed", 1)}, set(), True),
        ({pub: ("failed", 1)}, {digest}, False),  # a listing version names it
        ({pub: ("running", 1)}, set(), False),  # its run may still list it
        ({pub: ("running", 2)}, set(), True),  # run 2 took over: run 1 never writes again
        ({pub: ("queued", 1)}, set(), True),
        ({pub: ("published", 2)}, set(), False),  # published, within the grace: it may still be pulled
        ({}, set(), False),  # another deployment's publication
    ]
    for runs, referenced, garbage in cases:
        assert pushed_image_is_garbage(image, referenced, runs) is garbage, (runs, referenced)
    assert (
        pushed_image_is_garbage(PushedImage("mlrepo/a/x", digest, pub, None), set(), {pub: ("running", 1)})
        is False
    )
    # Published and past the grace: its earlier run's image, or its own once nothing names it.
    assert pushed_image_is_garbage(image, set(), {pub: ("published", 2)}, {pub}) is True
    assert pushed_image_is_garbage(image, {digest}, {pub: ("published", 1)}, {pub}) is False
