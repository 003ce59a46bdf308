"""Peak memory of a worker scoring a dataset listing: a small dataset against a big one, each in a fresh
process, so the bound (records streamed from the stored file a chunk at a time, outputs written out as
they come) shows as a flat line rather than one that grows with the dataset.

    python -m benchmarks.dataset_job [--sizes 1000,1000000] [--gzip] [--pipeline]

Each size runs in a child process: a JSON-lines dataset of that many reviews is stored in the real
artifact store (gzipped with ``--gzip``) and listed, the sentiment model of ``benchmarks.executor`` is
published through the real publishing service, and a ``JobService`` runs the inference job in bwrap
sandboxes. With ``--pipeline`` the job runs a requester's two-step pipeline instead (a text normalizer,
then the model): each chunk of the dataset goes through both stages before the next is read. The child
reports its own peak RSS (``ru_maxrss``: the worker, not the sandboxes, whose memory is the producer's
limit) and the size of the job row. Prints one JSON line per size.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.executor import WORDS, full_path, publish
from catalog.actors import Actor
from catalog.app import CatalogApp
from infra.migrate import upgrade_async
from infra.settings import Settings
from infra.tables import Job


def write_dataset(path: Path, count: int, compress: bool) -> Path:
    """``count`` reviews of 12 random words (seeded: a gzipped file compresses like real text, ~7x, not
    like a repeating pattern, which publishing's compression-ratio limit takes for a bomb), written as
    they are made so the benchmark's own memory stays flat too."""
    rng = random.Random(7)
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as out:  # type: ignore[operator]
        for _ in range(count):
            out.write(json.dumps({"input": " ".join(rng.choice(WORDS) for _ in range(12))}) + "\n")
    return path


async def normalize_then_score(catalog: CatalogApp, settings: Settings, model_id: str) -> tuple[Actor, str]:
    """A requester and their pipeline: the text normalizer, then the model."""
    normalizer_id = await publish(settings, catalog, "bench-normalizer", normalizer=True)
    actor = (await catalog.accounts.create("requester-pipeline", "requester")).as_actor()
    pipeline = await catalog.pipelines.create(actor, "normalize then score")
    for listing_id in (normalizer_id, model_id):
        await catalog.pipelines.add_step(actor, pipeline.id, listing_id)
    return actor, pipeline.id


async def child(count: int, compress: bool, pipeline: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="mlrepo-bench-dataset-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", redis_url=None, runtime="bwrap", job_heartbeat_s=1.0)
        await upgrade_async(settings)
        catalog = await CatalogApp.open(settings, with_index=False)
        try:
            model_id = await publish(settings, catalog, "bench-dataset-mlp")
            name = "reviews.jsonl.gz" if compress else "reviews.jsonl"
            dataset = write_dataset(Path(tmp) / name, count, compress)
            dataset_id = await publish(settings, catalog, "reviews", dataset=dataset)
            if pipeline:
                actor, pipeline_id = await normalize_then_score(catalog, settings, model_id)
                run = {"actor": actor, "pipeline_id": pipeline_id}
            else:
                run = {"listing_id": model_id}
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            seconds, view = await full_path(
                settings, catalog, run.pop("listing_id", None), dataset_listing_id=dataset_id, **run
            )
            if view.outputs_count != count:
                raise RuntimeError(f"{view.outputs_count} outputs for {count} records")
            async with catalog.db.session() as session:
                row = await session.get(Job, view.id)
                row_bytes = sum(
                    len(json.dumps(v)) for v in (row.inputs, row.result, row.metrics, row.progress)
                )
            return {
                "records": count,
                "gzip": compress,
                "pipeline": pipeline,
                "seconds": round(seconds, 1),
                **(
                    {"records_in_per_step": [s["records_in"] for s in view.metrics["steps"]]}
                    if pipeline
                    else {"calls": view.metrics["calls"]}
                ),
                "peak_rss_mb_before_job": round(before / 1024, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "job_row_json_bytes": row_bytes,
            }
        finally:
            await catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--gzip", action="store_true", help="Store the dataset as one .jsonl.gz file.")
    parser.add_argument("--pipeline", action="store_true", help="Run a two-step pipeline on the dataset.")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(asyncio.run(child(args.child, args.gzip, args.pipeline))), flush=True)
        return
    flags = [flag for flag, on in (("--gzip", args.gzip), ("--pipeline", args.pipeline)) if on]
    for size in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, "-m", "benchmarks.dataset_job", "--child", str(size), *flags]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
