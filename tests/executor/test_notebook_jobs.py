"""A notebook published as it is, then run as a job: each record's parameters override the cell tagged
``parameters``, its output is the notebook's ``output``, and its executed notebook is in the job's
result; a failing cell fails that record only, naming the cell. Real bwrap sandboxes, both databases."""

from __future__ import annotations

import io
import json

from catalog.enums import JobStatus
from catalog.publishing.service import InProcessQueue, PublishingService
from executor.jobs import JobService
from executor.publish_sandbox import ExecutorSandbox
from tests.publishing.notebook_support import (
    code,
    md,
    notebook_bytes,
    word_stats_manifest,
    word_stats_notebook,
)


def word_stats_notebook_cells() -> list[dict]:
    return json.loads(word_stats_notebook())["cells"]


async def publish_notebook(settings, catalog, producer, raw: bytes, manifest: dict) -> str:
    publishing = PublishingService(settings, catalog.db, catalog.listings, ExecutorSandbox(settings))
    publication = await publishing.submit_notebook(producer, io.BytesIO(raw), manifest)
    assert isinstance(publishing.queue, InProcessQueue)
    await publishing.queue.drain()
    publication = await publishing.get(producer, publication.id)
    assert publication.status == "published", publication.error
    return publication.listing_id


async def run_job(settings, catalog, requester, listing_id: str, records: list) -> tuple[object, list]:
    """The job once final, and its outputs (one per record, each with its executed notebook)."""
    jobs = JobService(settings, catalog)
    try:
        view = await jobs.submit(requester, listing_id, "inference", records=records)
        final = [v async for v in jobs.watch(requester, view.id)][-1]
        return final, await jobs.all_outputs(final)
    finally:
        await jobs.queue.close()


async def test_a_notebook_runs_as_a_job_with_parameters_and_executed_notebooks(
    settings, catalog, people, bwrap_runtime
) -> None:
    settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    raw = notebook_bytes(
        [
            *word_stats_notebook_cells(),
            code("print('checking', top)\nassert top > 0, 'top must be positive'\n"),
        ]
    )
    listing_id = await publish_notebook(settings, catalog, people["producer"], raw, word_stats_manifest())

    final, outputs = await run_job(
        settings,
        catalog,
        people["alice"],
        listing_id,
        [{"text": "one two three", "top": 2}, {"top": 0}, None, {"txet": "typo"}],
    )
    assert final.status == JobStatus.SUCCEEDED, final.error
    given, zero, defaults, typo = outputs
    assert given["output"] == {"words": 3, "longest": ["three", "one"]}
    assert defaults["output"] == {"words": 4, "longest": ["quick"]}
    assert zero["error"] == "cell 5: AssertionError: top must be positive"
    assert "unknown parameter(s) txet" in typo["error"]
    assert final.result["succeeded"] == 2 and final.result["failed"] == 2

    executed = given["notebook"]
    assert executed["nbformat"] == 4
    injected = executed["cells"][3]
    assert injected["metadata"]["tags"] == ["injected-parameters"]
    assert "".join(injected["source"]) == "text = 'one two three'\ntop = 2\n"
    assert executed["cells"][-1]["outputs"] == [
        {"output_type": "stream", "name": "stdout", "text": "checking 2\n"}
    ]
    failing = zero["notebook"]["cells"][-1]
    assert failing["outputs"][-1]["output_type"] == "error"
    assert failing["outputs"][-1]["ename"] == "AssertionError"


async def test_a_notebook_job_respects_the_producers_timeout(
    settings, catalog, people, bwrap_runtime
) -> None:
    settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    raw = notebook_bytes(
        [
            md("# Sleeper\n\nSleeps for as long as it is told."),
            code("seconds = 0\n", "parameters"),
            code("import time\ntime.sleep(seconds)\noutput = seconds\n"),
        ]
    )
    manifest = {"name": "sleeper", "category": "Other", "timeout_s": 1}
    listing_id = await publish_notebook(settings, catalog, people["producer"], raw, manifest)
    final, outputs = await run_job(
        settings, catalog, people["alice"], listing_id, [{"seconds": 0}, {"seconds": 30}]
    )
    assert final.status == JobStatus.SUCCEEDED, final.error
    fast, slow = outputs
    assert fast["output"] == 0
    limit = "the listing's limit of 1 s per call (plus 2 s allowed for the sandbox to start)"
    assert slow == {"error": f"timed out after {limit}"}


async def test_a_notebook_is_verified_and_runs_in_docker(settings, catalog, people, docker_runtime) -> None:
    """MLREPO_RUNTIME=docker: the notebook's package is built into an image (FROM the base image, whose
    Python has no Jupyter either), probed and verified in a container, and its jobs run in containers."""
    settings = settings.model_copy(update={"runtime": "docker", "job_heartbeat_s": 0.2})
    raw = word_stats_notebook()
    listing_id = await publish_notebook(settings, catalog, people["producer"], raw, word_stats_manifest())
    final, outputs = await run_job(
        settings, catalog, people["alice"], listing_id, [{"text": "a bb", "top": 1}]
    )
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert final.metrics["runtime"] == "docker"
    (record,) = outputs
    assert record["output"] == {"words": 2, "longest": ["bb"]}
    assert record["notebook"]["cells"][3]["metadata"]["tags"] == ["injected-parameters"]
