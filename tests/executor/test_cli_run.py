"""``mlrepo run`` as a user runs it: a subprocess on a SQLite data dir, the job in-process under bwrap."""

from __future__ import annotations

import json

from executor_support import publish_model

from api.commands.jobs import print_job
from catalog.actors import Actor
from catalog.app import CatalogApp
from executor.job_outputs import write_outputs
from infra.artifacts import ArtifactStore
from infra.settings import Settings
from tests.services import run_mlrepo

MODEL = """
import json, sys
for line in sys.stdin:
    record = json.loads(line)
    label = "positive" if "good" in record["input"] else "negative"
    print(json.dumps({"id": record["id"], "output": {"label": label}}))
"""


async def mlrepo(settings: Settings, *args: str) -> tuple[int, str, str]:
    return await run_mlrepo(settings.data_dir, *args)


async def test_mlrepo_run_prints_the_finished_job(sqlite_settings: Settings, bwrap_runtime, tmp_path) -> None:
    async with await CatalogApp.open(sqlite_settings, with_index=False) as catalog:
        producer = await catalog.accounts.create("producer", "producer")
        alice = await catalog.accounts.create("alice", "requester")
        token = (await catalog.accounts.create_token(alice.id)).secret
        published = await publish_model(sqlite_settings, catalog, Actor(producer.id, "producer"), MODEL)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('"good film"\n"dull"\n')

    code, out, err = await mlrepo(
        sqlite_settings,
        "run",
        published.listing_id,
        "--input",
        str(inputs),
        "--record",
        "so good",
        "--token",
        token,
    )
    assert code == 0, (code, out, err)
    job = json.loads(out)
    assert job["status"] == "succeeded"
    assert [r["output"]["label"] for r in job["outputs"]] == ["positive", "negative", "positive"]

    code, _, err = await mlrepo(
        sqlite_settings, "run", published.listing_id, "--record", "x", "--token", "wrong"
    )
    assert code == 2 and "UNAUTHENTICATED" in err

    code, _, err = await mlrepo(
        sqlite_settings, "run", published.listing_id, "--record", "x", "--gpu", "1", "--token", token
    )
    assert code == 2 and "resources.gpu=1 exceeds your quota of 0" in err
    code, out, err = await mlrepo(
        sqlite_settings, "run", published.listing_id, "--record", "good", "--gpu", "0", "--token", token
    )
    assert code == 0 and json.loads(out)["resources"]["gpu"] == 0, err


async def test_an_input_file_that_is_not_utf8_is_a_clear_error(sqlite_settings: Settings, tmp_path) -> None:
    """A binary file given as --input used to end the command with a UnicodeDecodeError traceback."""
    async with await CatalogApp.open(sqlite_settings, with_index=False) as catalog:
        alice = await catalog.accounts.create("alice", "requester")
        token = (await catalog.accounts.create_token(alice.id)).secret
    inputs = tmp_path / "in.jsonl"
    inputs.write_bytes(b'"good"\n\xff\xfe\x00\n')
    code, _, err = await mlrepo(
        sqlite_settings, "run", "any-listing", "--input", str(inputs), "--token", token
    )
    assert code == 2 and "Traceback" not in err, err
    assert "not UTF-8" in err and "BAD_INPUT" in err


def test_the_printed_job_streams_its_outputs_from_the_stored_file(tmp_path, capsys) -> None:
    """``mlrepo run`` read every output into one list before printing; it writes them one by one now."""
    store = ArtifactStore(tmp_path / "artifacts")
    records = [{"output": {"n": i, "text": "é"}} for i in range(3000)] + [{"error": "no"}]
    stored = write_outputs(store, tmp_path / "staging", records)
    job = {"id": "j1", "status": "succeeded", "outputs_digest": stored.digest, "outputs_count": stored.count}
    print_job(job, store)
    assert json.loads(capsys.readouterr().out) == {**job, "outputs": records}
    cancelled = {"id": "j2", "status": "cancelled", "outputs_digest": None, "outputs_count": None}
    print_job(cancelled, store)
    assert json.loads(capsys.readouterr().out) == {**cancelled, "outputs": []}


async def test_what_to_run_and_the_token_are_asked_for_in_the_commands_own_terms(
    sqlite_settings: Settings,
) -> None:
    """Without --token the command said "an API token is required", and without a listing "give either
    a listingId or a pipelineId" (GraphQL's names): neither said which option to give."""
    code, _, err = await mlrepo(sqlite_settings, "run", "any-listing", "--record", "x")
    assert code == 2 and "--token" in err and "MLREPO_TOKEN" in err, err
    code, _, err = await mlrepo(sqlite_settings, "run", "--record", "x", "--token", "t")
    assert code == 2 and "LISTING_ID or --pipeline" in err, err
    code, _, err = await mlrepo(sqlite_settings, "run", "a-listing", "--pipeline", "p", "--token", "t")
    assert code == 2 and "LISTING_ID or --pipeline" in err, err
