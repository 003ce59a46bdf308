"""A sloppy or hostile producer's answers, run as real jobs (real bwrap, SQLite and PostgreSQL): whatever
the program prints, the job ends with a clear reason per record or for the job, stored on both databases.
"""

from __future__ import annotations

import asyncio

import pytest
from executor_support import outcome, publish_model

from catalog.enums import JobStatus
from executor.contract import NOT_UNICODE, TOO_DEEP
from executor.jobs import JobService
from infra.settings import Settings

# Each answer is written by hand (not json.dumps) so the program can print what JSON encoders never do.
ANSWERS = r"""
import json, sys
for line in sys.stdin:
    record = json.loads(line)
    i, text = record["id"], record["input"]
    if text == "nul":
        answer = '{"id": %d, "error": "bad\\u0000input"}' % i
    elif text == "surrogate":
        answer = '{"id": %d, "error": "half a smiley: \\ud83d"}' % i
    elif text == "surrogate output":
        answer = '{"id": %d, "output": {"label": "\\udfff"}}' % i
    elif text == "latin-1":
        sys.stdout.flush()
        sys.stdout.buffer.write(b'{"id": %d, "output": {"label": "caf\xe9"}}\n' % i)
        sys.stdout.buffer.flush()
        continue
    elif text == "repr":
        answer = repr({"id": i, "output": {"label": text}})
    elif text == "deep":
        answer = '{"id": %d, "output": {"label": %s}}' % (i, "[" * 100000 + "]" * 100000)
    else:
        answer = json.dumps({"id": i, "output": {"label": text}})
    print(answer)
"""

# Fails the whole call, its last stderr line holding NUL and bytes that are not UTF-8.
CRASHES = r"""
import sys
sys.stdin.read()
sys.stderr.buffer.write(b"loading\nbroken \x00 weights \xff\xfe\n")
sys.exit(3)
"""


@pytest.fixture
def job_settings(settings: Settings, bwrap_runtime) -> Settings:
    copies = settings.data_dir / "sandbox-copies"
    return settings.model_copy(
        update={"runtime": "bwrap", "job_heartbeat_s": 0.2, "sandbox_work_dir": copies}
    )


@pytest.fixture
async def jobs(job_settings: Settings, catalog) -> JobService:
    service = JobService(job_settings, catalog)
    yield service
    await service.queue.close()


async def run_job(jobs: JobService, catalog, people, job_settings: Settings, source: str, records: list):
    published = await publish_model(
        job_settings, catalog, people["producer"], source, output_schema={"type": "object"}
    )
    view = await jobs.submit(people["alice"], published.listing_id, "inference", records=records)
    # Before the fix a final write that could never succeed left the job RUNNING: bounded here.
    final = await asyncio.wait_for(outcome(jobs, people["alice"], view.id), 60)
    # Nothing of the run is left on the host: no package copy, no staging directory.
    assert list(job_settings.sandbox_work_dir.iterdir()) == []
    assert list((job_settings.data_dir / "job-staging").iterdir()) == []
    return final


async def test_answers_no_database_can_store_become_errors_of_their_records(
    jobs: JobService, catalog, people, job_settings: Settings
) -> None:
    """A NUL in an error failed the job's final write on PostgreSQL, a lone surrogate on both databases
    (the job stayed RUNNING, retried for ever); an answer nested 100000 deep raised RecursionError while
    parsing (an internal error lost every record of the job). Now each is its record's error."""
    records = ["good", "nul", "surrogate", "surrogate output", "deep"]
    final = await run_job(jobs, catalog, people, job_settings, ANSWERS, records)
    assert final.status == JobStatus.SUCCEEDED, final.error
    good, nul, surrogate, surrogate_output, deep = await jobs.all_outputs(final)
    assert good == {"output": {"label": "good"}}
    assert nul == {"error": "bad\ufffdinput"}
    assert surrogate == {"error": "half a smiley: \ufffd"}
    assert surrogate_output == {"error": NOT_UNICODE}
    assert deep == {"error": TOO_DEEP}
    assert final.metrics["succeeded"] == 1 and final.result == {"succeeded": 1, "failed": 4}


async def test_answers_that_are_not_utf8_json_say_so(
    jobs: JobService, catalog, people, job_settings: Settings
) -> None:
    """Latin-1 bytes, or Python's repr instead of JSON: the record's reason said only that the program
    returned no output, though it printed an answer; it now says that what it printed was not one."""
    final = await run_job(jobs, catalog, people, job_settings, ANSWERS, ["good", "latin-1", "repr"])
    assert final.status == JobStatus.SUCCEEDED, final.error
    good, latin, python_repr = await jobs.all_outputs(final)
    assert good == {"output": {"label": "good"}}
    for unanswered in (latin, python_repr):
        assert "no output for this record (2 line(s) it printed were not answers" in unanswered["error"]
        assert "UTF-8 JSON object" in unanswered["error"]


async def test_a_job_whose_first_record_erred_unstorably_fails_with_that_reason(
    jobs: JobService, catalog, people, job_settings: Settings
) -> None:
    """The job's own error is its first record's: it is stored on both databases too."""
    final = await run_job(jobs, catalog, people, job_settings, ANSWERS, ["nul", "surrogate"])
    assert final.status == JobStatus.FAILED
    assert final.error == "bad\ufffdinput"


async def test_a_crash_whose_stderr_holds_nul_fails_with_its_reason_and_log(
    jobs: JobService, catalog, people, job_settings: Settings
) -> None:
    """The reason quotes the last stderr line and the log repeats it: with a NUL there, PostgreSQL refused
    the log and the job failed as an internal error, its reason lost."""
    final = await run_job(jobs, catalog, people, job_settings, CRASHES, ["a", "b"])
    assert final.status == JobStatus.FAILED
    assert final.error == "exited with status 3: broken \ufffd weights \ufffd\ufffd"
    assert "last failure: exited with status 3: broken \ufffd weights" in final.logs


async def test_a_training_whose_stderr_holds_nul_keeps_its_reason_and_log(
    jobs: JobService, catalog, people, job_settings: Settings
) -> None:
    """A training's log is its stderr's tail: stored as it was, PostgreSQL refused it, and the failed
    training became an internal error without its reason."""
    train = CRASHES.replace("sys.stdin.read()\n", "")
    algorithm = await publish_model(
        job_settings, catalog, people["producer"], train, kind="algorithm", trainable=True, name="crashes"
    )
    examples = [{"input": f"text {i}", "target": "a"} for i in range(10)]
    view = await jobs.submit(people["alice"], algorithm.listing_id, "training", records=examples)
    final = await asyncio.wait_for(outcome(jobs, people["alice"], view.id), 60)
    assert final.status == JobStatus.FAILED
    assert final.error == "training failed: exited with status 3: broken \ufffd weights \ufffd\ufffd"
    assert "broken \ufffd weights" in final.logs
