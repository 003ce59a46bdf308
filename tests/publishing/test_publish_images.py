"""Container images through the real engine and registry: containerized packages, pushed images, tarballs."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest
from publishing_support import (
    PREDICT,
    make_service,
    package_files,
    sentiment_manifest,
    targz_bytes,
    zip_bytes,
)

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing.contract import encode_records, parse_replies
from catalog.publishing.service import PublishingService
from catalog.search_service import SearchRequest
from executor.runtimes.base import Limits, Package, RunRequest
from executor.runtimes.docker import DockerRuntime
from infra.errors import BadInput
from infra.settings import Settings


def producer_image(service: PublishingService, source: str, workdir: str = "/srv") -> str:
    """A producer's own image: FROM the base image, code in ``workdir``, its own ENTRYPOINT."""
    dockerfile = (
        f"FROM {service.settings.base_image}\nCOPY model.py {workdir}/model.py\nWORKDIR {workdir}\n"
        'ENTRYPOINT ["python3", "model.py"]\n'
    ).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("model.py", source.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    tag = f"producer-test/{uuid.uuid4().hex[:10]}:1"
    service.images.client.images.build(
        fileobj=buffer, custom_context=True, tag=tag, network_mode="none", rm=True
    )
    return tag


async def run_contract(service: PublishingService, image_ref: str, command: list[str], text: str) -> dict:
    runtime = DockerRuntime(service.settings.docker_host)
    result = await runtime.run(
        Package(entrypoint=tuple(command), image=image_ref),
        RunRequest(command=tuple(command), stdin=encode_records([("r1", text)])),
        Limits(timeout_s=30),
    )
    assert result.ok, (result.failure, result.stderr[-500:])
    return parse_replies(result.stdout, ["r1"])["r1"].output


async def finish(service: PublishingService, actor: Actor, pub_id: str):
    await service.queue.drain()
    return await service.get(actor, pub_id)


async def test_code_package_is_containerized_pushed_and_runs_by_contract(
    docker_publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    svc = docker_publishing
    pub = await svc.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    pub = await finish(svc, alice, pub.id)
    assert pub.status == "published", pub.error
    listing_step = next(s for s in pub.steps if s.name == "list")
    assert any("built image" in line for line in listing_step.log)
    assert any("contract probe answered" in line and "(docker)" in line for line in listing_step.log)
    ref = pub.image_ref
    assert ref and ref.startswith(f"{svc.settings.registry_url}/mlrepo/alice/tiny-sentiment@sha256:")
    [version] = await app.listings.versions(alice, pub.listing_id)
    assert version.image_ref == ref and version.artifact_kind == "package"
    output = await run_contract(svc, ref, version.manifest["command"], "what a wonderful day")
    assert output == {"label": "positive", "confidence": 0.9}


async def test_image_pushed_to_the_registry_is_published_and_verified(
    docker_publishing: PublishingService, app: CatalogApp, alice: Actor, bob: Actor
) -> None:
    svc = docker_publishing
    local = producer_image(svc, PREDICT)
    remote = f"{svc.settings.registry_url}/alice/sentiment-image"
    image = svc.images.client.images.get(local)
    image.tag(remote, tag="1")
    for event in svc.images.client.images.push(remote, tag="1", stream=True, decode=True):
        assert "error" not in event, event
    manifest = sentiment_manifest(
        name="image-sentiment", description="Sentiment of reviews, shipped as an image"
    )
    del manifest["entrypoint"]
    pub = await svc.submit_image(alice, manifest, image_ref=f"{remote}:1")
    pub = await finish(svc, alice, pub.id)
    assert pub.status == "published", pub.error
    assert all(s.status == "succeeded" for s in pub.steps)
    listing = await app.listings.get(bob, pub.listing_id)
    assert listing.verification_status == "verified"
    [version] = await app.listings.versions(bob, pub.listing_id)
    assert version.artifact_kind == "image" and "@sha256:" in version.image_ref
    assert set(version.reference_signatures) == {"happy", "sad"}
    output = await run_contract(svc, version.image_ref, version.manifest["command"], "I love it")
    assert output["label"] == "positive"
    found = await app.search.search(bob, SearchRequest(text="review sentiment image", verified_only=True))
    assert pub.listing_id in [hit.listing.id for hit in found.results]
    recheck = await svc.verify_listing(pub.listing_id)  # re-run in a fresh container from the registry
    assert (recheck.outcome, recheck.problems) == ("verified", [])
    # The producer's own image was not changed: same id, same entrypoint.
    assert svc.images.client.images.get(local).attrs["Config"]["Entrypoint"] == ["python3", "model.py"]


async def test_saved_image_that_breaks_the_contract_is_rejected(
    docker_publishing: PublishingService, app: CatalogApp, alice: Actor, tmp_path: Path
) -> None:
    svc = docker_publishing
    local = producer_image(svc, "import sys\nsys.stdin.read()\nprint('hello, world')\n")
    tarball = tmp_path / "image.tar"
    with open(tarball, "wb") as f:
        for chunk in svc.images.client.images.get(local).save(named=True):
            f.write(chunk)
    manifest = sentiment_manifest(name="broken-image", verify=False)
    del manifest["entrypoint"]
    with open(tarball, "rb") as f:
        pub = await svc.submit_image(alice, manifest, tarball=f)
    pub = await finish(svc, alice, pub.id)
    assert pub.status == "failed"
    test_step = next(s for s in pub.steps if s.name == "test")
    assert test_step.status == "failed" and "does not follow the invocation contract" in test_step.error
    assert (await app.listings.list(alice)).total_count == 0


async def test_an_image_whose_command_does_not_exist_says_so(
    docker_publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    """A manifest naming a command the image lacks failed the test step with 'container did not start:
    the container engine refused it (the worker's log says why)': a log the producer cannot read. The
    runtime's own words about the image's command are quoted (never the engine's host details)."""
    svc = docker_publishing
    remote = f"{svc.settings.registry_url}/alice/missing-command"
    # Working in /app: the command is exec'd by the container runtime itself, not by a cd wrapper's shell.
    svc.images.client.images.get(producer_image(svc, PREDICT, workdir="/app")).tag(remote, tag="1")
    for event in svc.images.client.images.push(remote, tag="1", stream=True, decode=True):
        assert "error" not in event, event
    manifest = sentiment_manifest(name="missing-command", verify=False, entrypoint=["no-such-program"])
    pub = await svc.submit_image(alice, manifest, image_ref=f"{remote}:1")
    pub = await finish(svc, alice, pub.id)
    test_step = next(s for s in pub.steps if s.name == "test")
    assert (pub.status, test_step.status, test_step.error_code) == ("failed", "failed", "BAD_INPUT")
    assert 'the image cannot run its command: exec: "no-such-program": executable file not found' in (
        test_step.error
    )
    assert "http+docker" not in test_step.error and "/v1." not in test_step.error
    assert (await app.listings.list(alice)).total_count == 0


async def test_images_from_elsewhere_and_garbage_tarballs_are_refused(
    docker_publishing: PublishingService, alice: Actor
) -> None:
    manifest = sentiment_manifest(name="elsewhere")
    with pytest.raises(BadInput, match="mlrepo's registry"):
        await docker_publishing.submit_image(alice, manifest, image_ref="docker.io/library/python:3")
    pub = await docker_publishing.submit_image(alice, manifest, tarball=io.BytesIO(json.dumps({}).encode()))
    pub = await finish(docker_publishing, alice, pub.id)
    assert pub.status == "failed" and "docker save tarball" in pub.error


async def test_an_image_ref_must_be_under_the_producers_own_prefix(
    settings: Settings, app: CatalogApp, alice: Actor, mallory: Actor, bwrap_ok: bool
) -> None:
    """The registry has no authentication, and publishImage took any reference in it: mallory could
    publish alice's pushed image, or the image of any listing (a private one's too: mlrepo/...), under
    her own name. A reference must now be under the producer's own prefix; refused at submission."""
    registry = "127.0.0.1:5000"
    service = make_service(settings.model_copy(update={"runtime": "bwrap", "registry_url": registry}), app)
    manifest = sentiment_manifest(name="borrowed")
    for ref, needle in (
        (f"{registry}/alice/sentiment-image:1", f"under your own repository prefix {registry}/mallory/"),
        (f"{registry}/mlrepo/alice/tiny-sentiment@sha256:{'0' * 64}", "holds the images mlrepo pushed"),
        (f"{registry}/mallory2/x:1", f"under your own repository prefix {registry}/mallory/"),
    ):
        with pytest.raises(BadInput, match=needle) as refused:
            await service.submit_image(mallory, manifest, image_ref=ref)
        assert refused.value.details == {"field": "image_ref"}
    rita = (await app.accounts.create("Rita", "producer")).as_actor()
    with pytest.raises(BadInput, match="publish a docker save tarball instead"):
        await service.submit_image(rita, manifest, image_ref=f"{registry}/rita/x:1")
    assert await service.mine(mallory) == [] and await service.mine(rita) == []


async def test_refused_images_are_explained_without_the_engines_address_or_paths(
    docker_publishing: PublishingService, alice: Actor, tmp_path: Path
) -> None:
    """A tag missing from the registry failed with '404 Client Error for http+docker://localhost/v1.41/
    images/create?tag=...', and a tar that is no docker save with the engine's own path to what it
    unpacked ('open /var/lib/mlrepo-docker/tmp/docker-import-314622202/x.json: ...'). The producer now
    reads the engine's explanation alone, which names their image and the file it lacks."""
    svc = docker_publishing
    missing = f"{svc.settings.registry_url}/alice/never-pushed-{uuid.uuid4().hex[:8]}:1"
    pub = await finish(
        svc, alice, (await svc.submit_image(alice, sentiment_manifest(), image_ref=missing)).id
    )
    assert pub.status == "failed" and "could not be pulled" in pub.error and "not found" in pub.error
    assert "http+docker" not in pub.error and "Client Error" not in pub.error, pub.error
    member = json.dumps([{"Config": "config.json", "RepoTags": [], "Layers": []}]).encode()
    buffer = io.BytesIO(targz_bytes([("manifest.json", member)], gz=False))  # a tar, but no image in it
    pub = await finish(svc, alice, (await svc.submit_image(alice, sentiment_manifest(), tarball=buffer)).id)
    assert pub.status == "failed" and "not a loadable docker save tarball" in pub.error
    assert "config.json" in pub.error and "docker-import" not in pub.error, pub.error
    assert "/var/lib" not in pub.error and str(svc.settings.data_dir) not in pub.error, pub.error


async def test_docker_only_runtime_tests_packages_in_their_image(
    settings: Settings, app: CatalogApp, alice: Actor, docker_services: dict[str, str]
) -> None:
    svc = make_service(settings.model_copy(update={"runtime": "docker", **docker_services}), app)
    pub = await svc.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    pub = await finish(svc, alice, pub.id)
    assert pub.status == "published", pub.error
    verify = next(s for s in pub.steps if s.name == "verify")
    assert any("unit tests passed" in line and "(docker)" in line for line in verify.log)
    assert pub.image_ref and "@sha256:" in pub.image_ref


def retag_saved_tarball(tarball: Path, tags: list[str]) -> None:
    """Rewrite a docker save tarball so that loading it would claim ``tags`` (what an attacker ships)."""
    original = tarball.with_suffix(".orig")
    tarball.rename(original)
    with tarfile.open(original) as src, tarfile.open(tarball, "w") as out:
        for member in src:
            if member.name == "manifest.json":
                manifest = json.loads(src.extractfile(member).read())
                manifest[0]["RepoTags"] = tags
                data = json.dumps(manifest).encode()
                member.size = len(data)
                out.addfile(member, io.BytesIO(data))
            else:
                out.addfile(member, src.extractfile(member) if member.isfile() else None)


async def test_a_tarball_cannot_retag_images_it_does_not_own(
    docker_publishing: PublishingService, alice: Actor, tmp_path: Path
) -> None:
    svc = docker_publishing
    victim = f"victim-test/{uuid.uuid4().hex[:8]}:1"
    base_id = svc.images.client.images.get(svc.settings.base_image).id
    svc.images.client.images.get(base_id).tag(*victim.split(":"))
    local = producer_image(svc, PREDICT)
    tarball = tmp_path / "image.tar"
    with open(tarball, "wb") as f:
        for chunk in svc.images.client.images.get(local).save(named=True):
            f.write(chunk)
    retag_saved_tarball(tarball, [victim, svc.settings.base_image])
    manifest = sentiment_manifest(name="retagging-image")
    del manifest["entrypoint"]
    with open(tarball, "rb") as f:
        pub = await svc.submit_image(alice, manifest, tarball=f)
    pub = await finish(svc, alice, pub.id)
    assert pub.status == "published", pub.error
    assert svc.images.client.images.get(victim).id == base_id
    assert svc.images.client.images.get(svc.settings.base_image).id == base_id
    svc.images.remove(victim)


async def test_without_a_registry_the_built_image_stays_in_the_local_engine(
    settings: Settings, app: CatalogApp, alice: Actor, docker_services: dict[str, str], bwrap_ok: bool
) -> None:
    local = {"runtime": "auto", "docker_host": docker_services["docker_host"], "registry_url": None}
    svc = make_service(settings.model_copy(update=local), app)
    pub = await svc.submit_package(alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest()))))
    pub = await finish(svc, alice, pub.id)
    assert pub.status == "published", pub.error
    assert pub.image_ref == "mlrepo/alice/tiny-sentiment:1.0.0"
    output = await run_contract(svc, pub.image_ref, ["python3", "predict.py"], "good value")
    assert output["label"] == "positive"
    svc.images.remove(pub.image_ref)
