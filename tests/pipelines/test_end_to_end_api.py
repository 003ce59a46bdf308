"""Issue 5, done when: through GraphQL a requester builds image → detector → (boxes to crops) → classifier
from published listings, the service inserts the conditioning step itself, the pipeline trains its
algorithm step and then runs end to end through ``runJob``, and the result shows per-step metrics.

Everything real: the ASGI app with its lifespan, packages published through the publishing workflow,
bubblewrap sandboxes for training and every stage, jobs in-process (the API process runs them without
Redis). ``test_pipeline_worker_cli`` runs the same chain through arq and through ``mlrepo run``.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from api.app import create_app
from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing.service import PublishingService
from executor.job_views import JobView
from executor.jobs import JobService
from executor.publish_sandbox import ExecutorSandbox
from executor.runtimes import BwrapRuntime
from infra.settings import Settings
from tests.services import require_service

from .demo_chain import (
    LAMP_AND_SIGN,
    LAMP_AND_SIGN_PREDICTED,
    PACKAGES,
    PARTS,
    TRAINING_DATA,
    build_trainable_chain,
    gray,
    publish_crops,
    publish_parts,
    published,
)


class Client:
    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http, self.token = http, token

    async def body(self, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def data(self, query: str, **variables: Any) -> dict[str, Any]:
        body = await self.body(query, **variables)
        assert not body.get("errors"), body["errors"]
        return body["data"]


PIPELINE_FIELDS = "id isRunnable isTrained steps { id role listingName kind runnable trainedListingId }"
JOB_FIELDS = (
    "id pipelineId status error result metrics progress { details } "
    "outputs { totalCount edges { node { output } } }"
)


@pytest.fixture
def bwrap_settings(settings: Settings) -> Settings:
    require_service("bubblewrap", BwrapRuntime.available(), "bwrap/prlimit/setpriv not installed")
    require_service("bubblewrap", os.geteuid() == 0, "starting sandboxes as other uids needs root")
    return settings.model_copy(update={"runtime": "bwrap", "job_heartbeat_s": 0.2})


@pytest.fixture
async def served(bwrap_settings: Settings, encoder) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(bwrap_settings, migrate=False, encoder=encoder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mlrepo.test") as http:
            yield http, app.state.services


@dataclass
class World:
    """The running API, a producer whose demo parts are published, and a requester's GraphQL client."""

    services: Any
    client: Client
    producer: Actor
    requester: Actor
    ids: dict[str, str]

    @property
    def catalog(self) -> CatalogApp:
        return self.services.catalog

    @property
    def jobs(self) -> JobService:
        return self.services.extras["jobs"]


@pytest.fixture
async def world(served: tuple[httpx.AsyncClient, Any]) -> World:
    http, services = served
    accounts = services.catalog.accounts
    producer = (await accounts.create("producer", "producer")).as_actor()
    account = await accounts.create("requester", "requester")
    client = Client(http, (await accounts.create_token(account.id)).secret)
    ids = await publish_parts(services.catalog, producer)
    return World(services, client, producer, account.as_actor(), ids)


async def watch(jobs: JobService, actor: Actor, job_id: str) -> list[JobView]:
    """What ``Subscription.jobStatus`` streams for the job, until it is final."""
    return [view async for view in jobs.watch(actor, job_id)]


async def build_and_train(client: Client, ids: dict[str, str]) -> str:
    """Build the chain through the API, train it, and return the post-training pipeline's id."""
    created = await client.data('mutation { createPipeline(name: "street scenes") { id } }')
    pipeline_id = created["createPipeline"]["id"]
    add = (
        "mutation($p: ID!, $l: ID!, $d: ID) { addPipelineStep(pipelineId: $p, listingId: $l, "
        "trainingDataListingId: $d) { insertedConditioningStepIds pipeline { " + PIPELINE_FIELDS + " } } }"
    )
    await client.data(add, p=pipeline_id, l=ids["detector"])
    change = (await client.data(add, p=pipeline_id, l=ids["trainable_classifier"], d=ids["dataset"]))[
        "addPipelineStep"
    ]
    steps = change["pipeline"]["steps"]
    assert [(s["role"], s["listingName"]) for s in steps] == [
        ("STEP", "street-object-detector"),
        ("CONDITIONING", "boxes-to-crops"),
        ("STEP", "brightness-classifier"),
    ]
    assert change["insertedConditioningStepIds"] == [steps[1]["id"]]  # the service inserted it itself
    assert not change["pipeline"]["isRunnable"] and not steps[2]["runnable"]

    run = "mutation($p: ID!) { runJob(input: {pipelineId: $p, records: [1]}) { id } }"
    refused = await client.body(run, p=pipeline_id)
    assert refused["errors"][0]["extensions"]["code"] == "BAD_INPUT"
    assert "must be trained first" in refused["errors"][0]["message"]
    return pipeline_id


async def test_build_train_and_run_a_pipeline_through_the_api(world: World) -> None:
    catalog, client, jobs, requester, ids = (
        world.catalog,
        world.client,
        world.jobs,
        world.requester,
        world.ids,
    )
    pipeline_id = await build_and_train(client, ids)

    # Training is a job: the algorithm step trains on its chosen data, the post-training pipeline follows.
    train = "mutation($p: ID!) { trainPipeline(pipelineId: $p) { " + JOB_FIELDS + " } }"
    queued = (await client.data(train, p=pipeline_id))["trainPipeline"]
    assert queued["pipelineId"] == pipeline_id and queued["status"] in ("QUEUED", "RUNNING")
    seen = await watch(jobs, requester, queued["id"])
    trained_job = seen[-1]
    assert trained_job.status == "succeeded", trained_job.error
    assert any(v.progress.get("state") == "training" for v in seen) or trained_job.progress["stage"] == 1
    (step,) = trained_job.result["trained_steps"]
    assert step["algorithm"] == "brightness-classifier" and step["accuracy"] == 1.0
    post_id = trained_job.result["post_training_pipeline_id"]
    query = "query($p: ID!) { pipeline(id: $p) { " + PIPELINE_FIELDS + " } }"
    post = (await client.data(query, p=post_id))["pipeline"]
    assert post["isRunnable"] and post["isTrained"]
    assert all(s["runnable"] and s["kind"] == "model" for s in post["steps"])
    trained_model = post["steps"][2]["listingName"]
    assert trained_model.startswith("brightness-classifier-trained-")
    step_job = (await client.data("query($j: ID!) { job(id: $j) { status result } }", j=step["job_id"]))[
        "job"
    ]
    assert (
        step_job["status"] == "SUCCEEDED"
        and step_job["result"]["trained_listing_id"] == step["model_listing_id"]
    )

    # The post-training pipeline runs end to end through runJob, stage by stage.
    run = (
        "mutation($p: ID!, $r: JSON) { runJob(input: {pipelineId: $p, records: $r}) { " + JOB_FIELDS + " } }"
    )
    submitted = (await client.data(run, p=post_id, r=LAMP_AND_SIGN))["runJob"]
    seen = await watch(jobs, requester, submitted["id"])
    stages = [(v.progress.get("stage"), v.progress.get("state")) for v in seen if v.status == "running"]
    assert len({s for s in stages if s[1] is not None}) >= 2, stages  # progress streamed per stage
    job = (await client.data("query($j: ID!) { job(id: $j) { " + JOB_FIELDS + " } }", j=submitted["id"]))[
        "job"
    ]
    assert job["status"] == "SUCCEEDED", job["error"]
    assert [{"output": e["node"]["output"]} for e in job["outputs"]["edges"]] == LAMP_AND_SIGN_PREDICTED
    assert job["outputs"]["totalCount"] == len(LAMP_AND_SIGN_PREDICTED)
    per_step = job["metrics"]["steps"]
    assert [s["listing_name"] for s in per_step] == [
        "street-object-detector",
        "boxes-to-crops",
        trained_model,
    ]
    assert all(s["records_in"] == 2 and s["records_ok"] == 2 and s["duration_ms"] > 0 for s in per_step)
    assert job["progress"]["details"]["stage"] == 3 and job["progress"]["details"]["state"] == "done"
    # Per-step metrics reached each listing.
    for listing_id in (ids["detector"], ids["cropper"]):
        listing = await catalog.listings.get(requester, listing_id)
        assert listing.usage_count >= 1

    # Published as a listing of kind PIPELINE (its trained step is private, so is the listing), it runs
    # through runJob(listingId) like any listing, with the latency measured from the run above.
    publish = """mutation($p: ID!) {
      publishPipeline(pipelineId: $p, visibility: PRIVATE) { id kind latencyP50Ms } }"""
    listed = (await client.data(publish, p=post_id))["publishPipeline"]
    assert listed["kind"] == "PIPELINE" and listed["latencyP50Ms"] is not None
    by_listing = "mutation($l: ID!, $r: JSON) { runJob(input: {listingId: $l, records: $r}) { id } }"
    job_id = (await client.data(by_listing, l=listed["id"], r=LAMP_AND_SIGN))["runJob"]["id"]
    final = (await watch(jobs, requester, job_id))[-1]
    assert final.status == "succeeded" and await jobs.all_outputs(final) == LAMP_AND_SIGN_PREDICTED
    assert (final.listing_id, final.pipeline_id) == (listed["id"], post_id)


async def test_a_failing_step_fails_the_pipeline_job_naming_it(world: World) -> None:
    catalog, client, producer, ids = world.catalog, world.client, world.producer, world.ids
    # The untrained algorithm published as a model stands in for a step that errs on every record.
    publishing = PublishingService(
        catalog.settings, catalog.db, catalog.listings, ExecutorSandbox(catalog.settings)
    )
    upload = io.BytesIO()
    with zipfile.ZipFile(upload, "w") as zf:
        zf.writestr("model.py", (PACKAGES / "trainable_classifier" / "model.py").read_text())
        data = {**PARTS["trainable_classifier"], "kind": "model", "name": "never-trained"}
        zf.writestr("mlrepo.json", json.dumps({k: v for k, v in data.items() if "train" not in k}))
    upload.seek(0)
    broken_id = await published(publishing, producer, await publishing.submit_package(producer, upload))

    pipeline_id = (await client.data('mutation { createPipeline(name: "broken") { id } }'))["createPipeline"][
        "id"
    ]
    for listing_id in (ids["detector"], broken_id):
        await client.data(
            "mutation($p: ID!, $l: ID!) { addPipelineStep(pipelineId: $p, listingId: $l) { stepId } }",
            p=pipeline_id,
            l=listing_id,
        )
    run = "mutation($p: ID!, $r: JSON) { runJob(input: {pipelineId: $p, records: $r}) { id } }"
    job_id = (await client.data(run, p=pipeline_id, r=[gray(3, 3, {(1, 1)})]))["runJob"]["id"]
    final = (await watch(world.jobs, world.requester, job_id))[-1]
    assert final.status == "failed"
    assert "step 3 'never-trained' failed for every record" in final.error
    assert "must be trained first" in final.error
    assert final.result is None  # nothing partial is shown as a result
    assert [s["listing_name"] for s in final.metrics["steps"]] == [
        "street-object-detector",
        "boxes-to-crops",
        "never-trained",
    ]


async def test_a_step_that_fails_to_train_fails_the_training_job_naming_it(world: World) -> None:
    catalog, client, producer, ids = world.catalog, world.client, world.producer, world.ids
    only_lamps = await publish_crops(catalog, producer, "lamps-only", TRAINING_DATA[:3])  # no sign to learn
    pipeline_id = await build_trainable_chain(
        catalog.pipelines, world.requester, {**ids, "dataset": only_lamps}
    )

    train = "mutation($p: ID!) { trainPipeline(pipelineId: $p) { id } }"
    job_id = (await client.data(train, p=pipeline_id))["trainPipeline"]["id"]
    final = (await watch(world.jobs, world.requester, job_id))[-1]
    assert final.status == "failed" and final.result is None
    assert "step 3 'brightness-classifier' did not train" in final.error and "training failed" in final.error
    pipeline = (await client.data("query($p: ID!) { pipeline(id: $p) { isTrained } }", p=pipeline_id))[
        "pipeline"
    ]
    assert pipeline == {"isTrained": False}
    no_steps = await client.body(
        "mutation($p: ID!) { trainPipeline(pipelineId: $p) { id } }",
        p=(await client.data('mutation { createPipeline(name: "empty") { id } }'))["createPipeline"]["id"],
    )
    assert no_steps["errors"][0]["extensions"]["code"] == "BAD_INPUT"
