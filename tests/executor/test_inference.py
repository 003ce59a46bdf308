"""Inference through the real sandboxes: batching, per-record errors, timeouts and output filtering."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest

from catalog.enums import JobStatus
from executor.contract import encode_records, parse_outputs
from executor.inference import InferencePlan, Tally, output_records, run_inference, verdict
from executor.output_filter import OutputFilter
from executor.runtimes import DockerRuntime, Limits, RunRequest, Runtime

SENTIMENT_SCHEMA = {
    "type": "object",
    "required": ["label"],
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative"]},
        "confidence": {"type": "number"},
    },
}

MODEL = """
import json, sys, time
for line in sys.stdin:
    record = json.loads(line)
    text = record["input"]
    if text == "slow":
        time.sleep(30)
    if text == "bad":
        print(json.dumps({"id": record["id"], "error": "cannot score 'bad'"}))
        continue
    if text == "wrong":
        print(json.dumps({"id": record["id"], "output": {"label": 42}}))
        continue
    label = "positive" if "good" in text else "negative"
    print(json.dumps({"id": record["id"], "output": {"label": label, "confidence": 0.9, "internal": "leak"}}))
"""


def plan_for(package, timeout_s: float = 5.0) -> InferencePlan:
    return InferencePlan(
        package=package,
        limits=Limits(timeout_s=timeout_s, memory_mb=256),
        output_filter=OutputFilter(SENTIMENT_SCHEMA),
    )


async def test_outputs_are_filtered_and_errors_are_per_record(sandbox: Runtime, make_package) -> None:
    inputs = ["good day", "bad", "awful", "wrong"] + [f"good {i}" for i in range(60)]
    outcome = await run_inference(sandbox, plan_for(make_package(MODEL)), inputs)
    results = outcome.results
    assert results[0].output == {"label": "positive", "confidence": 0.9}  # "internal" dropped
    assert results[1].error == "cannot score 'bad'"
    assert results[2].output == {"label": "negative", "confidence": 0.9}
    assert "output does not match the declared schema: $.label" in (results[3].error or "")
    assert all(r.output == {"label": "positive", "confidence": 0.9} for r in results[4:])
    assert outcome.progress.calls >= 2  # a small probe first, then a bigger batch
    assert verdict(outcome) == (JobStatus.SUCCEEDED, None)
    assert Tally().add(outcome).summary() == {"succeeded": 62, "failed": 2}
    assert "internal" not in str(list(output_records(outcome)))


async def test_a_record_slower_than_the_limit_fails_alone(bwrap_runtime: Runtime, make_package_bwrap) -> None:
    inputs = ["good a", "good b", "slow", "good c"]
    plan = plan_for(make_package_bwrap(MODEL), timeout_s=0.5)
    outcome = await run_inference(bwrap_runtime, plan, inputs)
    assert [r.ok for r in outcome.results] == [True, True, False, True]
    assert outcome.results[2].timed_out and "timed out" in (outcome.results[2].error or "")
    assert verdict(outcome)[0] == JobStatus.SUCCEEDED


async def test_a_job_whose_every_record_times_out_is_timed_out(
    bwrap_runtime: Runtime, make_package_bwrap
) -> None:
    outcome = await run_inference(bwrap_runtime, plan_for(make_package_bwrap(MODEL), timeout_s=0.5), ["slow"])
    status, reason = verdict(outcome)
    # The producer's limit is what was exceeded; the sandbox's start allowance is named apart from it
    # (this said "timed out after 2.5 s" for a listing whose limit is 0.5 s).
    assert status == JobStatus.TIMED_OUT
    assert reason == (
        "timed out after the listing's limit of 0.5 s per call (plus 2 s allowed for the sandbox to start)"
    )


async def test_a_prepared_copy_waits_for_its_input_and_its_clock_starts_when_fed(
    sandbox: Runtime, make_package
) -> None:
    """A copy prepared ahead (while another batch runs) must not spend the producer's time waiting."""
    package = make_package(MODEL)
    limits = Limits(timeout_s=3.0, memory_mb=256)
    prepared = sandbox.prepare(package, RunRequest(command=package.entrypoint), limits)
    await asyncio.sleep(4.0)  # longer than the timeout
    result = await prepared.feed(encode_records([(0, "good")]))
    assert result.failure is None, result.failure
    assert parse_outputs(result.stdout, [0]).outcomes[0].output["label"] == "positive"


async def test_copies_prepared_ahead_never_outlive_the_job(
    docker_runtime: DockerRuntime, make_package_docker
) -> None:
    package = make_package_docker(MODEL)
    label = ("mlrepo.test-ahead", uuid.uuid4().hex)
    plan = replace(plan_for(package), labels=(label,))
    outcome = await run_inference(docker_runtime, plan, [f"good {i}" for i in range(200)])
    assert outcome.progress.calls >= 2 and outcome.succeeded == 200
    request = RunRequest(command=package.entrypoint, labels=dict([label]))
    await docker_runtime.prepare(package, request, plan.limits).discard()  # prepared, never needed
    assert docker_runtime.client.containers.list(all=True, filters={"label": "=".join(label)}) == []


async def test_a_cancelled_job_leaves_neither_its_running_nor_its_prepared_copy(
    docker_runtime: DockerRuntime, make_package_docker
) -> None:
    package = make_package_docker(MODEL)
    label = ("mlrepo.test-ahead", uuid.uuid4().hex)
    plan = replace(plan_for(package, timeout_s=60.0), labels=(label,))
    # The probe takes 32 records; the next batch grows at most 32-fold, so with 2000 more to come the
    # batch holding "slow" cannot be the last one, and a copy is prepared for the call after it.
    inputs = [f"good {i}" for i in range(40)] + ["slow"] + [f"good {i}" for i in range(2000)]
    job = asyncio.ensure_future(run_inference(docker_runtime, plan, inputs))
    running = {"label": "=".join(label), "status": "running"}
    for _ in range(300):  # the batch holding "slow" runs while the next copy waits for its input
        if len(docker_runtime.client.containers.list(filters=running)) >= 2:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("never saw a running batch and a prepared copy side by side")
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert docker_runtime.client.containers.list(all=True, filters={"label": "=".join(label)}) == []
