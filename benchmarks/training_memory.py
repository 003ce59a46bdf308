"""Peak memory of a training job's preparation (its dataset read from the store, split, and the training
share written to ``train.jsonl``): the way it is done now (``_write_streamed_examples``: streamed twice,
only the held-out share held) against the way it was done before (the dataset's values loaded whole, then
parsed into examples, then split into two lists, as ``run_training_job`` did until it streamed them).

    python -m benchmarks.training_memory [--mb 32]

A JSON-lines dataset of about ``--mb`` MiB of labelled reviews is stored in the real artifact store; each
way then runs in its own child process, which reports the peak of Python allocations during the
preparation (``tracemalloc``) and its own peak RSS (``ru_maxrss``) less the RSS it started it with.
Prints one JSON line per way. Figures, no assertions.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.executor import WORDS
from executor.datasets import DatasetReader, check_dataset_size
from executor.job_inputs import check_against_input_schema, input_check
from executor.training import _write_streamed_examples, parse_examples, split
from infra.artifacts import ArtifactStore
from infra.settings import Settings

SEED = "job-benchmark"


def write_dataset(path: Path, mib: int) -> int:
    """About ``mib`` MiB of reviews of 12 random words with a label, written as they are made."""
    rng = random.Random(7)
    count, size = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while size < mib << 20:
            line = (
                json.dumps({"input": " ".join(rng.choices(WORDS, k=12)), "target": rng.choice("pn")}) + "\n"
            )
            out.write(line)
            count, size = count + 1, size + len(line)
    return count


def streamed(settings: Settings, digest: str, scratch: Path, target: Path) -> tuple[int, list[Any]]:
    return _write_streamed_examples(settings, digest, [], True, SEED, scratch, input_check(None), target)


def whole(settings: Settings, digest: str, scratch: Path, target: Path) -> tuple[int, list[Any]]:
    """What training did before it streamed its dataset (``dataset_lines``, ``parse_examples``, the
    input schema check of every example, ``split``, ``_write_examples``)."""
    reader = DatasetReader(settings, digest, scratch)
    check_dataset_size(sum(part.stat().st_size for part in reader.parts))
    examples = parse_examples(list(reader.values()))
    check_against_input_schema(
        None, {f"training example {i + 1} input": x for i, (x, _) in enumerate(examples)}
    )
    train, holdout = split(examples, SEED)
    with open(target, "w", encoding="utf-8") as out:
        out.writelines(json.dumps({"input": x, "target": y}) + "\n" for x, y in train)
    return len(train), holdout


def child(way: str, data_dir: str, digest: str) -> None:
    settings = Settings(data_dir=Path(data_dir), redis_url=None)
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    count, holdout = {"streamed": streamed, "whole": whole}[way](
        settings, digest, work / "scratch", work / "train.jsonl"
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "way": way,
                "train_examples": count,
                "holdout": len(holdout),
                "tracemalloc_peak_mib": round(peak / 2**20, 1),
                "rss_growth_mib": round((after - before) / 1024, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=32, help="dataset size in MiB (the limit is 256)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        settings = Settings(data_dir=data_dir, redis_url=None)
        count = write_dataset(Path(tmp) / "reviews.jsonl", args.mb)
        digest = ArtifactStore.from_settings(settings).put_file(Path(tmp) / "reviews.jsonl").digest
        print(json.dumps({"dataset_mib": args.mb, "examples": count}))
        for way in ("whole", "streamed"):
            subprocess.run(
                [sys.executable, "-m", "benchmarks.training_memory", "--child", way, str(data_dir), digest],
                check=True,
            )


if __name__ == "__main__":
    main()
