"""Training for real: an algorithm's train entrypoint in the bwrap sandbox on a dataset listing's stored
data → a private model listing of the requester, with held-out accuracy, runnable for inference."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from executor_support import DroppingQueue, job_service, outcome, publish_dataset, publish_model
from sqlalchemy import select, update

import executor.datasets
from catalog.enums import JobStatus
from executor.job_inputs import input_check
from executor.jobs import JobService
from executor.training import _write_streamed_examples, is_correct, parse_examples, split
from infra.artifacts import ArtifactStore
from infra.errors import BadInput, Forbidden, NotFound
from infra.settings import Settings
from infra.tables import Job, Listing, ListingVersion, utcnow

# Learns which words go with which label; predicts by vote. Reads /data, writes /output, loads /app/model.
ALGORITHM = """
import json, sys, collections
if len(sys.argv) > 1 and sys.argv[1] == "train":
    votes = collections.defaultdict(collections.Counter)
    for line in open("/data/train.jsonl"):
        example = json.loads(line)
        for word in example["input"].split():
            votes[word][example["target"]] += 1
    json.dump({w: c.most_common(1)[0][0] for w, c in votes.items()}, open("/output/words.json", "w"))
    print("trained on", len(votes), "words")
    sys.exit(0)
words = json.load(open("/app/model/words.json"))
for line in sys.stdin:
    record = json.loads(line)
    counts = collections.Counter(words.get(w) for w in record["input"].split() if w in words)
    label = counts.most_common(1)[0][0] if counts else "negative"
    print(json.dumps({"id": record["id"], "output": {"label": label}}))
"""
EXAMPLES = [
    {"input": f"{a} {b}", "target": label}
    for a, label in (
        ("great", "positive"),
        ("awful", "negative"),
        ("lovely", "positive"),
        ("dull", "negative"),
    )
    for b in ("film", "plot", "cast", "score", "story")
]


@pytest.fixture
async def jobs(settings: Settings, catalog, bwrap_runtime) -> AsyncIterator[JobService]:
    async with job_service(settings, catalog, runtime="bwrap", job_heartbeat_s=0.2) as service:
        yield service


async def test_training_makes_a_private_model_with_held_out_accuracy(jobs, catalog, people, settings) -> None:
    algorithm = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True, name="word-vote"
    )
    dataset_id = await publish_dataset(settings, catalog, people["producer"], EXAMPLES, "reviews")
    view = await jobs.submit(people["alice"], algorithm.listing_id, "training", dataset_listing_id=dataset_id)
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert final.result["train_examples"] == 16 and final.result["holdout"] == 4
    assert final.result["holdout_errors"] == 0
    assert final.result["accuracy"] == 1.0  # every held-out review has a word seen in training
    trained_id = final.result["trained_listing_id"]

    async with catalog.db.session() as session:
        trained = await session.get(Listing, trained_id)
        algo_row = await session.get(Listing, algorithm.listing_id)
        data_row = await session.get(Listing, dataset_id)
        version = (
            await session.execute(
                ListingVersion.__table__.select().where(ListingVersion.listing_id == trained_id)
            )
        ).one()
    assert trained.owner_id == people["alice"].account_id and trained.visibility == "private"
    assert trained.kind == "model" and trained.accuracy == 1.0 and trained.accuracy_metric == "accuracy"
    assert version.manifest["trained_from"] == algorithm.listing_id and version.artifact_digest
    assert algo_row.usage_count == 1 and data_row.usage_count == 1  # both uses recorded

    # The new model runs like any other, for its owner only.
    run = await jobs.submit(people["alice"], trained_id, "inference", records=["great story", "dull cast"])
    scored = await outcome(jobs, people["alice"], run.id)
    assert [r["output"]["label"] for r in await jobs.all_outputs(scored)] == ["positive", "negative"]
    with pytest.raises(NotFound):
        await jobs.submit(people["bob"], trained_id, "inference", records=["x"])


async def test_a_training_queued_before_its_dataset_was_made_private_does_not_read_it(
    catalog, people, settings, bwrap_runtime
) -> None:
    """The dataset's visibility was checked at submission only, and its file read when the job ran:
    a training that waited in the queue while the producer made the dataset private still trained on
    it (the algorithm listing itself is re-checked when the job starts; its data must be too)."""
    algorithm = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True, name="word-vote"
    )
    dataset_id = await publish_dataset(settings, catalog, people["producer"], EXAMPLES, "reviews")
    jobs = JobService(settings.model_copy(update={"runtime": "bwrap"}), catalog, queue=DroppingQueue())
    waiting = await jobs.submit(
        people["alice"], algorithm.listing_id, "training", dataset_listing_id=dataset_id
    )
    await catalog.listings.update(people["producer"], dataset_id, {"visibility": "private"})
    assert await jobs.run(waiting.id) == JobStatus.FAILED
    failed = await jobs.get(people["alice"], waiting.id)
    assert "no longer available" in failed.error and failed.result is None
    async with catalog.db.session() as session:
        assert (await session.get(Listing, dataset_id)).usage_count == 0
        trained = await session.scalars(select(Listing).where(Listing.owner_id == people["alice"].account_id))
        assert trained.all() == []


async def test_a_training_retried_after_its_worker_died_adopts_the_model_it_wrote(
    jobs, catalog, people, settings
) -> None:
    """The worker died after writing the trained model's listing, before the job finished: the retry
    trained again and failed with CONFLICT (the model's name was taken by its own earlier attempt),
    leaving that model an orphan. The retry now adopts it: SUCCEEDED, one model, its use counted once."""
    algorithm = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True, name="word-vote"
    )
    view = await jobs.submit(people["alice"], algorithm.listing_id, "training", records=EXAMPLES)
    first = await outcome(jobs, people["alice"], view.id)
    assert first.status == JobStatus.SUCCEEDED, first.error
    async with catalog.db.session() as session:  # as a death right after writing the listing leaves it
        row = await session.get(Job, view.id)
        row.status, row.result, row.finished_at = JobStatus.RUNNING.value, None, None
        row.heartbeat_at = utcnow() - timedelta(hours=1)
        await session.execute(update(Listing).where(Listing.id == algorithm.listing_id).values(usage_count=0))
    assert await jobs.reconcile() == {"requeued": 1, "failed": 0}
    retried = await outcome(jobs, people["alice"], view.id)
    assert retried.status == JobStatus.SUCCEEDED, retried.error
    assert retried.attempts == 2
    assert retried.result["trained_listing_id"] == first.result["trained_listing_id"]
    assert retried.result["accuracy"] == first.result["accuracy"] == 1.0
    async with catalog.db.session() as session:
        owned = (
            await session.scalars(select(Listing.id).where(Listing.owner_id == people["alice"].account_id))
        ).all()
        algo_row = await session.get(Listing, algorithm.listing_id)
    assert owned == [first.result["trained_listing_id"]]
    assert algo_row.usage_count == 1  # the death came before the use was recorded: counted once now


async def trained_with(jobs, catalog, people, settings, source: str):
    """The final job of alice training EXAMPLES with an algorithm of ``source``."""
    algorithm = await publish_model(
        settings, catalog, people["producer"], source, kind="algorithm", trainable=True
    )
    view = await jobs.submit(people["alice"], algorithm.listing_id, "training", records=EXAMPLES)
    return await outcome(jobs, people["alice"], view.id)


async def test_a_failing_train_entrypoint_fails_the_job_with_its_reason(
    jobs, catalog, people, settings
) -> None:
    broken = ALGORITHM.replace('open("/data/train.jsonl")', 'open("/data/missing.jsonl")')
    final = await trained_with(jobs, catalog, people, settings, broken)
    assert final.status == JobStatus.FAILED
    assert "training failed" in final.error and "missing.jsonl" in final.error


async def test_a_train_entrypoint_that_writes_no_model_fails_saying_so(
    jobs, catalog, people, settings
) -> None:
    """An empty /output came back as an empty tar (zero blocks only), which the model's unpacking called
    'unsafe archive (corrupt): not a zip, tar or tar.gz archive [BAD_INPUT]': nothing the requester or
    the producer could act on. The job fails naming /output; nothing is listed, no model is kept."""
    forgetful = ALGORITHM.replace('open("/output/words.json", "w")', 'open("/tmp/words.json", "w")')
    final = await trained_with(jobs, catalog, people, settings, forgetful)
    assert final.status == JobStatus.FAILED
    assert "training failed" in final.error and "/output" in final.error, final.error
    assert "archive" not in final.error and "trained on" in final.logs
    async with catalog.db.session() as session:
        owned = await session.scalars(select(Listing).where(Listing.owner_id == people["alice"].account_id))
        assert owned.all() == []


def test_examples_split_and_scoring_rules() -> None:
    examples = parse_examples(EXAMPLES)
    train, holdout = split(examples, "job-1")
    assert (len(train), len(holdout)) == (16, 4)
    assert split(examples, "job-1") == (train, holdout)  # deterministic per job
    assert split(examples[:3], "job-1") == (examples[:3], [])  # too few to hold any out
    assert is_correct({"label": "a", "confidence": 0.3}, "a") and not is_correct({"label": "a"}, "b")
    assert is_correct([1, 2], [1, 2])
    with pytest.raises(BadInput, match="training example 1 must be an object"):
        parse_examples(["just text"])
    assert parse_examples([{"input": "a", "label": "x"}, {"input": "b", "output": None}]) == [
        ("a", "x"),
        ("b", None),
    ]


def test_streamed_training_data_is_split_as_split_did(
    settings: Settings, tmp_path: Path, monkeypatch
) -> None:
    """Ordinary training loaded its whole dataset (up to 256 MiB) into memory to split it; it now streams
    it from the store as pipeline steps' fed examples are: the same examples are held out and trained on,
    in the same order, as ``split`` chose from the whole list (the dataset's, then those inline)."""
    store = ArtifactStore.from_settings(settings)
    dataset = [{"input": f"word{i} film", "label": f"l{i % 3}"} for i in range(37)]
    inline = [{"input": "great plot", "target": "positive"}, {"input": "dull cast", "output": "negative"}]
    digest = store.put_bytes("".join(json.dumps(x) + "\n" for x in dataset).encode()).digest
    for lines, source, given, seed in (
        (dataset + inline, digest, inline, "job-1"),
        (dataset, digest, [], "job-2"),
        (inline + EXAMPLES, None, inline + EXAMPLES, "job-3"),
        (inline, None, inline, "job-4"),  # too few to hold any out
    ):
        train, holdout = split(parse_examples(lines), seed)
        target = tmp_path / f"{seed}.jsonl"
        scratch = tmp_path / f"scratch-{seed}"
        count, held = _write_streamed_examples(
            settings, source, given, True, seed, scratch, input_check(None), target
        )
        assert (count, held) == (len(train), holdout)
        written = [json.loads(line) for line in target.read_text().splitlines()]
        assert written == [{"input": x, "target": y} for x, y in train]
        assert not scratch.exists()  # the exported dataset is removed

    with pytest.raises(BadInput, match="the training data holds no examples"):
        _write_streamed_examples(
            settings, store.put_bytes(b"\n").digest, [], True, "s", tmp_path / "e", input_check(None), target
        )
    with pytest.raises(BadInput, match="training example 3 must be an object"):
        _write_streamed_examples(
            settings, None, [*inline, "text"], True, "s", tmp_path / "e", input_check(None), target
        )
    monkeypatch.setattr(executor.datasets, "MAX_DATA_BYTES", 100)
    with pytest.raises(BadInput, match="the dataset is larger than"):
        _write_streamed_examples(settings, digest, [], True, "s", tmp_path / "e", input_check(None), target)
    # A pipeline step's fed examples were bounded where they were fed: their size is not held to it.
    assert (
        _write_streamed_examples(settings, digest, [], False, "s", tmp_path / "e", input_check(None), target)[
            0
        ]
        == 30
    )  # 37 less 7 held out


async def test_training_on_a_dataset_and_inline_examples_trains_on_both(
    jobs, catalog, people, settings
) -> None:
    """The dataset's examples then those given inline are one stream, split as one."""
    algorithm = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True, name="word-vote"
    )
    dataset_id = await publish_dataset(settings, catalog, people["producer"], EXAMPLES[:15], "reviews")
    view = await jobs.submit(
        people["alice"],
        algorithm.listing_id,
        "training",
        dataset_listing_id=dataset_id,
        records=EXAMPLES[15:],
    )
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert (final.result["train_examples"], final.result["holdout"]) == (16, 4)

    empty_id = await publish_dataset(settings, catalog, people["producer"], [], "nothing")
    view = await jobs.submit(people["alice"], algorithm.listing_id, "training", dataset_listing_id=empty_id)
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.FAILED and "the training data holds no examples" in final.error


def test_an_example_without_a_target_is_refused_as_the_message_says() -> None:
    """The message said 'input' and 'target' were required, but an example without a target was
    trained on (and scored against None)."""
    with pytest.raises(
        BadInput,
        match=r"training example 2 must be an object with 'input' and 'target'.*"
        r"it has no 'target'",
    ) as refused:
        parse_examples([{"input": "a", "target": "x"}, {"input": "b"}])
    assert refused.value.details["field"] == "records"
    with pytest.raises(BadInput, match=r"it has no 'input'$"):
        parse_examples([{"target": "x"}])


async def test_a_model_trained_from_an_encrypted_algorithm_is_stored_encrypted(
    jobs, catalog, people, settings
) -> None:
    """The producer asked for their code to be encrypted at rest; the trained model (their code plus
    the learned files) was stored as a plain artifact."""
    algorithm = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True, encrypt=True
    )
    view = await jobs.submit(people["alice"], algorithm.listing_id, "training", records=EXAMPLES)
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    async with catalog.db.session() as session:
        version = await session.scalar(
            select(ListingVersion).where(ListingVersion.listing_id == final.result["trained_listing_id"])
        )
    stored = ArtifactStore.from_settings(settings).locate(version.artifact_digest)
    assert stored.encrypted and version.encrypted
    run = await jobs.submit(people["alice"], version.listing_id, "inference", records=["great story"])
    assert await jobs.all_outputs(await outcome(jobs, people["alice"], run.id)) == [
        {"output": {"label": "positive"}}
    ]


async def test_malformed_inline_training_examples_are_refused_at_submission(
    jobs, catalog, people, settings
) -> None:
    """Inline training records were taken as they came (an object's keys became "examples") and the job
    failed later, in the worker; bad input is refused when it is given, with its reason."""
    algorithm = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True
    )
    for records, reason in (
        ({"input": "great film", "target": "positive"}, "records must be a list"),
        (["great film"], "training example 1 must be an object"),
        ([{"input": "great film", "target": "positive"}, {"input": "dull"}], r"example 2 .* has no 'target'"),
    ):
        with pytest.raises(BadInput, match=reason):
            await jobs.submit(people["alice"], algorithm.listing_id, "training", records=records)


async def test_training_examples_must_match_the_algorithms_input_schema(
    jobs, catalog, people, settings
) -> None:
    """Inference records were checked against the listing's input schema, training examples never: an
    image example for a text algorithm was queued and trained on (or failed deep in the producer's code)."""
    algorithm = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True
    )
    async with catalog.db.session() as session:
        await session.execute(
            update(Listing)
            .where(Listing.id == algorithm.listing_id)
            .values(input_format="text@1", input_schema={"type": "string"})
        )
    records = [*EXAMPLES, {"input": {"pixels": [0, 255]}, "target": "positive"}]
    with pytest.raises(
        BadInput, match=r"records\[20\].input does not match the listing's input schema"
    ) as bad:
        await jobs.submit(people["alice"], algorithm.listing_id, "training", records=records)
    assert bad.value.details["field"] == "records[20].input"
    async with catalog.db.session() as session:
        assert (await session.scalars(select(Job.id))).all() == []

    # A dataset's examples are read when the job runs: it fails with the same reason, and makes no model.
    dataset_id = await publish_dataset(settings, catalog, people["producer"], records, "mixed")
    view = await jobs.submit(people["alice"], algorithm.listing_id, "training", dataset_listing_id=dataset_id)
    final = await outcome(jobs, people["alice"], view.id)
    assert final.status == JobStatus.FAILED
    assert "training example 21 input does not match the listing's input schema" in final.error
    # The requester reads the API's error code, as everywhere else, not the Python class ("BadInput: ...").
    assert final.error.endswith("[BAD_INPUT]") and not final.error.startswith("BadInput")
    assert final.result is None


async def test_a_listing_without_a_train_entrypoint_is_refused_at_submission(
    jobs, catalog, people, settings
) -> None:
    """Training a model that declares no train entrypoint was queued, took a worker and a copy of the
    package, then failed there; the version says so at submission already."""
    model = await publish_model(settings, catalog, people["producer"], ALGORITHM, name="ready-model")
    with pytest.raises(BadInput, match="'ready-model' cannot be trained: it declares no train entrypoint"):
        await jobs.submit(people["alice"], model.listing_id, "training", records=EXAMPLES)
    async with catalog.db.session() as session:
        assert (await session.scalars(select(Job.id))).all() == []


async def test_a_model_trained_from_another_producers_algorithm_stays_private_unless_allowed(
    jobs, catalog, people, settings
) -> None:
    """A trained model is the algorithm's code plus weights: making it public or sharing it would hand
    the algorithm's code on. Its producer decides (manifest ``trained_models``, private by default);
    training one's own algorithm is never limited."""

    async def trained_by(trainer: str, algorithm_id: str) -> str:
        view = await jobs.submit(people[trainer], algorithm_id, "training", records=EXAMPLES)
        final = await outcome(jobs, people[trainer], view.id)
        assert final.status == JobStatus.SUCCEEDED, final.error
        return final.result["trained_listing_id"]

    guarded = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True, name="word-vote"
    )
    open_one = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True,
        name="open-vote", manifest={"trained_models": "shareable"},
    )  # fmt: skip
    alices = await trained_by("alice", guarded.listing_id)
    for change in ({"visibility": "public"}, {"visibility": "shared", "shared_with": ["bob"]}):
        with pytest.raises(Forbidden, match="trained from another producer's algorithm") as refused:
            await catalog.listings.update(people["alice"], alices, change)
        assert refused.value.details["field"] == "visibility"
    # An edit that gives it a new version carries the producer's decision on.
    await catalog.listings.update(people["alice"], alices, {"version": "1.1.0", "description": "mine"})
    with pytest.raises(Forbidden):
        await catalog.listings.update(people["alice"], alices, {"visibility": "public"})
    assert (await catalog.listings.get(people["alice"], alices)).visibility == "private"

    allowed = await trained_by("alice", open_one.listing_id)
    assert (
        await catalog.listings.update(people["alice"], allowed, {"visibility": "public"})
    ).visibility == "public"
    own = await trained_by("producer", guarded.listing_id)
    assert (
        await catalog.listings.update(people["producer"], own, {"visibility": "public"})
    ).visibility == "public"


async def test_a_training_job_does_not_hold_its_dataset_in_memory(jobs, catalog, people, settings) -> None:
    """A training job loaded its whole dataset (up to 256 MiB) into the worker's memory and kept it there
    until the job ended; it now streams it into train.jsonl and holds only the held-out examples (5 of
    25 here, ~1 MiB each, which are also encoded for the model that scores them). Python allocations
    while the job ran peaked at 35 MiB for this 24 MiB dataset before, 16 MiB now."""
    algorithm = await publish_model(
        settings, catalog, people["producer"], ALGORITHM, kind="algorithm", trainable=True, name="word-vote"
    )
    words = {"positive": "great lovely", "negative": "awful dull"}
    examples = [
        {"input": f"{words[label]} {i} " + "film " * 200_000, "target": label}
        for i, label in enumerate(["positive", "negative"] * 12 + ["positive"])
    ]  # ~1 MiB each
    dataset_id = await publish_dataset(settings, catalog, people["producer"], examples, "long-reviews")
    size = sum(len(json.dumps(x)) for x in examples)
    del examples
    # A first training loads what any does once (the search encoder indexing the model listing, ...).
    warm = await jobs.submit(people["alice"], algorithm.listing_id, "training", records=EXAMPLES)
    assert (await outcome(jobs, people["alice"], warm.id)).status == JobStatus.SUCCEEDED
    view = await jobs.submit(people["alice"], algorithm.listing_id, "training", dataset_listing_id=dataset_id)
    tracemalloc.start()
    try:
        final = await outcome(jobs, people["alice"], view.id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert (final.result["train_examples"], final.result["holdout"]) == (20, 5)
    assert peak < size * 0.9, f"peak {peak >> 20} MiB for a {size >> 20} MiB dataset"
