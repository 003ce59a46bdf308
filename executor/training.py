"""Training: an algorithm listing + training data → its ``train`` entrypoint in a sandbox → a new model
listing owned by the requester (private), with accuracy measured on a held-out split.

Conventions (the contract of architecture.md §4, made concrete):
- training data is JSON lines of examples ``{"input": …, "target": …}`` (``label`` or ``output`` are
  accepted for ``target``), from a dataset listing's stored file or given inline;
- the host holds out a deterministic 20 % (seeded by the job id) and binds the rest read-only at
  ``/data/train.jsonl``; the ``train`` entrypoint writes the model into ``/output``, a size-capped tmpfs
  that comes back as a tar stream and is unpacked through publishing's archive safety checks;
- the trained model is the algorithm's package plus that output under ``model/`` (so its inference
  entrypoint reads ``/app/model/…``), stored content-addressed like any package, and for Docker built as
  an image FROM the algorithm's image;
- accuracy is the share of held-out examples whose output (its ``label`` when it has one) equals the target.
- the examples are streamed from the store into ``train.jsonl`` (only the held-out examples are held in
  memory), whatever their number;
- a pipeline step's job trains on its dataset's examples as the steps in front of it hand them over
  (``training_feed``): stored as an artifact its row names (``FED_EXAMPLES_KEY``), streamed the same way,
  and its held-out accuracy is that of the chain;
- a retry after a lost worker adopts the model its earlier attempt wrote (found by name and
  ``training_job_id``), so the job ends with one model, not a CONFLICT on that model's name.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from catalog.actors import Actor
from catalog.enums import JobStatus, UsageKind
from catalog.job_output_retention import FED_EXAMPLES_KEY
from catalog.provenance import REDISTRIBUTION_KEY, redistribution_of
from catalog.publishing.archive_safety import ArchiveLimits, extract_archive
from catalog.publishing.images import ImageService
from catalog.publishing.listing_writer import Target, write_version
from catalog.publishing.packaging import normalize_package
from executor.datasets import DatasetReader, check_dataset_size, dataset_digest
from executor.gpus import leased_gpus
from executor.inference import InferencePlan, run_inference
from executor.job_base import JOB_LABEL
from executor.job_claims import claim_of
from executor.job_inputs import input_check
from executor.job_recovery import _append_log
from executor.output_filter import OutputFilter
from executor.packages import prepare_runnable
from executor.runtimes import DockerRuntime, Package, RunRequest
from infra.artifacts import ArtifactStore, StoredArtifact
from infra.errors import BadInput
from infra.tables import Account, Job, Listing, ListingVersion, utcnow
from infra.text import storable_text

if TYPE_CHECKING:
    from executor.jobs import JobService

HOLDOUT_SHARE = 0.2
MIN_EXAMPLES_FOR_HOLDOUT = 5
TARGET_KEYS = ("target", "label", "output")
TRAINING_TIMEOUT_FLOOR_S = 60.0
TRAINING_RESULT_KEY = "training_result"  # in the model version's manifest: what a retry adopts
# A pipeline step's job inputs when its examples were fed through the steps in front (``training_feed``).
FED_KEYS = ("fed_through", "fed_dropped")


def parse_examples(lines: list[Any]) -> list[tuple[Any, Any]]:
    """``(input, target)`` pairs. Both are required, as the error says: an example without a target
    teaches the algorithm nothing and makes the held-out accuracy compare outputs with nothing."""
    examples = [example_of(item, number) for number, item in enumerate(lines, 1)]
    if not examples:
        raise BadInput("the training data holds no examples")
    return examples


def example_of(item: Any, number: int) -> tuple[Any, Any]:
    """Training example ``number``'s ``(input, target)``; BadInput naming it when it is not one."""
    check_example(item, f"training example {number}", "records")
    return item["input"], next(item[k] for k in TARGET_KEYS if k in item)


def check_example(item: Any, what: str, field: str) -> None:
    """BadInput naming ``field`` unless ``item`` is an example: an object with an input and a target."""
    missing = _missing_parts(item)
    if missing:
        raise BadInput(
            f"{what} must be an object with 'input' and 'target' ('label' or 'output' are accepted for "
            f"'target'); it has no {' and no '.join(repr(k) for k in missing)}",
            field=field,
        )


def _missing_parts(item: Any) -> list[str]:
    if not isinstance(item, dict):
        return ["input", "target"]
    has_target = any(k in item for k in TARGET_KEYS)
    return [k for k, present in (("input", "input" in item), ("target", has_target)) if not present]


def split(examples: list[tuple[Any, Any]], seed: str) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
    """Deterministic per job, so a retried job trains and scores on exactly the same examples."""
    held = holdout_positions(len(examples), seed)
    holdout = [x for i, x in enumerate(examples) if i in held]
    train = [x for i, x in enumerate(examples) if i not in held]
    return train, holdout


def holdout_positions(count: int, seed: str) -> set[int]:
    """Which of ``count`` examples (by position) are held out: what ``split`` needs of them is their
    number, so examples streamed from the store are split the same way without being held."""
    if count < MIN_EXAMPLES_FOR_HOLDOUT:
        return set()
    order = list(range(count))
    random.Random(int(hashlib.sha256(seed.encode()).hexdigest()[:16], 16)).shuffle(order)
    return set(order[: max(1, int(count * HOLDOUT_SHARE))])


def is_correct(output: Any, target: Any) -> bool:
    if isinstance(output, dict) and "label" in output and not isinstance(target, dict):
        return output["label"] == target
    return output == target


async def run_training_job(service: JobService, row: Job, staging: Path) -> tuple[JobStatus, str | None]:
    settings = service.settings
    async with service.db.session() as session:
        algorithm = await session.get(Listing, row.listing_id)
        version = await service.latest_version(session, row.listing_id)
        owner = await session.get(Account, row.owner_id)
        dataset_id = (row.inputs or {}).get("dataset_listing_id")
        dataset = await session.get(Listing, dataset_id) if dataset_id else None
    if algorithm is None or version is None or owner is None:
        return JobStatus.FAILED, "the algorithm, its published version or your account no longer exists"
    # One path for all training data, streamed into the data directory below: a pipeline step's fed
    # examples (stored as an artifact), or a dataset's stored file then any examples given inline.
    fed_digest = (row.inputs or {}).get(FED_EXAMPLES_KEY)
    if fed_digest is not None:
        digest, inline, size_checked = fed_digest, [], False
    else:
        digest = await dataset_digest(service.db, dataset_id) if dataset_id else None
        inline, size_checked = list((row.inputs or {}).get("records") or []), True
    write_train = partial(
        _write_streamed_examples,
        settings,
        digest,
        inline,
        size_checked,
        row.id,
        staging / "examples",
        input_check(algorithm.input_schema),
    )
    name = f"{algorithm.name}-trained-{row.id[:8]}"
    earlier = await _model_of_earlier_attempt(service, row, name)
    if earlier is not None:
        return await _adopt(service, row, earlier, dataset)

    runnable = await prepare_runnable(settings, service.selector, version, staging / "algorithm")
    if not runnable.package.train_entrypoint:
        return JobStatus.FAILED, f"{algorithm.name} declares no train entrypoint"
    data_dir = _world_readable_dir(staging / "data")
    train_count, holdout = await asyncio.to_thread(write_train, data_dir / "train.jsonl")
    os.chmod(data_dir / "train.jsonl", 0o644)

    limits = service.limits_for(
        _allocation(row), max(TRAINING_TIMEOUT_FLOOR_S, float(algorithm.timeout_s or 0) * 10)
    )
    await service.progress_hook(row)(_Progress(total=train_count))
    result = await runnable.runtime.run(
        runnable.package,
        RunRequest(
            command=runnable.package.train_entrypoint,
            data_dir=data_dir,
            collect_output_dir=True,
            labels={JOB_LABEL: row.id},
        ),
        limits,
    )
    if not result.ok:
        assert result.failure is not None
        status = JobStatus.TIMED_OUT if result.failure.kind == "timeout" else JobStatus.FAILED
        return await _training_failed(service, row, dataset, result.stderr, status, result.failure.reason)
    if not result.stdout.strip(b"\0"):
        # /output streamed as a tar with no member is end-of-archive blocks only: unpacking it called
        # the algorithm's model an unsafe archive, which told nobody what went wrong.
        reason = "the train entrypoint wrote nothing to /output, where the trained model must go"
        return await _training_failed(service, row, dataset, result.stderr, JobStatus.FAILED, reason)

    trained_dir = await asyncio.to_thread(_assemble, settings, version, result.stdout, staging)
    package = Package(entrypoint=runnable.package.entrypoint, code_dir=trained_dir)
    image = None
    if isinstance(runnable.runtime, DockerRuntime) and runnable.package.image:
        image = await asyncio.to_thread(
            _build_image, settings, runnable.runtime, runnable.package.image, trained_dir, row.id
        )
        package = replace(package, image=image)

    accuracy = None
    holdout_errors = 0
    if holdout:
        plan = InferencePlan(
            package=package,
            limits=service.limits_for(_allocation(row), algorithm.timeout_s),
            output_filter=OutputFilter.for_listing(algorithm.output_format, algorithm.output_schema),
            labels=((JOB_LABEL, row.id),),
        )
        scored = await run_inference(runnable.runtime, plan, [x for x, _ in holdout])
        pairs = list(zip(scored.results, holdout, strict=True))
        correct = sum(1 for r, (_, y) in pairs if r.ok and is_correct(r.output, y))
        accuracy = round(correct / len(holdout), 4)
        # A record that errored counts as wrong; the count says whether the model failed or erred.
        holdout_errors = sum(1 for r, _ in pairs if not r.ok)

    # The model carries the algorithm's code: encrypted at rest when the producer had it encrypted.
    stored = await asyncio.to_thread(_store_package, settings, trained_dir, staging, bool(version.encrypted))
    digest = stored.digest
    actor = Actor(account_id=owner.id, role=owner.role, name=owner.name)
    source = dataset.name if dataset else "uploaded data"
    if (row.inputs or {}).get("fed_through"):
        source += f" fed through {' → '.join(row.inputs['fed_through'])}"
    fields = {
        "name": name,
        "kind": "model",
        "category": algorithm.category,
        "subcategories": list(algorithm.subcategories or []),
        "description": f"{algorithm.name} trained on {source} by job {row.id}.",
        "framework": algorithm.framework,
        "tags": list(algorithm.tags or []),
        "input_format": algorithm.input_format,
        "input_schema": algorithm.input_schema,
        "output_format": algorithm.output_format,
        "output_schema": algorithm.output_schema,
        "resources": algorithm.resources,
        "timeout_s": algorithm.timeout_s,
        "visibility": "private",
        "accuracy": accuracy,
        "accuracy_metric": "accuracy" if accuracy is not None else None,
        "accuracy_dataset": f"held-out {len(holdout)} of {source}" if holdout else None,
    }
    manifest = dict(version.manifest or {})
    training_result = {
        "accuracy": accuracy,
        "train_examples": train_count,
        "holdout": len(holdout),
        "holdout_errors": holdout_errors,
        **{k: row.inputs[k] for k in FED_KEYS if k in (row.inputs or {})},
    }
    manifest.update(
        {
            "trained_from": algorithm.id,
            REDISTRIBUTION_KEY: redistribution_of(version.manifest, algorithm.owner_id, owner.id),
            "training_job_id": row.id,
            TRAINING_RESULT_KEY: training_result,
            "train_entrypoint": None,
        }
    )
    listing_id = await write_version(
        service.catalog.listings,
        actor,
        Target(None, "1.0.0", None),
        {k: v for k, v in fields.items() if v is not None},
        {
            "artifact_kind": "package",
            "artifact_digest": digest,
            "encrypted": stored.encrypted,
            "image_ref": image,
            "manifest": manifest,
            "notes": f"trained by job {row.id}",
        },
        {"producer_name": owner.name, "storage_location": f"artifact:{digest}"},
        # Only while this run holds the job: a run recovery took over must not leave a model behind.
        first=lambda session: claim_of(row).write(session, heartbeat_at=utcnow()),
    )
    await service.store(
        row,
        result={"trained_listing_id": listing_id, **training_result},
        metrics={
            "runtime": runnable.runtime.name,
            "gpus": list(leased_gpus()),
            "training_s": round(result.duration_s, 3),
            "accuracy": accuracy,
        },
        logs=storable_text(result.stderr[-4000:].decode("utf-8", "replace")),
    )
    await _record_usage(service, row, dataset, success=True)
    return JobStatus.SUCCEEDED, None


async def _model_of_earlier_attempt(service: JobService, row: Job, name: str) -> ListingVersion | None:
    """The model version an earlier attempt of this job wrote, when its worker died before the job
    finished (the listing, its version and artifact are written in one transaction: it is complete)."""
    async with service.db.session() as session:
        versions = (
            await session.scalars(
                select(ListingVersion)
                .join(Listing, Listing.id == ListingVersion.listing_id)
                .where(Listing.owner_id == row.owner_id, Listing.name == name)
            )
        ).all()
    return next((v for v in versions if (v.manifest or {}).get("training_job_id") == row.id), None)


async def _adopt(
    service: JobService, row: Job, model: ListingVersion, dataset: Listing | None
) -> tuple[JobStatus, str | None]:
    """Finish a retried training with the model its earlier attempt wrote, rather than train again and
    collide with that model's name. Its use is recorded unless that attempt got as far as storing its
    result (it records the use right after)."""
    stored = (row.result or {}).get("trained_listing_id") == model.listing_id
    result = {"trained_listing_id": model.listing_id, **(model.manifest or {}).get(TRAINING_RESULT_KEY, {})}
    await service.store(
        row,
        result=result,
        logs=_append_log(row.logs, f"adopted model {model.listing_id}, written by an earlier attempt"),
    )
    if not stored:
        await _record_usage(service, row, dataset, success=True)
    return JobStatus.SUCCEEDED, None


class _Progress:
    """Training has no batches; one progress event says it started (records = training examples)."""

    def __init__(self, total: int) -> None:
        self.calls, self.done, self.total, self.failed_calls = 0, 0, total, 0


def _allocation(row: Job) -> Any:
    from executor.allocation import Allocation

    return Allocation(**row.resources)


Examples = list[tuple[Any, Any]]


def _write_streamed_examples(
    settings: Any,
    digest: str | None,
    inline: list[Any],
    size_checked: bool,
    seed: str,
    scratch: Path,
    check: Any,
    target: Path,
) -> tuple[int, Examples]:
    """The training data streamed into ``target``: the examples of the stored file ``digest`` (a
    dataset's, whose size ``size_checked`` holds to ``MAX_DATA_BYTES``, or a pipeline step's fed
    examples), then those given ``inline``. A first pass counts them (``holdout_positions`` needs their
    number), a second writes the training split to ``target`` and keeps only the held-out examples, so
    memory does not grow with the training data. How many were written, and the held-out examples."""
    try:
        reader = DatasetReader(settings, digest, scratch) if digest is not None else None
        if reader is not None and size_checked:
            check_dataset_size(sum(part.stat().st_size for part in reader.parts))

        def items() -> Iterator[Any]:
            return itertools.chain(reader.values() if reader is not None else (), inline)

        count = sum(1 for _ in items())
        if count == 0:
            raise BadInput("the training data holds no examples")
        held = holdout_positions(count, seed)
        holdout: Examples = []
        with open(target, "w", encoding="utf-8") as out:
            for number, item in enumerate(items()):
                x, y = example_of(item, number + 1)
                check(f"training example {number + 1} input", x, "records")
                if number in held:
                    holdout.append((x, y))
                else:
                    out.write(json.dumps({"input": x, "target": y}) + "\n")
        return count - len(holdout), holdout
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _training_failed(
    service: JobService, row: Job, dataset: Listing | None, stderr: bytes, status: JobStatus, reason: str
) -> tuple[JobStatus, str | None]:
    """A training that made no model: its logs kept for the requester, the run counted as failed."""
    await service.store(row, logs=storable_text(stderr[-4000:].decode("utf-8", "replace")))
    await _record_usage(service, row, dataset, success=False)
    return status, f"training failed: {reason}"


def _world_readable_dir(path: Path) -> Path:
    """Docker binds it as is (read by uid 65534 inside); bwrap makes its own private copy."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def _assemble(settings: Any, version: ListingVersion, tar_stream: bytes, staging: Path) -> Path:
    """Algorithm code + the trained output under model/, unpacked through the archive safety checks."""
    from catalog.publishing.packaging import checkout_package

    limits = ArchiveLimits.from_settings(settings)
    trained = staging / "trained"
    if version.artifact_digest and version.artifact_kind == "package":
        code = checkout_package(
            ArtifactStore.from_settings(settings), version.artifact_digest, staging / "code", limits
        )
        shutil.copytree(code, trained)
    else:
        trained.mkdir()
    archive = staging / "model.tar"
    archive.write_bytes(tar_stream)
    extract_archive(archive, trained / "model", limits)
    archive.unlink()
    # Extraction roots are private (0700); the image runs as uid 65534, which must read model/.
    for root, dirs, _files in os.walk(trained):
        os.chmod(root, 0o755)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    return trained


def _store_package(settings: Any, trained_dir: Path, staging: Path, encrypt: bool) -> StoredArtifact:
    tarball = normalize_package(trained_dir, staging / "trained.tar.gz")
    return ArtifactStore.from_settings(settings).put_file(tarball, encrypt=encrypt)


def _build_image(
    settings: Any, runtime: DockerRuntime, base_image: str, trained_dir: Path, job_id: str
) -> str:
    """The trained model as an image FROM the algorithm's, pushed when a registry is configured."""
    images = ImageService(runtime.base_url, settings.registry_url, settings.base_image)
    tag = f"mlrepo-trained/{job_id}:1"
    image_id = images.build(tag, ["python3"], {"mlrepo.job": job_id}, code_dir=trained_dir, base=base_image)
    if settings.registry_url:
        return images.push(image_id, f"{settings.registry_url}/mlrepo-trained/{job_id}", "1")
    return tag


async def _record_usage(service: JobService, row: Job, dataset: Listing | None, success: bool) -> None:
    status = JobStatus.SUCCEEDED if success else JobStatus.FAILED
    await service.record_usage(row, UsageKind.TRAINING, status, None)
    if dataset is not None:
        await service.record_usage(row, UsageKind.TRAINING, status, None, listing_id=dataset.id)
