"""Jobs through the API under a real uvicorn: ``Mutation.runJob``, ``Subscription.jobStatus`` over a real
websocket client speaking graphql-transport-ws, ``Query.job`` (owner only) and ``Mutation.cancelJob``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from executor_support import publish_model
from starlette.applications import Starlette
from websockets.asyncio.client import connect

from api.app import create_app
from catalog.actors import Actor
from catalog.artifact_gc import collect_garbage
from executor.job_outputs import write_outputs
from infra.artifacts import ArtifactStore
from infra.settings import Settings
from search.embeddings import Encoder
from tests.forged_cursors import old_style, position_in, with_position
from tests.job_rows import finished_job
from tests.services import serve_in_background

PROTOCOL = "graphql-transport-ws"
MODEL = """
import json, sys, time
for line in sys.stdin:
    record = json.loads(line)
    if record["input"] == "sleep":
        time.sleep(60)
    print(json.dumps({"id": record["id"], "output": {"label": "positive", "secret": "dropped"}}))
"""
RUN = """mutation Run($input: RunJobInput!) {
  runJob(input: $input) { id status resourceClass resources }
}"""
OUTPUTS = """query Outputs($id: ID!, $first: Int!, $after: String) {
  job(id: $id) { outputs(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { cursor node { index output error } } } }
}"""
WATCH = """subscription Watch($id: ID!) {
  jobStatus(id: $id) { id status error progress { batchesDone recordsDone recordsTotal } result outputsCount }
}"""


@pytest.fixture
async def server(
    settings: Settings, bwrap_runtime, encoder: Encoder
) -> AsyncIterator[tuple[str, Settings, Starlette]]:
    settings = settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})
    app = create_app(settings, migrate=False, encoder=encoder)
    async with serve_in_background(app) as address:
        yield address, settings, app


async def people(app) -> dict[str, tuple[Actor, str]]:
    accounts = app.state.services.catalog.accounts
    out = {}
    for name, role in (("producer", "producer"), ("alice", "requester"), ("bob", "requester")):
        info = await accounts.create(name, role)
        out[name] = (
            Actor(account_id=info.id, role=role, name=name),
            (await accounts.create_token(info.id)).secret,
        )
    return out


async def gql(address: str, query: str, variables: dict, token: str) -> dict:
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        response = await http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    return response.json()


async def subscribe(address: str, token: str, job_id: str, on_message=None) -> list[dict]:
    """Every ``next`` payload of a jobStatus subscription until the server completes it."""
    messages = []
    async with connect(f"ws://{address}/graphql", subprotocols=[PROTOCOL]) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
        await ws.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": WATCH, "variables": {"id": job_id}}}
            )
        )
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "complete":
                return messages
            assert message["type"] == "next", message
            messages.append(message["payload"])
            if on_message is not None:
                await on_message(message["payload"])


async def test_run_job_and_watch_it_over_graphql_transport_ws(server) -> None:
    address, settings, app = server
    who = await people(app)
    published = await publish_model(settings, app.state.services.catalog, who["producer"][0], MODEL)
    body = await gql(
        address, RUN, {"input": {"listingId": published.listing_id, "records": ["a", "b"]}}, who["alice"][1]
    )
    assert not body.get("errors"), body
    job = body["data"]["runJob"]
    assert job["status"] == "QUEUED" and job["resourceClass"] == "cpu"

    messages = await subscribe(address, who["alice"][1], job["id"])
    statuses = [m["data"]["jobStatus"]["status"] for m in messages]
    assert statuses[-1] == "SUCCEEDED" and "RUNNING" in statuses
    final = messages[-1]["data"]["jobStatus"]
    assert final["progress"]["recordsDone"] == final["progress"]["recordsTotal"] == 2
    assert final["result"] == {"succeeded": 2, "failed": 0} and final["outputsCount"] == 2
    outputs = await gql(address, OUTPUTS, {"id": job["id"], "first": 10}, who["alice"][1])
    edges = outputs["data"]["job"]["outputs"]["edges"]
    assert [e["node"]["output"] for e in edges] == [{"label": "positive"}] * 2  # "secret" dropped
    # Paged: one output a page, the second page from the first's endCursor.
    first = (await gql(address, OUTPUTS, {"id": job["id"], "first": 1}, who["alice"][1]))["data"]["job"]
    page = first["outputs"]
    assert page["totalCount"] == 2 and page["pageInfo"]["hasNextPage"] and len(page["edges"]) == 1
    after = page["pageInfo"]["endCursor"]
    assert page["edges"][0]["cursor"] == after
    rest = await gql(address, OUTPUTS, {"id": job["id"], "first": 1, "after": after}, who["alice"][1])
    page = rest["data"]["job"]["outputs"]
    assert [e["node"]["index"] for e in page["edges"]] == [1] and not page["pageInfo"]["hasNextPage"]
    forged = await gql(address, OUTPUTS, {"id": job["id"], "first": 1, "after": "nonsense"}, who["alice"][1])
    assert forged["errors"][0]["extensions"]["code"] == "BAD_INPUT"
    # The second record's byte offset with index 0 numbered that record 0 (and every later one off by
    # one): cursors are signed now, so such a position, old-style or with a kept signature, is refused.
    (index, offset) = position_in(after)
    assert index == 1 and offset > 0
    for mislabelled in (old_style([0, offset]), with_position(after, [0, offset])):
        variables = {"id": job["id"], "first": 1, "after": mislabelled}
        body = await gql(address, OUTPUTS, variables, who["alice"][1])
        assert body["errors"][0]["extensions"]["code"] == "BAD_INPUT", body
        assert "after" in body["errors"][0]["message"] and body["data"] is None

    other = await gql(address, "query($id: ID!) { job(id: $id) { id } }", {"id": job["id"]}, who["bob"][1])
    assert other["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    foreign = await subscribe(address, who["bob"][1], job["id"])
    assert foreign[0]["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_cancel_job_while_watching(server) -> None:
    address, settings, app = server
    who = await people(app)
    published = await publish_model(
        settings, app.state.services.catalog, who["producer"][0], MODEL, timeout_s=60
    )
    body = await gql(
        address, RUN, {"input": {"listingId": published.listing_id, "records": ["sleep"]}}, who["alice"][1]
    )
    job_id = body["data"]["runJob"]["id"]

    async def cancel_when_running(payload: dict) -> None:
        if payload["data"]["jobStatus"]["status"] == "RUNNING":
            cancel = "mutation($id: ID!) { cancelJob(id: $id) { status } }"
            result = await gql(address, cancel, {"id": job_id}, who["alice"][1])
            assert result["data"]["cancelJob"]["status"] == "CANCELLED"

    messages = await subscribe(address, who["alice"][1], job_id, cancel_when_running)
    final = messages[-1]["data"]["jobStatus"]
    assert final["status"] == "CANCELLED" and final["error"] == "cancelled by the requester"


async def test_a_job_past_its_deadline_says_so_with_an_error_code(
    settings: Settings, bwrap_runtime, encoder: Encoder
) -> None:
    """``Job.errorCode`` tells a job the service stopped at MLREPO_JOB_MAX_DURATION_S from one whose calls
    timed out (both TIMED_OUT), without parsing ``error``."""
    settings = settings.model_copy(
        update={"runtime": "bwrap", "job_heartbeat_s": 0.2, "job_max_duration_s": 2.0}
    )
    app = create_app(settings, migrate=False, encoder=encoder)
    async with serve_in_background(app) as address:
        who = await people(app)
        catalog = app.state.services.catalog
        published = await publish_model(settings, catalog, who["producer"][0], MODEL, timeout_s=60)
        run = {"input": {"listingId": published.listing_id, "records": ["sleep"]}}
        job_id = (await gql(address, RUN, run, who["alice"][1]))["data"]["runJob"]["id"]
        messages = await subscribe(address, who["alice"][1], job_id)
        assert messages[-1]["data"]["jobStatus"]["status"] == "TIMED_OUT"
        query = "query($id: ID!) { job(id: $id) { status error errorCode outputsCount } }"
        job = (await gql(address, query, {"id": job_id}, who["alice"][1]))["data"]["job"]
    assert job["status"] == "TIMED_OUT" and job["errorCode"] == "JOB_DEADLINE_EXCEEDED"
    assert "deadline of 2 s" in job["error"] and job["outputsCount"] == 0


async def test_run_job_errors_carry_codes(server) -> None:
    address, settings, app = server
    who = await people(app)
    published = await publish_model(settings, app.state.services.catalog, who["producer"][0], MODEL)
    over = {"input": {"listingId": published.listing_id, "records": ["a"], "resources": {"cpu": 64}}}
    body = await gql(address, RUN, over, who["alice"][1])
    assert body["errors"][0]["extensions"]["code"] == "BAD_INPUT"
    assert "exceeds your quota" in body["errors"][0]["message"]
    negative = {"input": {"listingId": published.listing_id, "records": ["a"], "resources": {"memoryMb": -1}}}
    (error,) = (await gql(address, RUN, negative, who["alice"][1]))["errors"]
    assert error["extensions"] == {"code": "BAD_INPUT", "field": "resources.memoryMb"}
    assert error["message"].startswith("resources.memoryMb must be a non-negative number")
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        anonymous = await http.post(
            "/graphql", json={"query": RUN, "variables": {"input": {"listingId": "x"}}}
        )
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_run_job_on_an_uploaded_json_lines_file(server) -> None:
    address, settings, app = server
    who = await people(app)
    published = await publish_model(settings, app.state.services.catalog, who["producer"][0], MODEL)
    query = (
        "mutation($input: RunJobInput!, $file: Upload) { runJob(input: $input, file: $file) { id status } }"
    )
    operations = {"query": query, "variables": {"input": {"listingId": published.listing_id}, "file": None}}
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        response = await http.post(
            "/graphql",
            data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.file"]})},
            files={
                "0": (
                    "inputs.jsonl",
                    b'"one"\n{"input": "two", "target": "x"}\n"three"\n',
                    "application/x-ndjson",
                )
            },
            headers={"Authorization": f"Bearer {who['alice'][1]}"},
        )
        body = response.json()
        assert not body.get("errors"), body
        messages = await subscribe(address, who["alice"][1], body["data"]["runJob"]["id"])
        final = messages[-1]["data"]["jobStatus"]
        assert final["status"] == "SUCCEEDED" and final["progress"]["recordsTotal"] == 3

        broken = await http.post(
            "/graphql",
            data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.file"]})},
            files={"0": ("inputs.jsonl", b'"one"\nnot json\n', "application/x-ndjson")},
            headers={"Authorization": f"Bearer {who['alice'][1]}"},
        )
    error = broken.json()["errors"][0]
    assert error["extensions"]["code"] == "BAD_INPUT" and "line 2 is not JSON" in error["message"]


async def test_records_that_are_not_a_list_are_refused_with_a_file_too(server) -> None:
    """With a file, inline records used to be spread into the list: an object's keys (or a string's
    characters) silently became records to score."""
    address, settings, app = server
    who = await people(app)
    published = await publish_model(settings, app.state.services.catalog, who["producer"][0], MODEL)
    query = (
        "mutation($input: RunJobInput!, $file: Upload) { runJob(input: $input, file: $file) { id status } }"
    )
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        for records in ({"text": "good"}, "good"):
            variables = {"input": {"listingId": published.listing_id, "records": records}, "file": None}
            response = await http.post(
                "/graphql",
                data={
                    "operations": json.dumps({"query": query, "variables": variables}),
                    "map": json.dumps({"0": ["variables.file"]}),
                },
                files={"0": ("inputs.jsonl", b'"one"\n', "application/x-ndjson")},
                headers={"Authorization": f"Bearer {who['alice'][1]}"},
            )
            error = response.json()["errors"][0]
            assert error["extensions"]["code"] == "BAD_INPUT" and "records" in error["message"]


CRASHING = "raise SystemExit('model weights missing')\n"


async def run_to_the_end(address: str, who: tuple[Actor, str], listing_id: str) -> str:
    """``runJob`` for one record, then wait (over ``jobStatus``) until the job is final; its id."""
    body = await gql(address, RUN, {"input": {"listingId": listing_id, "records": ["a"]}}, who[1])
    assert not body.get("errors"), body
    job_id = body["data"]["runJob"]["id"]
    final = (await subscribe(address, who[1], job_id))[-1]["data"]["jobStatus"]
    assert final["status"] in {"SUCCEEDED", "FAILED"}, final
    return job_id


MY_JOBS = """query($first: Int!, $after: String, $status: [JobStatus!], $listingId: ID) {
  myJobs(first: $first, after: $after, status: $status, listingId: $listingId) {
    edges { cursor node { id status listingId } } pageInfo { hasNextPage endCursor } } }"""


async def test_my_jobs_lists_ones_own_jobs_newest_first_in_pages(server) -> None:
    """A requester who lost a job's id could not find the job again: ``job(id)`` was the only way in."""
    address, settings, app = server
    who = await people(app)
    catalog = app.state.services.catalog
    first_model = await publish_model(settings, catalog, who["producer"][0], MODEL)
    broken_model = await publish_model(settings, catalog, who["producer"][0], CRASHING, name="broken-model")
    # Submitted with runJob and run to the end by this API process (no Redis: in-process, in bwrap), so
    # the list shows jobs as they really end up, statuses included.
    bobs_job = await run_to_the_end(address, who["bob"], first_model.listing_id)
    ids = [
        await run_to_the_end(address, who["alice"], listing_id)
        for listing_id in (first_model.listing_id, broken_model.listing_id, broken_model.listing_id)
    ]

    async def page(token: str, **variables) -> dict:
        body = await gql(address, MY_JOBS, {"first": 2, **variables}, token)
        assert not body.get("errors"), body
        return body["data"]["myJobs"]

    first = await page(who["alice"][1])
    assert [e["node"]["id"] for e in first["edges"]] == [ids[2], ids[1]]
    assert first["pageInfo"]["hasNextPage"] and first["pageInfo"]["endCursor"] == first["edges"][-1]["cursor"]
    rest = await page(who["alice"][1], after=first["pageInfo"]["endCursor"])
    assert [e["node"]["id"] for e in rest["edges"]] == [ids[0]]
    assert rest["pageInfo"] == {"hasNextPage": False, "endCursor": None}

    done = await page(who["alice"][1], status=["SUCCEEDED"], listingId=first_model.listing_id)
    assert [(e["node"]["id"], e["node"]["status"]) for e in done["edges"]] == [(ids[0], "SUCCEEDED")]
    failed = await page(who["alice"][1], status=["FAILED", "CANCELLED"])
    assert [(e["node"]["id"], e["node"]["status"]) for e in failed["edges"]] == [
        (ids[2], "FAILED"),
        (ids[1], "FAILED"),
    ]
    assert (await page(who["alice"][1], status=["QUEUED", "RUNNING"]))["edges"] == []
    bobs = await page(who["bob"][1])
    assert [e["node"]["id"] for e in bobs["edges"]] == [bobs_job]

    # A changed position (here: newer than every job, so page one again) or a listings cursor is refused.
    end = first["pageInfo"]["endCursor"]
    listings = await gql(address, "{ listings(first: 1) { pageInfo { endCursor } } }", {}, who["alice"][1])
    for variables, code in (
        ({"first": 0}, "BAD_INPUT"),
        ({"first": 2, "after": "not-a-cursor"}, "BAD_INPUT"),
        ({"first": 2, "after": old_style(position_in(end))}, "BAD_INPUT"),
        ({"first": 2, "after": with_position(end, ["2999-01-01T00:00:00+00:00", "z"])}, "BAD_INPUT"),
        ({"first": 2, "after": listings["data"]["listings"]["pageInfo"]["endCursor"]}, "BAD_INPUT"),
    ):
        body = await gql(address, MY_JOBS, variables, who["alice"][1])
        assert body["errors"][0]["extensions"]["code"] == code, body
    # Another account's cursor is refused (README: bad cursors include another account's): it was taken
    # as a position in bob's own list, a page of his jobs picked by a time he never saw.
    body = await gql(address, MY_JOBS, {"first": 2, "after": end}, who["bob"][1])
    assert body["errors"][0]["extensions"] == {"code": "BAD_INPUT", "field": "after"}, body
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        anonymous = (await http.post("/graphql", json={"query": MY_JOBS, "variables": {"first": 2}})).json()
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_outputs_past_their_retention_answer_gone(server, tmp_path) -> None:
    """A finished job's outputs were kept forever; once the garbage collection drops them (retention),
    ``outputs`` says GONE (not NOT_FOUND, nor an empty page) and the job keeps its summary and metrics."""
    address, settings, app = server
    who = await people(app)
    catalog = app.state.services.catalog
    outputs = write_outputs(ArtifactStore.from_settings(settings), tmp_path, [{"output": {"label": "x"}}])
    job = finished_job(who["alice"][0].account_id, outputs.digest, settings.job_output_retention_days + 1)
    async with catalog.db.session() as session:
        session.add(job)
    assert (await gql(address, OUTPUTS, {"id": job.id, "first": 5}, who["alice"][1]))["data"]["job"][
        "outputs"
    ]["totalCount"] == 1

    assert (await collect_garbage(settings, catalog.db, delete=True)).expired_outputs == 1
    (error,) = (await gql(address, OUTPUTS, {"id": job.id, "first": 5}, who["alice"][1]))["errors"]
    assert error["extensions"] == {"code": "GONE", "field": "outputs"}
    assert "were dropped" in error["message"] and "run it again" in error["message"]
    query = "query J($id: ID!) { job(id: $id) { status result metrics outputsCount outputsExpiredAt } }"
    body = await gql(address, query, {"id": job.id}, who["alice"][1])
    kept = body["data"]["job"]
    assert (kept["status"], kept["result"], kept["metrics"], kept["outputsCount"]) == (
        "SUCCEEDED",
        {"succeeded": 1, "failed": 0},
        {"records": 1},
        1,
    )
    assert kept["outputsExpiredAt"] is not None
    # Others still get NOT_FOUND: an expired job's existence is not leaked either.
    other = await gql(address, OUTPUTS, {"id": job.id, "first": 5}, who["bob"][1])
    assert other["errors"][0]["extensions"]["code"] == "NOT_FOUND"
