"""A job's per-record outputs live in the artifact store, not in its row: the row keeps a summary, the
outputs are a JSON-lines artifact referenced when the job becomes final, and readers page through them
(a seek per page, not a re-read of everything before it)."""

from __future__ import annotations

import gzip
import json

import pytest
from executor_support import outcome, publish_dataset, publish_model
from sqlalchemy import select

from catalog.enums import JobStatus
from executor.job_outputs import START, OutputsCursor, read_all, read_page, write_outputs
from executor.jobs import JobService
from infra.artifacts import CHUNK_SIZE, ArtifactStore
from infra.cursor_signing import CursorSigner
from infra.errors import BadInput, NotFound
from infra.settings import Settings
from infra.tables import Job, Listing, ListingVersion

MODEL = """
import json, sys
for line in sys.stdin:
    record = json.loads(line)
    if record["input"] == "bad":
        print(json.dumps({"id": record["id"], "error": "cannot score this"}))
    else:
        print(json.dumps({"id": record["id"], "output": {"label": record["input"]}}))
"""


@pytest.fixture
def job_settings(settings: Settings, bwrap_runtime) -> Settings:
    return settings.model_copy(
        update={"runtime": "bwrap", "job_heartbeat_s": 0.2, "job_outputs_page_size": 100}
    )


@pytest.fixture
async def jobs(job_settings: Settings, catalog) -> JobService:
    service = JobService(job_settings, catalog)
    yield service
    await service.queue.close()


async def test_outputs_are_an_artifact_paged_by_cursor_and_the_row_keeps_a_summary(
    jobs: JobService, catalog, people, job_settings: Settings
) -> None:
    """Every record's output was in ``jobs.result``: loaded on every read of the job and sent whole with
    every ``jobStatus`` update."""
    published = await publish_model(job_settings, catalog, people["producer"], MODEL, output_schema=None)
    records = [f"r{i}" for i in range(250)] + ["bad"]
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=records)
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert final.result == {"succeeded": 250, "failed": 1} and final.outputs_count == 251
    async with catalog.db.session() as session:
        row = await session.scalar(select(Job).where(Job.id == view.id))
    assert len(json.dumps(row.result)) < 100 and row.outputs_digest == final.outputs_digest

    expected = [{"output": {"label": r}} for r in records[:-1]] + [{"error": "cannot score this"}]
    assert await jobs.all_outputs(final) == expected
    seen, after, pages = [], None, 0
    while True:
        page = await jobs.outputs(people["alice"], view.id, 100, after)
        assert page.start.index == len(seen) and page.total == 251
        seen += page.records
        pages, after = pages + 1, jobs.outputs_cursor(view.id, page.end)
        if not page.has_next_page:
            break
    assert seen == expected and pages == 3
    # A cursor from the middle of the list (an edge's) resumes right after its record.
    middle = (await jobs.outputs(people["alice"], view.id, 10)).cursor_after(4)
    resumed = await jobs.outputs(people["alice"], view.id, 2, jobs.outputs_cursor(view.id, middle))
    assert resumed.records == expected[5:7]

    with pytest.raises(BadInput, match="first must be between 1 and 100"):
        await jobs.outputs(people["alice"], view.id, 101)
    # Signed by the service itself, an offset inside a line is still refused (the file is checked too).
    inside_a_line = jobs.outputs_cursor(view.id, OutputsCursor(3, middle.offset + 1))
    with pytest.raises(BadInput, match="not a cursor of this job"):
        await jobs.outputs(people["alice"], view.id, 1, inside_a_line)
    with pytest.raises(NotFound):
        await jobs.outputs(people["bob"], view.id, 10)


def test_a_page_is_read_from_its_cursor_and_forged_cursors_are_refused(tmp_path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    records = [{"output": {"n": i, "pad": "x" * (i % 7)}} for i in range(2500)]
    stored = write_outputs(store, tmp_path / "staging", records)
    assert stored.count == 2500 and read_all(store, stored.digest) == records
    assert list((tmp_path / "staging").iterdir()) == []  # the temp file went into the store

    seen, after = [], START
    while True:
        page = read_page(store, stored.digest, stored.count, after, 1000)
        seen += page.records
        after = page.end
        if not page.has_next_page:
            break
    assert seen == records and after.index == 2500

    signer = CursorSigner(b"k" * 32)
    assert OutputsCursor.open(signer, "job-1", after.seal(signer, "job-1")) == after
    # An offset past what a file seek takes (10**30) was an internal error; true is no index. Even
    # signed (a key leaked, a bug), such positions are refused as not issued.
    for forged in (
        "nonsense",
        "W10",
        OutputsCursor(-1, 0).seal(signer, "job-1"),
        OutputsCursor(1, 10**30).seal(signer, "job-1"),
        OutputsCursor(True, 1).seal(signer, "job-1"),  # type: ignore[arg-type]
        signer.seal("job-outputs", [1, 2, 3], "job-1"),
    ):
        with pytest.raises(BadInput, match="not a cursor this service issued"):
            OutputsCursor.open(signer, "job-1", forged)
    with pytest.raises(BadInput, match="past the job's 2500 outputs"):
        read_page(store, stored.digest, stored.count, OutputsCursor(2501, 0), 10)
    with pytest.raises(BadInput, match="not a cursor of this job's outputs"):
        read_page(store, stored.digest, stored.count, OutputsCursor(1, 3), 10)
    with pytest.raises(BadInput, match="not a cursor of this job's outputs"):
        read_page(store, stored.digest, stored.count, OutputsCursor(1, 10 << 20), 10)


@pytest.mark.parametrize("encrypt", [False, True])
def test_plaintext_is_read_from_an_offset(tmp_path, encrypt: bool) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    data = bytes(range(256)) * (CHUNK_SIZE // 100)  # a little over 2.5 chunks
    digest = store.put_bytes(data, encrypt=encrypt).digest
    for start in (0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 5, len(data) - 1, len(data), len(data) + 9):
        assert b"".join(store.iter_plaintext(digest, start)) == data[start:]


async def test_a_dataset_is_streamed_in_chunks_and_only_referenced_by_the_row(
    catalog, people, job_settings: Settings
) -> None:
    """A dataset's records were copied into the job row (``inputs``) and scored all at once, refused past
    100k records: memory grew with the dataset. Now the row holds the dataset's stored file (pinned) and
    the worker reads it a chunk at a time; what batching learnt carries over from chunk to chunk."""
    settings = job_settings.model_copy(update={"job_max_batch_records": 50, "job_max_inline_records": 5})
    jobs = JobService(settings, catalog)
    try:
        published = await publish_model(settings, catalog, people["producer"], MODEL, output_schema=None)
        lines = [{"input": f"d{i}", "target": "x"} for i in range(229)] + ["bad"]
        dataset_id = await publish_dataset(settings, catalog, people["producer"], lines, "big-set")
        view = await jobs.submit(
            people["alice"],
            published.listing_id,
            "inference",
            records=["i0", "i1"],
            dataset_listing_id=dataset_id,
        )
        async with catalog.db.session() as session:
            row = await session.get(Job, view.id)
        assert row.inputs["records"] == ["i0", "i1"] and row.inputs["dataset_records"] == 230
        assert row.inputs["dataset_listing_id"] == dataset_id and row.inputs["dataset_digest"].startswith(
            "sha256:"
        )
        final = await outcome(jobs, people["alice"], view.id)
        assert final.status == JobStatus.SUCCEEDED, final.error
        assert final.progress["records_done"] == final.progress["records_total"] == 232
        expected = [{"output": {"label": f"d{i}"}} for i in range(229)] + [{"error": "cannot score this"}]
        inline = [{"output": {"label": "i0"}}, {"output": {"label": "i1"}}]
        assert await jobs.all_outputs(final) == [*expected, *inline]
        assert final.result == {"succeeded": 231, "failed": 1} and final.metrics["records"] == 232
        # A probe and the rest of the first chunk, then one call per chunk of 50 (not a probe each time).
        assert final.metrics["calls"] == 6, final.metrics

        # The dataset is larger than the inline limit, yet scored; records given inline are still bounded.
        with pytest.raises(BadInput, match="at most 5 records per job in the request; got 6"):
            await jobs.submit(people["alice"], published.listing_id, "inference", records=["x"] * 6)
    finally:
        await jobs.queue.close()


async def test_a_dataset_record_that_does_not_fit_the_input_schema_is_refused_at_submission(
    jobs: JobService, catalog, people, job_settings: Settings
) -> None:
    published = await publish_model(job_settings, catalog, people["producer"], MODEL, output_schema=None)
    async with catalog.db.session() as session:
        listing = await session.get(Listing, published.listing_id)
        listing.input_schema = {"type": "string"}
    dataset_id = await publish_dataset(
        job_settings, catalog, people["producer"], ["a", {"input": 3}], "typed"
    )
    with pytest.raises(BadInput, match="the dataset's record 2 does not match") as refused:
        await jobs.submit(people["alice"], published.listing_id, "inference", dataset_listing_id=dataset_id)
    assert refused.value.details["field"] == "datasetListingId"
    broken = await publish_dataset(job_settings, catalog, people["producer"], [], "broken")
    async with catalog.db.session() as session:
        version = await session.scalar(select(ListingVersion).where(ListingVersion.listing_id == broken))
        version.artifact_digest = ArtifactStore.from_settings(job_settings).put_bytes(b'"a"\n{oops\n').digest
    with pytest.raises(BadInput, match="line 2 is not JSON"):
        await jobs.submit(people["alice"], published.listing_id, "inference", dataset_listing_id=broken)


async def test_a_gzipped_dataset_feeds_a_job(
    jobs: JobService, catalog, people, job_settings: Settings
) -> None:
    published = await publish_model(job_settings, catalog, people["producer"], MODEL, output_schema=None)
    dataset_id = await publish_dataset(job_settings, catalog, people["producer"], [], "gzipped")
    data = gzip.compress(b"".join(json.dumps({"input": f"g{i}"}).encode() + b"\n" for i in range(40)))
    async with catalog.db.session() as session:
        version = await session.scalar(select(ListingVersion).where(ListingVersion.listing_id == dataset_id))
        version.artifact_digest = ArtifactStore.from_settings(job_settings).put_bytes(data).digest
    view = await jobs.submit(
        people["alice"], published.listing_id, "inference", dataset_listing_id=dataset_id
    )
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert await jobs.all_outputs(final) == [{"output": {"label": f"g{i}"}} for i in range(40)]
