"""Code packages and datasets through the real publish job (bubblewrap sandbox, real database and index)."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest
from publishing_support import (
    artifact_blobs,
    files_outside,
    make_service,
    package_files,
    sentiment_manifest,
    targz_bytes,
    zip_bytes,
)
from sqlalchemy import select, update

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing.packaging import checkout_package
from catalog.publishing.service import (
    MAX_PUBLICATIONS_LISTED,
    STILL_SUSPENDED,
    InProcessQueue,
    PublicationView,
    PublishingService,
)
from catalog.search_service import SearchRequest
from infra.errors import BadInput, Forbidden, NotFound
from infra.settings import Settings
from infra.tables import Listing, ListingVersion


async def publish(service: PublishingService, actor: Actor, payload: bytes, **kwargs) -> PublicationView:
    pub = await service.submit_package(actor, io.BytesIO(payload), **kwargs)
    assert pub.status in ("queued", "running") and [s.name for s in pub.steps] == [
        "package",
        "test",
        "verify",
        "publish",
        "list",
    ]
    assert isinstance(service.queue, InProcessQueue)
    await service.queue.drain()
    return await service.get(actor, pub.id)


def step(pub: PublicationView, name: str):
    return next(s for s in pub.steps if s.name == name)


async def listing_rows(app: CatalogApp) -> list[Listing]:
    async with app.db.session() as session:
        return list((await session.scalars(select(Listing))).all())


async def versions_of(app: CatalogApp, listing_id: str) -> list[ListingVersion]:
    async with app.db.session() as session:
        rows = await session.scalars(
            select(ListingVersion)
            .where(ListingVersion.listing_id == listing_id)
            .order_by(ListingVersion.created_at)
        )
        return list(rows.all())


# ----------------------------------------------------------------------------- the happy path


async def test_package_is_published_verified_and_searchable(
    publishing: PublishingService, app: CatalogApp, alice: Actor, bob: Actor
) -> None:
    pub = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest())))
    assert pub.status == "published", pub.error
    assert all(s.status == "succeeded" for s in pub.steps), [(s.name, s.status, s.error) for s in pub.steps]
    assert all(s.duration_ms is not None and s.finished_at for s in pub.steps)
    assert any("contract probe answered" in line for line in step(pub, "test").log)
    assert any("2 unit tests passed" in line for line in step(pub, "verify").log)
    assert pub.version == "1.0.0" and pub.listing_id and pub.artifact_digest

    listing = await app.listings.get(bob, pub.listing_id)
    assert listing.verification_status == "verified"
    assert listing.input_format == "text@1" and listing.output_format == "class-label@1"
    [version] = await versions_of(app, pub.listing_id)
    assert version.artifact_kind == "package" and version.artifact_digest == pub.artifact_digest
    assert set(version.reference_signatures) == {"happy", "sad"}
    assert version.manifest["command"] == ["python3", "predict.py"]
    assert publishing.store.verify(version.artifact_digest)

    found = await app.search.search(bob, SearchRequest(text="positive or negative review sentiment"))
    assert pub.listing_id in [hit.listing.id for hit in found.results]

    assert files_outside(publishing.settings.data_dir) == []


async def test_tar_gz_with_a_top_level_directory_and_toml_manifest(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    toml = 'name = "toml-sentiment"\nkind = "model"\ncategory = "nlp"\nentrypoint = "python3 predict.py"\n'
    payload = targz_bytes(
        [("pkg/mlrepo.toml", toml.encode()), ("pkg/predict.py", package_files()["predict.py"])]
    )
    pub = await publish(publishing, alice, payload)
    assert pub.status == "published", pub.error
    assert step(pub, "verify").status == "skipped"
    listing = await app.listings.get(alice, pub.listing_id)
    assert listing.verification_status == "unverified"


async def test_same_code_as_zip_or_tar_has_one_digest(publishing: PublishingService, alice: Actor) -> None:
    files = package_files(sentiment_manifest(verify=False))
    first = await publish(publishing, alice, zip_bytes(files))
    second = await publish(publishing, alice, targz_bytes(list(files.items())))
    assert first.status == second.status == "published"
    assert first.artifact_digest == second.artifact_digest  # normalized packages are deterministic
    assert second.version == "1.0.1"


async def test_a_listing_id_argument_and_a_manifest_naming_another_listing_are_refused(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    """``listingId`` silently won over the manifest's ``listing_id``: the version (and the manifest's
    name and text) went onto the listing the manifest did not name."""
    first = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(verify=False))))
    other = await publish(
        publishing, alice, zip_bytes(package_files(sentiment_manifest(name="other-sentiment", verify=False)))
    )
    manifest = sentiment_manifest(name="renamed", verify=False, listing_id=first.listing_id)
    pub = await publish(publishing, alice, zip_bytes(package_files(manifest)), listing_id=other.listing_id)
    assert pub.status == "failed" and step(pub, "package").error_code == "BAD_INPUT"
    assert "name different listings" in pub.error
    assert [v.version for v in await versions_of(app, other.listing_id)] == ["1.0.0"]
    assert (await app.listings.get(alice, other.listing_id)).name == "other-sentiment"
    same = await publish(publishing, alice, zip_bytes(package_files(manifest)), listing_id=first.listing_id)
    assert same.status == "published" and same.listing_id == first.listing_id, same.error


async def test_a_new_version_renaming_onto_another_listing_of_the_owner_fails_at_once(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    """A rename onto the name of another of the owner's listings was found only when the listing was
    written: the publication failed at its last step, after its package was stored (and its image built
    and pushed), saying 'version 2.0.0 already exists for this listing (or the name is taken)'."""
    first = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(verify=False))))
    other = await publish(
        publishing, alice, zip_bytes(package_files(sentiment_manifest(name="other-sentiment", verify=False)))
    )
    onto_other = sentiment_manifest(name="other-sentiment", version="2.0.0", verify=False)
    pub = await publish(publishing, alice, zip_bytes(package_files(onto_other)), listing_id=first.listing_id)
    assert pub.status == "failed" and step(pub, "package").error_code == "CONFLICT", pub.error
    assert "cannot rename listing 'tiny-sentiment' to 'other-sentiment'" in pub.error
    assert [step(pub, name).status for name in ("publish", "list")] == ["pending", "pending"]
    assert [v.version for v in await versions_of(app, first.listing_id)] == ["1.0.0"]
    assert [v.version for v in await versions_of(app, other.listing_id)] == ["1.0.0"]
    renamed = sentiment_manifest(name="renamed-sentiment", version="2.0.0", verify=False)
    pub = await publish(publishing, alice, zip_bytes(package_files(renamed)), listing_id=first.listing_id)
    assert pub.status == "published", pub.error
    assert (await app.listings.get(alice, first.listing_id)).name == "renamed-sentiment"


async def test_new_version_leaves_earlier_versions_untouched(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    v1 = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest())))
    [before] = await versions_of(app, v1.listing_id)
    blob_before = publishing.store.read_bytes(before.artifact_digest)
    improved = package_files(
        sentiment_manifest(version="2.0.0"), predict=package_files()["predict.py"].decode() + "\n# v2\n"
    )
    v2 = await publish(publishing, alice, zip_bytes(improved))
    assert v2.status == "published", v2.error
    assert v2.listing_id == v1.listing_id and v2.version == "2.0.0"
    first, second = await versions_of(app, v1.listing_id)
    assert (first.version, first.artifact_digest, first.reference_signatures) == (
        before.version,
        before.artifact_digest,
        before.reference_signatures,
    )
    assert second.artifact_digest != first.artifact_digest
    assert publishing.store.read_bytes(first.artifact_digest) == blob_before
    assert (await app.listings.get(alice, v1.listing_id)).version == "2.0.0"


async def test_encrypted_at_rest_when_asked(
    publishing: PublishingService, app: CatalogApp, alice: Actor, tmp_path: Path
) -> None:
    pub = await publish(
        publishing,
        alice,
        zip_bytes(package_files(sentiment_manifest())),
        requirements={"encrypt": True, "timeout_s": 2, "resources": {"cpu": 1, "memory_mb": 300}},
    )
    assert pub.status == "published", pub.error
    [version] = await versions_of(app, pub.listing_id)
    assert version.encrypted
    stored = publishing.store.locate(version.artifact_digest)
    assert stored.encrypted and b"POSITIVE" not in stored.path.read_bytes()
    app_dir = checkout_package(publishing.store, version.artifact_digest, tmp_path / "run")
    assert b"POSITIVE" in (app_dir / "predict.py").read_bytes()
    assert sorted(p.name for p in app_dir.iterdir()) == ["mlrepo.json", "predict.py"]
    listing = await app.listings.get(alice, pub.listing_id)
    assert listing.timeout_s == 2 and listing.resources["memory_mb"] == 300


async def test_dataset_file_is_published(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    manifest = {
        "name": "movie-reviews",
        "kind": "dataset",
        "category": "Natural Language Processing",
        "description": "Ten thousand labelled movie reviews",
        "tags": ["sentiment"],
    }
    pub = await publishing.submit_dataset(alice, io.BytesIO(b"text,label\ngreat,positive\n"), manifest)
    await publishing.queue.drain()
    pub = await publishing.get(alice, pub.id)
    assert pub.status == "published", pub.error
    listing = await app.listings.get(alice, pub.listing_id)
    assert listing.kind == "dataset"
    assert publishing.store.read_bytes(pub.artifact_digest) == b"text,label\ngreat,positive\n"


async def _publish_dataset(
    publishing: PublishingService, actor: Actor, manifest: dict, **kwargs
) -> PublicationView:
    pub = await publishing.submit_dataset(
        actor, io.BytesIO(b"text,label\ngreat,positive\n"), manifest, **kwargs
    )
    await publishing.queue.drain()
    return await publishing.get(actor, pub.id)


async def test_a_manifest_or_the_requirements_publish_a_new_listing_private(
    publishing: PublishingService, app: CatalogApp, alice: Actor, bob: Actor
) -> None:
    """A manifest could not say who sees a new listing: it was published PUBLIC, and the only way to
    keep it private was createListing PRIVATE first, then publishing onto its id."""
    manifest = {"name": "reviews", "kind": "dataset", "category": "Natural Language Processing"}
    hidden = await _publish_dataset(publishing, alice, {**manifest, "visibility": "private"})
    assert hidden.status == "published", hidden.error
    assert (await app.listings.get(alice, hidden.listing_id)).visibility == "private"
    with pytest.raises(NotFound):
        await app.listings.get(bob, hidden.listing_id)

    asked = await _publish_dataset(
        publishing, alice, {**manifest, "name": "tweets"}, requirements={"visibility": "PRIVATE"}
    )
    assert asked.status == "published", asked.error
    assert (await app.listings.get(alice, asked.listing_id)).visibility == "private"
    plain = await _publish_dataset(publishing, alice, {**manifest, "name": "news"})
    assert (await app.listings.get(bob, plain.listing_id)).visibility == "public"  # the default

    for bad in ({**manifest, "visibility": "shared"}, {**manifest, "visibility": "everyone"}):
        with pytest.raises(BadInput, match=r"visibility: .*must be 'public' or 'private'"):
            await publishing.submit_dataset(alice, io.BytesIO(b"x"), bad)
    with pytest.raises(BadInput, match="must be 'public' or 'private'") as caught:
        await publishing.submit_dataset(
            alice, io.BytesIO(b"x"), manifest, requirements={"visibility": "shared"}
        )
    assert caught.value.details["field"] == "requirements"


async def test_a_new_version_keeps_its_listings_visibility(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    """The manifest's visibility is a new listing's; a version saying otherwise fails at the package step
    (changing an audience is updateListing's), one saying the same is published."""
    manifest = {"name": "reviews", "kind": "dataset", "category": "Natural Language Processing"}
    first = await _publish_dataset(publishing, alice, manifest)
    assert first.status == "published", first.error
    widened = await _publish_dataset(publishing, alice, {**manifest, "visibility": "private"})
    assert widened.status == "failed" and step(widened, "package").error_code == "CONFLICT"
    assert "a new version keeps that" in widened.error
    same = await _publish_dataset(publishing, alice, {**manifest, "visibility": "public", "version": "1.1.0"})
    assert same.status == "published", same.error
    listing = await app.listings.get(alice, first.listing_id)
    assert (listing.visibility, listing.version) == ("public", "1.1.0")


# ----------------------------------------------------------------------------- bad input


def _traversal() -> bytes:
    return zip_bytes({**package_files(sentiment_manifest()), "../../escape.py": b"x"})


def _symlink() -> bytes:
    link = tarfile.TarInfo("passwd")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return targz_bytes([*package_files(sentiment_manifest()).items(), link])


def _device() -> bytes:
    dev = tarfile.TarInfo("null")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    return targz_bytes([*package_files(sentiment_manifest()).items(), dev])


def _bomb() -> bytes:
    return zip_bytes({**package_files(sentiment_manifest()), "weights.bin": b"\0" * (40 << 20)})


def _absolute() -> bytes:
    return targz_bytes([*package_files(sentiment_manifest()).items(), ("/tmp/mlrepo-absolute-escape", b"x")])


def _gzipped_file() -> bytes:
    """One gzipped file is a dataset's format (.jsonl.gz), not a code package's."""
    return gzip.compress(b"print('hi')\n")


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (_gzipped_file, "corrupt"),
        (_traversal, "path-traversal"),
        (_symlink, "link"),
        (_device, "special-file"),
        (_bomb, "compression-ratio"),
        (_absolute, "absolute-path"),
    ],
)
async def test_unsafe_archives_are_rejected_with_their_reason(
    publishing: PublishingService, app: CatalogApp, alice: Actor, build, reason: str
) -> None:
    pub = await publish(publishing, alice, build())
    assert pub.status == "failed"
    failed = step(pub, "package")
    assert failed.status == "failed" and failed.error_code == "BAD_INPUT"
    assert f"unsafe archive ({reason})" in failed.error and pub.error.startswith("package: unsafe archive")
    assert [s.status for s in pub.steps[1:]] == ["pending"] * 4
    assert await listing_rows(app) == []
    assert artifact_blobs(publishing.settings.data_dir) == []
    assert files_outside(publishing.settings.data_dir) == []


async def test_manifest_without_entrypoint_is_rejected(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    manifest = sentiment_manifest()
    del manifest["entrypoint"]
    pub = await publish(publishing, alice, zip_bytes(package_files(manifest)))
    assert pub.status == "failed"
    assert "entrypoint: required for kind 'model'" in step(pub, "package").error
    assert await listing_rows(app) == []


async def test_failing_unit_tests_publish_nothing(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    manifest = sentiment_manifest()
    manifest["tests"][1]["expected_output"] = {"label": "positive", "confidence": 0.9}
    pub = await publish(publishing, alice, zip_bytes(package_files(manifest)))
    assert pub.status == "failed"
    verify = step(pub, "verify")
    assert verify.status == "failed" and "unit test 'sad' failed" in verify.error
    assert [step(pub, n).status for n in ("publish", "list")] == ["pending", "pending"]
    assert await listing_rows(app) == []
    assert artifact_blobs(publishing.settings.data_dir) == []


async def test_entrypoint_that_breaks_the_contract_fails_the_test_step(
    publishing: PublishingService, alice: Actor
) -> None:
    chatty = "import sys\nfor line in sys.stdin:\n    print('loading model...')\n"
    pub = await publish(
        publishing, alice, zip_bytes(package_files(sentiment_manifest(verify=False), predict=chatty))
    )
    assert pub.status == "failed"
    assert "does not follow the invocation contract" in step(pub, "test").error


async def test_a_zipped_script_without_its_executable_bit_fails_at_the_package_step(
    publishing: PublishingService, alice: Actor
) -> None:
    manifest = sentiment_manifest(entrypoint=["./run.sh"], verify=False)
    files = package_files(manifest, **{"run.sh": "#!/bin/sh\nexec python3 predict.py\n"})
    pub = await publish(publishing, alice, zip_bytes(files))  # zipfile.writestr: mode 0600
    assert pub.status == "failed" and step(pub, "package").error_code == "BAD_INPUT", pub.error
    assert "'./run.sh' is not executable in the package" in pub.error
    assert step(pub, "test").status == "pending"


async def test_crashing_entrypoint_reports_its_error(publishing: PublishingService, alice: Actor) -> None:
    crash = "raise SystemExit('model file missing')\n"
    pub = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(), predict=crash)))
    assert pub.status == "failed" and "model file missing" in step(pub, "test").error


async def test_a_crash_on_the_null_probe_of_a_manifest_without_tests_says_why(
    publishing: PublishingService, alice: Actor
) -> None:
    """Without tests the probe sends null; a program that crashed on it failed publication with a bare
    traceback, leaving its producer to guess why their program was given nothing."""
    strict = "import json, sys\nfor line in sys.stdin:\n    json.loads(line)['input'].lower()\n"
    manifest = sentiment_manifest(tests=[], verify=False)
    pub = await publish(publishing, alice, zip_bytes(package_files(manifest, predict=strict)))
    error = step(pub, "test").error
    assert pub.status == "failed" and "AttributeError" in error  # the traceback is still quoted
    assert error.startswith("the contract probe sent null, since the manifest declares no tests"), error
    assert "declare a test whose input the entrypoint accepts" in error
    # With tests, the failure names the first test's input as what was sent.
    crash = "raise SystemExit('model file missing')\n"
    crashed = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(), predict=crash)))
    assert step(crashed, "test").error.startswith("the contract probe sent the first unit test's input: ")


async def test_a_nul_in_the_entrypoints_error_output_fails_the_publication_alike_on_both_databases(
    publishing: PublishingService, alice: Actor
) -> None:
    """The test step's error quotes the probe's stderr; PostgreSQL cannot store NUL in text, so recording
    that failure failed there (SQLite stored it). NUL now becomes U+FFFD on both."""
    crash = "import sys\nsys.stderr.write('model\\x00file missing\\n')\nsys.exit(3)\n"
    pub = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(), predict=crash)))
    assert pub.status == "failed" and "model\ufffdfile missing" in step(pub, "test").error
    assert "\x00" not in (pub.error or "")


async def test_only_the_owner_publishes_new_versions(
    publishing: PublishingService, app: CatalogApp, alice: Actor, mallory: Actor
) -> None:
    v1 = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest())))
    payload = zip_bytes(package_files(sentiment_manifest(version="9.9.9")))
    with pytest.raises(Forbidden):
        await publishing.submit_package(mallory, io.BytesIO(payload), listing_id=v1.listing_id)
    # Named in the manifest instead: the job refuses it and says so on the publication.
    sneaky = zip_bytes(package_files(sentiment_manifest(version="9.9.9", listing_id=v1.listing_id)))
    pub = await publish(publishing, mallory, sneaky)
    assert pub.status == "failed" and step(pub, "package").error_code == "FORBIDDEN"
    versions = await versions_of(app, v1.listing_id)
    assert [v.version for v in versions] == ["1.0.0"]
    assert (await app.listings.get(alice, v1.listing_id)).version == "1.0.0"


async def test_publishing_onto_an_invisible_listing_is_not_found(
    publishing: PublishingService, app: CatalogApp, alice: Actor, mallory: Actor
) -> None:
    """A listing the publisher cannot see must look missing (NOT_FOUND, same message as an unknown id),
    never FORBIDDEN: that would confirm that a private listing with this id exists."""
    v1 = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(verify=False))))
    await app.listings.update(alice, v1.listing_id, {"visibility": "private"})
    payload = zip_bytes(package_files(sentiment_manifest(version="9.9.9", verify=False)))
    with pytest.raises(NotFound) as hidden:
        await publishing.submit_package(mallory, io.BytesIO(payload), listing_id=v1.listing_id)
    with pytest.raises(NotFound) as missing:
        await publishing.submit_package(mallory, io.BytesIO(payload), listing_id="no-such-listing")
    assert hidden.value.message == missing.value.message.replace("no-such-listing", v1.listing_id)
    # Named in the manifest instead: the publication's step says NOT_FOUND too.
    sneaky = zip_bytes(
        package_files(sentiment_manifest(version="9.9.9", listing_id=v1.listing_id, verify=False))
    )
    pub = await publish(publishing, mallory, sneaky)
    assert pub.status == "failed" and step(pub, "package").error_code == "NOT_FOUND"
    assert [v.version for v in await versions_of(app, v1.listing_id)] == ["1.0.0"]


async def test_an_internal_failure_shows_the_producer_no_server_paths(
    publishing: PublishingService, alice: Actor
) -> None:
    """A step that fails on an unexpected error (here the artifact store's temp directory is a file,
    so storing fails with an OSError naming the host path) fails the publication with a generic reason;
    the text, with server paths, is for the operator's log."""
    spool = publishing.store.root / "tmp"
    shutil.rmtree(spool)
    spool.write_text("not a directory")
    try:
        pub = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(verify=False))))
    finally:
        spool.unlink()
        spool.mkdir()
    failed = step(pub, "publish")
    assert pub.status == "failed" and failed.status == "failed" and failed.error_code == "INTERNAL"
    shown = repr(pub)
    assert str(publishing.store.root) not in shown and "NotADirectoryError" not in shown
    assert pub.id in failed.error


async def test_existing_version_number_is_a_conflict(publishing: PublishingService, alice: Actor) -> None:
    payload = zip_bytes(package_files(sentiment_manifest(version="1.0.0")))
    assert (await publish(publishing, alice, payload)).status == "published"
    again = await publish(publishing, alice, payload)
    assert again.status == "failed" and step(again, "package").error_code == "CONFLICT"


async def test_a_version_older_than_the_current_one_is_a_conflict(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    """Version 0.9.0 published after 1.0.0 became the listing's version (replacing the verified 1.0.0 as
    what requesters see and run) and the next unnumbered version was counted from it (0.9.1)."""
    first = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(version="1.0.0"))))
    older = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(version="0.9.0"))))
    assert older.status == "failed" and step(older, "package").error_code == "CONFLICT"
    assert "version 0.9.0 is not newer than the listing's current version 1.0.0" in older.error
    assert [v.version for v in await versions_of(app, first.listing_id)] == ["1.0.0"]
    nxt = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest())))  # no number
    assert (nxt.status, nxt.version) == ("published", "1.0.1"), nxt.error


async def test_my_publications_refuses_a_limit_out_of_range(
    publishing: PublishingService, alice: Actor
) -> None:
    """myPublications(limit: 0) answered one publication and limit: 1000000 two hundred, silently."""
    payload = zip_bytes(package_files(sentiment_manifest(verify=False)))
    for _ in range(2):
        await publishing.submit_package(alice, io.BytesIO(payload))
    for limit in (0, -1, MAX_PUBLICATIONS_LISTED + 1):
        with pytest.raises(
            BadInput, match=f"limit must be between 1 and {MAX_PUBLICATIONS_LISTED}"
        ) as caught:
            await publishing.mine(alice, limit)
        assert caught.value.details["field"] == "limit"
    assert len(await publishing.mine(alice, 1)) == 1
    assert len(await publishing.mine(alice, MAX_PUBLICATIONS_LISTED)) == 2
    await publishing.queue.drain()


async def test_a_new_version_keeps_the_listings_kind(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    """A model published under the name of its producer's dataset (or onto its id) became that dataset's
    next version: the dataset listing turned into a model, and trainings and pipelines naming it broke."""
    manifest = {"name": "tiny-sentiment", "kind": "dataset", "category": "Natural Language Processing"}
    data = await publishing.submit_dataset(
        alice, io.BytesIO(b'{"input": "great", "target": "pos"}\n'), manifest
    )
    await publishing.queue.drain()
    data = await publishing.get(alice, data.id)
    assert data.status == "published", data.error

    by_name = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest())))
    assert by_name.status == "failed" and step(by_name, "package").error_code == "CONFLICT"
    assert "dataset listing named 'tiny-sentiment'" in by_name.error
    by_id = await publish(
        publishing, alice, zip_bytes(package_files(sentiment_manifest())), listing_id=data.listing_id
    )
    assert by_id.status == "failed" and step(by_id, "package").error_code == "BAD_INPUT"
    listing = await app.listings.get(alice, data.listing_id)
    assert listing.kind == "dataset" and listing.version == "1.0.0"
    assert [v.version for v in await versions_of(app, data.listing_id)] == ["1.0.0"]


async def test_requesters_and_strangers_cannot_publish_or_peek(
    publishing: PublishingService, alice: Actor, bob: Actor, mallory: Actor
) -> None:
    with pytest.raises(Forbidden):
        await publishing.submit_package(bob, io.BytesIO(b"PK"))
    pub = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest(verify=False))))
    with pytest.raises(NotFound):
        await publishing.get(mallory, pub.id)


# ----------------------------------------------------------------------------- re-verification


async def test_reverification_suspends_a_listing_whose_behaviour_changed(
    publishing: PublishingService, app: CatalogApp, alice: Actor, bob: Actor
) -> None:
    pub = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest())))
    [result] = await publishing.verify_all()
    assert (result.listing_id, result.outcome) == (pub.listing_id, "verified")

    async with app.db.session() as session:  # the recorded behaviour no longer matches what runs
        version = await session.scalar(
            select(ListingVersion).where(ListingVersion.listing_id == pub.listing_id)
        )
        sad = version.reference_signatures["sad"]
        version.reference_signatures = {**version.reference_signatures, "sad": "sha256:" + "0" * 64}
    [result] = await publishing.verify_all()
    assert result.outcome == "suspended" and "'sad' changed behaviour" in result.problems[0]
    listing = await app.listings.get(alice, pub.listing_id)
    assert listing.verification_status == "suspended" and listing.status == "suspended"
    with pytest.raises(NotFound):  # pulled: requesters no longer see it
        await app.listings.get(bob, pub.listing_id)

    async with app.db.session() as session:  # behaves as recorded again: still pulled, and said so
        version = await session.get(ListingVersion, version.id)
        version.reference_signatures = {**version.reference_signatures, "sad": sad}
    again = await publishing.verify_listing(pub.listing_id)
    assert (again.outcome, again.problems) == ("suspended", [STILL_SUSPENDED])  # it said "verified"
    assert (await app.listings.get(alice, pub.listing_id)).verification_status == "suspended"


async def test_the_formats_and_schemas_of_a_listing_that_runs_code_change_only_with_a_new_version(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    """updateListing changed a code-backed listing's formats and schemas without new code: requesters fit
    pipelines by them and its signatures were taken under them, yet nothing checked the code kept them.
    Now BAD_INPUT naming the field; an unchanged value and the other fields still pass; a new version
    declares its own."""
    pub = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest())))
    assert pub.status == "published", pub.error
    narrower = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    for edit, field in (
        ({"output_schema": narrower}, "output_schema"),
        ({"output_format": "text@1"}, "output_format"),
        ({"input_format": "image@1", "description": "now reads photos"}, "input_format"),
    ):
        with pytest.raises(BadInput, match="publish a new version to change them") as refused:
            await app.listings.update(alice, pub.listing_id, edit)
        assert refused.value.details == {"field": field}
    same = await app.listings.update(
        alice, pub.listing_id, {"input_format": "text", "output_format": "class-label@1", "tags": ["x"]}
    )
    before = await app.listings.get(alice, pub.listing_id)
    assert (same.input_format, same.output_format) == ("text@1", "class-label@1")
    assert (same.input_schema, same.output_schema, same.tags) == (
        before.input_schema,
        before.output_schema,
        ["x"],
    )
    labels = [
        {**t, "expected_output": {"label": t["expected_output"]["label"]}}
        for t in sentiment_manifest()["tests"]
    ]
    narrowed = sentiment_manifest(output={"format": "class-label@1", "schema": narrower}, tests=labels)
    again = await publish(publishing, alice, zip_bytes(package_files(narrowed)))
    assert again.status == "published", again.error
    assert (await app.listings.get(alice, pub.listing_id)).output_schema == narrower


async def test_an_output_schema_edited_before_the_rule_does_not_suspend_a_listing(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    """Re-verification projected the tests' outputs onto the listing's output schema of the moment, the
    signatures onto the one published: a listing whose schema was narrowed by an edit (allowed before
    schema edits of code-backed listings were refused; such rows remain) was SUSPENDED by the next
    periodic run, pulled from every requester, as 'changed behaviour'."""
    pub = await publish(publishing, alice, zip_bytes(package_files(sentiment_manifest())))
    assert pub.status == "published", pub.error
    narrower = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    async with app.db.session() as session:
        await session.execute(
            update(Listing).where(Listing.id == pub.listing_id).values(output_schema=narrower)
        )
    [result] = await publishing.verify_all()
    assert (result.outcome, result.problems) == ("verified", [])
    listing = await app.listings.get(alice, pub.listing_id)
    assert (listing.verification_status, listing.status) == ("verified", "active")


async def test_oversized_and_empty_uploads_leave_nothing(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool
) -> None:
    service = make_service(
        settings.model_copy(update={"runtime": "bwrap", "publish_max_upload_bytes": 1000}), app
    )
    with pytest.raises(BadInput, match="larger than the limit of 1000 bytes"):
        await service.submit_package(alice, io.BytesIO(b"x" * 5000))
    with pytest.raises(BadInput, match="empty"):
        await service.submit_package(alice, io.BytesIO(b""))
    assert await service.mine(alice) == []
    assert files_outside(settings.data_dir) == []


async def test_a_wrong_declared_sha256_is_refused_on_receipt(
    publishing: PublishingService, settings: Settings, alice: Actor
) -> None:
    """A wrong declared sha256 was queued, then FAILED only in step package, after a worker took it.
    The upload is hashed as it streams in: BAD_INPUT (field sha256) at once, nothing staged or recorded;
    the right digest still publishes."""
    payload = zip_bytes(package_files(sentiment_manifest(verify=False)))
    wrong = "sha256:" + hashlib.sha256(payload + b"x").hexdigest()
    with pytest.raises(BadInput, match="not the declared") as refused:
        await publishing.submit_package(alice, io.BytesIO(payload), expected_digest=wrong)
    assert refused.value.details == {"field": "sha256"}
    dataset = {"name": "reviews", "kind": "dataset", "category": "nlp"}
    with pytest.raises(BadInput, match="not the declared"):
        await publishing.submit_dataset(alice, io.BytesIO(b'{"a": 1}\n'), dataset, expected_digest=wrong)
    assert await publishing.mine(alice) == []
    assert files_outside(settings.data_dir, ("artifacts", "keys", "index", "sandbox")) == []
    right = "sha256:" + hashlib.sha256(payload).hexdigest()
    pub = await publish(publishing, alice, payload, expected_digest=right)
    assert pub.status == "published", pub.error


@pytest.mark.parametrize(
    ("requirements", "needle"),
    [
        ({"resources": {"cpu": -1}}, "requirements: resources.cpu"),
        ({"training_resources": {"memory_mb": 1}}, "requirements: training_resources.memory_mb"),
        ({"timeout_s": 0}, "requirements: timeout_s"),
        ({"timeout_s": 99999}, "requirements: timeout_s"),
    ],
)
async def test_bad_requirements_are_refused_at_submission_not_blamed_on_the_manifest(
    publishing: PublishingService, alice: Actor, settings: Settings, requirements: dict, needle: str
) -> None:
    """Requirements given with the upload were merged into the manifest in the worker, so a bad one was
    queued and then FAILED in step package as "invalid manifest: resources.cpu: ...", pointing the
    producer at a manifest that had no such value. Now BAD_INPUT at once, naming the requirement, and
    nothing is staged or recorded."""
    payload = zip_bytes(package_files(sentiment_manifest(verify=False)))
    with pytest.raises(BadInput, match=needle) as caught:
        await publishing.submit_package(alice, io.BytesIO(payload), requirements=requirements)
    assert caught.value.details["field"] == "requirements"
    assert await publishing.mine(alice) == []
    assert files_outside(settings.data_dir) == []
    fine = await publish(publishing, alice, payload, requirements={"resources": {"cpu": 2}, "timeout_s": 5})
    assert fine.status == "published", fine.error
