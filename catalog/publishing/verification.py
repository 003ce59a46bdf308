"""Run a producer's unit tests in the sandbox and sign their outputs; later, check they still match.

Verification is what lets a requester trust a listing: at publish time each unit test's output must
equal the producer's expected output (after dropping what the output schema does not declare, exactly
as requesters will see it), and a signature of that output is kept on the listing version. A
re-verification runs the same tests on the published artifact; any difference in a signature means the
listing's behaviour changed (a tampered artifact, a non-deterministic model, a changed runtime), and the
listing is pulled (SUSPENDED) until its producer publishes a fixed version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from catalog.formats import project_to_schema
from catalog.publishing.contract import (
    PROBE_ID,
    ContractViolation,
    canonical_json,
    encode_records,
    parse_replies,
    signature,
)
from catalog.publishing.sandbox import RunTarget, Sandbox, SandboxLimits
from infra.errors import BadInput, Unavailable
from infra.text import storable_text

STARTUP_GRACE_S = 10.0


@dataclass
class TestReport:
    signatures: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    runtime: str = ""
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures


def limits_for(timeout_s: float, records: int, resources: dict[str, Any] | None) -> SandboxLimits:
    """The producer's per-call timeout bounds each record; the interpreter gets a start-up grace."""
    resources = resources or {}
    return SandboxLimits(
        timeout_s=timeout_s * max(records, 1) + STARTUP_GRACE_S,
        memory_mb=int(resources.get("memory_mb") or 512),
        cpus=float(resources.get("cpu") or 1.0),
        gpus=int(resources.get("gpu") or 0),
    )


async def _run_records(
    sandbox: Sandbox, target: RunTarget, records: list[tuple[str, Any]], limits: SandboxLimits
) -> tuple[dict[str, Any], str, float]:
    outcome = await sandbox.run(target, encode_records(records), limits)
    if not outcome.ok:
        tail = storable_text(outcome.stderr[-600:].decode("utf-8", "replace")).strip()
        if outcome.runtime == "none":
            raise Unavailable(outcome.reason or "no sandbox runtime is available")
        raise BadInput(
            f"the entrypoint failed in the sandbox ({outcome.reason})" + (f": {tail}" if tail else "")
        )
    return parse_replies(outcome.stdout, [rid for rid, _ in records]), outcome.runtime, outcome.duration_s


@dataclass(frozen=True)
class ProbeInput:
    """The one record the contract probe sends, and how a failure names it."""

    value: Any
    described: str


FIRST_TEST_INPUT = "the first unit test's input"
DEFAULT_PARAMETERS = "its default parameters"
NO_TESTS_INPUT = (
    "null, since the manifest declares no tests to take an example input from (declare a test whose "
    'input the entrypoint accepts, or have it answer {"id": ..., "error": ...} to input it cannot take)'
)


def probe_input_of(tests: list[Any], notebook: bool) -> ProbeInput:
    """The first unit test's input; without tests, null (for a notebook: its default parameters). A
    program that crashed on that null failed publication with a bare traceback: errors now say what was
    sent and why."""
    if tests:
        return ProbeInput(tests[0].input, FIRST_TEST_INPUT)
    return ProbeInput(None, DEFAULT_PARAMETERS if notebook else NO_TESTS_INPUT)


async def probe(
    sandbox: Sandbox, target: RunTarget, given: ProbeInput, limits: SandboxLimits, must_succeed: bool = False
) -> str:
    """Send one record; the program must answer it per the contract. An ``error`` reply is fine unless
    ``must_succeed``: a notebook probed on its own default parameters has no excuse to fail."""
    try:
        replies, runtime, duration = await _run_records(sandbox, target, [(PROBE_ID, given.value)], limits)
    except BadInput as failed:  # a crash or a broken reply: say what the program was given
        raise BadInput(
            f"the contract probe sent {given.described}: {failed.message}", **failed.details
        ) from None
    reply = replies[PROBE_ID]
    if must_succeed and not reply.ok:
        raise BadInput(f"the run on {given.described} failed: {reply.error}")
    verdict = "output" if reply.ok else f"error {reply.error!r}"
    return f"contract probe answered with {verdict} in {duration * 1000:.0f} ms ({runtime})"


async def run_unit_tests(
    sandbox: Sandbox,
    target: RunTarget,
    tests: list[dict[str, Any]],
    output_schema: dict[str, Any] | None,
    limits: SandboxLimits,
) -> TestReport:
    """Run every test in one sandbox call; compare projected outputs with the expected ones."""
    records = [(t["name"], t["input"]) for t in tests]
    try:
        replies, runtime, duration = await _run_records(sandbox, target, records, limits)
    except ContractViolation as exc:
        return TestReport(failures=[exc.message])
    report = TestReport(runtime=runtime, duration_s=duration)
    for test in tests:
        reply = replies[test["name"]]
        if not reply.ok:
            report.failures.append(f"unit test {test['name']!r} returned an error: {reply.error}")
            continue
        seen = project_to_schema(output_schema, reply.output) if output_schema else reply.output
        report.signatures[test["name"]] = signature(seen)
        if "expected_output" in test and canonical_json(seen) != canonical_json(test["expected_output"]):
            report.failures.append(
                f"unit test {test['name']!r} failed: "
                f"expected {canonical_json(test['expected_output'])[:300]}, got {canonical_json(seen)[:300]}"
            )
    return report


def compare_signatures(reference: dict[str, str], report: TestReport) -> list[str]:
    """Why the re-run differs from the recorded behaviour (empty when it is the same)."""
    problems = list(report.failures)
    for name, expected in sorted(reference.items()):
        got = report.signatures.get(name)
        if got is None:
            if not any(name in p for p in problems):
                problems.append(f"unit test {name!r} produced no output")
        elif got != expected:
            problems.append(f"unit test {name!r} changed behaviour: signature {got} != reference {expected}")
    return problems
