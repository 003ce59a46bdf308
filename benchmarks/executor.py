"""Executor figures: sandbox start overhead per copy, and 10k-record inference through the full path
versus the same model code called directly in-process — in one run.

    python -m benchmarks.executor [--records 10000] [--starts 10] [--docker-host unix:///run/mlrepo-docker.sock]

The model is a small MLP text classifier (hashed bag of words → 256 hidden → 2 classes, numpy). It is
published through the real publishing service (package → test → publish → list; containerized too when an
engine answers), then run as a job: JobService → allocation → batches in fresh sandbox copies →
output filtering → results stored → usage recorded. "direct" imports the same ``predict.py`` into this
process and calls ``predict`` on every record. Targets: docker copy ≤ 0.5 s, bwrap copy ≤ 50 ms, full
path ≤ 1.5 x direct. Prints one JSON line per figure group.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.sentiment_package import sentiment_manifest, wait_published, zip_package
from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.enums import JobStatus
from catalog.publishing.service import PublishingService
from executor.job_views import JobView
from executor.jobs import JobService
from executor.publish_sandbox import ExecutorSandbox
from executor.runtimes import BwrapRuntime, DockerRuntime, Limits, Package, RunRequest, Runtime
from infra.migrate import upgrade_async
from infra.settings import Settings

PREDICT = textwrap.dedent(
    """
    import json, sys, zlib
    import numpy as np

    DIM, HIDDEN = 2048, 256
    _rng = np.random.default_rng(7)
    W1 = (_rng.standard_normal((DIM, HIDDEN)) * 0.05).astype(np.float32)
    W2 = _rng.standard_normal((HIDDEN, 2)).astype(np.float32)
    LABELS = ("negative", "positive")

    def predict(text):
        x = np.zeros(DIM, np.float32)
        for token in str(text).lower().split():
            x[zlib.crc32(token.encode()) % DIM] += 1.0
        z = np.maximum(x @ W1, 0.0) @ W2
        p = np.exp(z - z.max())
        p /= p.sum()
        return {"label": LABELS[int(p.argmax())], "confidence": float(p.max())}

    if __name__ == "__main__":
        for line in sys.stdin:
            record = json.loads(line)
            sys.stdout.write(json.dumps({"id": record["id"], "output": predict(record["input"])}) + "\\n")
    """
)
WORDS = [
    "good",
    "bad",
    "great",
    "awful",
    "plot",
    "acting",
    "music",
    "boring",
    "brilliant",
    "slow",
    "fun",
    "long",
    "short",
    "dark",
    "bright",
]


# A text → text step (lower case, single spaces) to put in front of the model in a pipeline.
NORMALIZE = textwrap.dedent(
    """
    import json, sys

    for line in sys.stdin:
        record = json.loads(line)
        text = " ".join(str(record["input"]).lower().split())
        sys.stdout.write(json.dumps({"id": record["id"], "output": text}) + "\\n")
    """
)


def package(name: str, normalizer: bool = False) -> bytes:
    """The sentiment model's package ``name``, or (``normalizer``) the text → text step's."""
    manifest = sentiment_manifest(
        name,
        "Lower-cases a text and collapses its spaces."
        if normalizer
        else "Sentiment of a review (small MLP over hashed words).",
        resources={"cpu": 1, "memory_mb": 512, "gpu": 0},
        timeout_s=30,
        tests=[],
        **({"output": {"format": "text@1"}} if normalizer else {}),
    )
    return zip_package(manifest, NORMALIZE if normalizer else PREDICT)


def records(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(12)) for i in range(n)]


async def start_overhead(runtime: Runtime, package_: Package, starts: int) -> dict[str, float]:
    """Median wall time of a fresh copy running ``true`` (pure sandbox cost) and ``python3 -c pass``."""
    figures = {}
    for label, command in (("true", ("true",)), ("python3", ("python3", "-c", "pass"))):
        times = []
        for _ in range(starts + 1):
            started = time.perf_counter()
            result = await runtime.run(package_, RunRequest(command=command), Limits(timeout_s=30))
            if not result.ok:
                raise RuntimeError(f"{runtime.name}: {result.failure}")
            times.append(time.perf_counter() - started)
        figures[f"{label}_median_ms"] = round(1000 * statistics.median(times[1:]), 1)
    return figures


DIRECT = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from predict import predict
inputs = json.load(open(sys.argv[2]))
started = time.perf_counter()
outputs = [predict(text) for text in inputs]
print(time.perf_counter() - started)
"""


def direct(code_dir: Path, inputs: list[str], python: str) -> float:
    """The same ``predict`` called in-process by the interpreter the sandboxes run (same numpy build,
    one BLAS thread like a 1-CPU sandbox), so the ratio measures our path, not two numpy builds."""
    data = code_dir.parent / "inputs.json"
    data.write_text(json.dumps(inputs))
    env = {"PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [python, "-c", DIRECT, str(code_dir), str(data)], env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip())


async def publish(
    settings: Settings, catalog: CatalogApp, name: str, dataset: Path | None = None, normalizer: bool = False
) -> str:
    """Publish through the real service, as a producer does: the benchmark's model package ``name`` (the
    text normalizer's with ``normalizer``), or the JSON-lines file ``dataset`` as a dataset listing."""
    service = PublishingService(settings, catalog.db, catalog.listings, ExecutorSandbox(settings))
    actor = (await catalog.accounts.create(f"producer-{name}", "producer")).as_actor()
    if dataset is None:
        submitted = await service.submit_package(actor, io.BytesIO(package(name, normalizer)))
    else:
        manifest = {"name": name, "kind": "dataset", "category": "nlp"}
        with dataset.open("rb") as upload:
            submitted = await service.submit_dataset(actor, upload, manifest)
    published = await wait_published(service, actor, submitted)
    assert published.listing_id is not None
    return published.listing_id


async def full_path(
    settings: Settings, catalog: CatalogApp, listing_id: str | None, actor: Actor | None = None, **inputs: Any
) -> tuple[float, JobView]:
    """Run an inference job on ``inputs`` (``records=`` or ``dataset_listing_id=``; ``pipeline_id=``
    instead of a listing) to its end, the way a requester (``actor``, or a new one) does; its wall time
    and final view. A record that failed is an error."""
    jobs = JobService(settings, catalog)
    if actor is None:
        actor = (await catalog.accounts.create(f"requester-{settings.runtime}", "requester")).as_actor()
    try:
        started = time.perf_counter()
        submitted = await jobs.submit(actor, listing_id, "inference", **inputs)
        view = submitted
        async for view in jobs.watch(actor, submitted.id):  # noqa: B007 - the last view is the outcome
            pass
        elapsed = time.perf_counter() - started
    finally:
        await jobs.queue.close()
    if view.status != JobStatus.SUCCEEDED or view.result is None or view.result["failed"]:
        raise RuntimeError(f"job {view.status}: {view.error}")
    return elapsed, view


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--docker-host", default=None)
    parser.add_argument("--python", default="/usr/bin/python3", help="The interpreter bwrap sandboxes run.")
    args = parser.parse_args()
    inputs = records(args.records)
    with tempfile.TemporaryDirectory(prefix="mlrepo-bench-exec-") as tmp:
        base = Settings(data_dir=Path(tmp) / "data", redis_url=None, runtime="bwrap", job_heartbeat_s=1.0)
        await upgrade_async(base)
        code_dir = Path(tmp) / "code"
        code_dir.mkdir()
        (code_dir / "predict.py").write_text(PREDICT)
        direct_s = direct(code_dir, inputs, args.python)
        print(
            json.dumps(
                {
                    "direct": {
                        "records": len(inputs),
                        "seconds": round(direct_s, 3),
                        "per_record_us": round(1e6 * direct_s / len(inputs), 1),
                        "python": args.python,
                    }
                }
            ),
            flush=True,
        )

        docker = DockerRuntime(args.docker_host)
        scenarios: list[tuple[Runtime, Settings]] = [(BwrapRuntime(), base)]
        if docker.available():
            scenarios.append(
                (docker, base.model_copy(update={"runtime": "docker", "docker_host": docker.base_url}))
            )
        catalog = await CatalogApp.open(base, with_index=False)
        try:
            for runtime, settings in scenarios:
                listing_id = await publish(settings, catalog, f"bench-mlp-{runtime.name}")
                image = None
                if isinstance(runtime, DockerRuntime):
                    versions = await catalog.listings.versions(
                        (await catalog.accounts.create("admin-view", "admin")).as_actor(), listing_id
                    )
                    image = versions[-1].image_ref
                overhead = await start_overhead(
                    runtime, Package(entrypoint=("true",), image=image, code_dir=code_dir), args.starts
                )
                seconds, job = await full_path(settings, catalog, listing_id, records=inputs)
                print(
                    json.dumps(
                        {
                            "runtime": runtime.name,
                            "start_overhead": overhead,
                            "full_path": {
                                "records": len(inputs),
                                "seconds": round(seconds, 3),
                                "calls": job.metrics["calls"],
                            },
                            "ratio_full_over_direct": round(seconds / direct_s, 2),
                        }
                    ),
                    flush=True,
                )
        finally:
            await catalog.close()


if __name__ == "__main__":
    asyncio.run(main())
