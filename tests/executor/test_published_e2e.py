"""From a producer's upload to a requester's results: a code package published through the real
publishing service (package → test → verify → publish → list), then run as a job in a bwrap copy."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import pytest

from catalog.enums import JobStatus
from catalog.publishing.service import InProcessQueue, PublishingService
from executor.jobs import JobService
from executor.publish_sandbox import ExecutorSandbox
from infra.errors import BadInput

PREDICT = """
import json, sys
POSITIVE = {"love", "great", "good"}
for line in sys.stdin:
    r = json.loads(line)
    label = "positive" if set(str(r["input"]).lower().split()) & POSITIVE else "negative"
    print(json.dumps({"id": r["id"], "output": {"label": label, "words": len(str(r["input"]).split())}}))
"""
MANIFEST = {
    "name": "tiny-sentiment",
    "kind": "model",
    "category": "Natural Language Processing",
    "description": "Positive or negative sentiment of a review.",
    "entrypoint": ["python3", "predict.py"],
    "input": {"format": "text@1"},
    "output": {"format": "class-label@1"},
    "timeout_s": 5,
    "tests": [{"name": "pos", "input": "I love it", "expected_output": {"label": "positive"}}],
    "verify": True,
}


def package() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("mlrepo.json", json.dumps(MANIFEST))
        zf.writestr("predict.py", PREDICT)
    return buffer.getvalue()


async def test_a_published_package_runs_as_a_job(settings, catalog, people, bwrap_runtime) -> None:
    settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    publishing = PublishingService(settings, catalog.db, catalog.listings, ExecutorSandbox(settings))
    publication = await publishing.submit_package(people["producer"], io.BytesIO(package()))
    assert isinstance(publishing.queue, InProcessQueue)
    await publishing.queue.drain()
    publication = await publishing.get(people["producer"], publication.id)
    assert publication.status == "published", publication.error

    jobs = JobService(settings, catalog)
    try:
        view = await jobs.submit(
            people["alice"], publication.listing_id, "inference", records=["great fun", "meh"]
        )
        final = [v async for v in jobs.watch(people["alice"], view.id)][-1]
    finally:
        await jobs.queue.close()
    assert final.status == JobStatus.SUCCEEDED, final.error
    # "words" is not in class-label@1: dropped before it is stored or shown.
    assert await jobs.all_outputs(final) == [
        {"output": {"label": "positive"}},
        {"output": {"label": "negative"}},
    ]


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def dataset_archive() -> bytes:
    """A dataset as producers ship them: JSON-lines parts in a folder, with a README beside them."""
    return zip_of(
        {
            "reviews/README.md": "Two parts of labelled reviews.\n",
            "reviews/part-2.jsonl": json.dumps({"input": "meh", "target": "negative"}) + "\n",
            "reviews/part-1.jsonl": json.dumps({"input": "great fun", "target": "positive"}) + "\n",
        }
    )


async def test_a_dataset_published_as_an_archive_feeds_a_job(
    settings, catalog, people, bwrap_runtime
) -> None:
    """A dataset archive is published (extracted safely, stored as uploaded), but a job read the stored
    archive's bytes as JSON lines: every archive dataset failed as "line 1 is not JSON"."""
    settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    publishing = PublishingService(settings, catalog.db, catalog.listings, ExecutorSandbox(settings))
    manifest = {"name": "review-parts", "kind": "dataset", "category": "Natural Language Processing"}
    model = await publishing.submit_package(people["producer"], io.BytesIO(package()))
    dataset = await publishing.submit_dataset(people["producer"], io.BytesIO(dataset_archive()), manifest)
    await publishing.queue.drain()
    model, dataset = [await publishing.get(people["producer"], p.id) for p in (model, dataset)]
    assert model.status == dataset.status == "published", (model.error, dataset.error)
    model_id, dataset_id = model.listing_id, dataset.listing_id

    readme_only = await publishing.submit_dataset(
        people["producer"],
        io.BytesIO(zip_of({"README.md": "no data here"})),
        {**manifest, "name": "review-notes"},
    )
    await publishing.queue.drain()
    readme_only = await publishing.get(people["producer"], readme_only.id)

    jobs = JobService(settings, catalog)
    try:
        view = await jobs.submit(people["alice"], model_id, "inference", dataset_listing_id=dataset_id)
        final = [v async for v in jobs.watch(people["alice"], view.id)][-1]
        with pytest.raises(BadInput, match="holds no JSON-lines file"):
            await jobs.submit(
                people["alice"], model_id, "inference", dataset_listing_id=readme_only.listing_id
            )
    finally:
        await jobs.queue.close()
    assert final.status == JobStatus.SUCCEEDED, final.error
    # The .jsonl members in path order; the README is not data.
    assert await jobs.all_outputs(final) == [
        {"output": {"label": "positive"}},
        {"output": {"label": "negative"}},
    ]


async def test_a_pipeline_published_as_a_code_package_runs(settings, catalog, people, bwrap_runtime) -> None:
    """The manifest takes kind 'pipeline' for a package (and verified it in the sandbox), but runJob
    took every pipeline listing for one published from stored steps: "has no stored steps to run"."""
    settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    publishing = PublishingService(settings, catalog.db, catalog.listings, ExecutorSandbox(settings))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("mlrepo.json", json.dumps({**MANIFEST, "name": "packaged-chain", "kind": "pipeline"}))
        zf.writestr("predict.py", PREDICT)
    publication = await publishing.submit_package(people["producer"], io.BytesIO(buffer.getvalue()))
    await publishing.queue.drain()
    publication = await publishing.get(people["producer"], publication.id)
    assert publication.status == "published", publication.error

    jobs = JobService(settings, catalog)
    try:
        view = await jobs.submit(people["alice"], publication.listing_id, "inference", records=["great fun"])
        final = [v async for v in jobs.watch(people["alice"], view.id)][-1]
    finally:
        await jobs.queue.close()
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert await jobs.all_outputs(final) == [{"output": {"label": "positive"}}]


async def test_a_gzipped_json_lines_dataset_is_published_and_feeds_a_job(
    settings, catalog, people, bwrap_runtime
) -> None:
    """A dataset shipped as one ``.jsonl.gz`` was taken for a tar.gz: publishing refused it as an
    unreadable tar. It is accepted now, under the same decompression-bomb limits as archives."""
    settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    publishing = PublishingService(settings, catalog.db, catalog.listings, ExecutorSandbox(settings))
    manifest = {"name": "review-lines", "kind": "dataset", "category": "Natural Language Processing"}
    lines = "".join(json.dumps({"input": text}) + "\n" for text in ["great fun", "meh", "good plot"])
    model = await publishing.submit_package(people["producer"], io.BytesIO(package()))
    dataset = await publishing.submit_dataset(
        people["producer"], io.BytesIO(gzip.compress(lines.encode())), manifest
    )
    bomb = await publishing.submit_dataset(
        people["producer"], io.BytesIO(gzip.compress(b"\n" * (30 << 20))), {**manifest, "name": "bomb"}
    )
    await publishing.queue.drain()
    model, dataset, bomb = [await publishing.get(people["producer"], p.id) for p in (model, dataset, bomb)]
    assert model.status == dataset.status == "published", (model.error, dataset.error)
    assert bomb.status == "failed" and "expands" in bomb.error

    jobs = JobService(settings, catalog)
    try:
        view = await jobs.submit(
            people["alice"], model.listing_id, "inference", dataset_listing_id=dataset.listing_id
        )
        final = [v async for v in jobs.watch(people["alice"], view.id)][-1]
    finally:
        await jobs.queue.close()
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert [r["output"]["label"] for r in await jobs.all_outputs(final)] == [
        "positive",
        "negative",
        "positive",
    ]
