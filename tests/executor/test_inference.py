"""Inference through the real sandboxes: batching, per-record errors, timeouts and output filtering."""

from __future__ import annotations

from catalog.enums import JobStatus
from executor.inference import InferencePlan, result_payload, run_inference, verdict
from executor.output_filter import OutputFilter
from executor.runtimes import Limits, Runtime

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
    payload = result_payload(outcome)
    assert payload["succeeded"] == 62 and payload["failed"] == 2
    assert "internal" not in str(payload)


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
    assert status == JobStatus.TIMED_OUT and "timed out after 2.5 s" in (reason or "")
