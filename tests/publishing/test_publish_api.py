"""Publishing through the real ASGI app: GraphQL multipart uploads, Query.publication, error codes."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from notebook_support import word_stats_manifest, word_stats_notebook
from publishing_support import package_files, sentiment_manifest, zip_bytes

from api.app import create_app
from infra.settings import Settings
from search.embeddings import Encoder

PUBLISH = """
mutation($file: Upload!, $requirements: PublishRequirementsInput) {
  publishPackage(file: $file, requirements: $requirements) { id status steps { name status } }
}"""
PUBLICATION = """
query($id: ID!) {
  publication(id: $id) {
    id status listingId version artifactDigest error
    steps { name status durationMs log error errorCode }
  }
}"""
SEARCH = "query($t: String!) { search(input: {text: $t}) { results { listing { id verificationStatus } } } }"


class Client:
    def __init__(self, http: httpx.AsyncClient, app: Any) -> None:
        self.http = http
        self.app = app

    async def token(self, name: str, role: str = "producer") -> str:
        accounts = self.app.state.services.catalog.accounts
        info = await accounts.create(name, role)
        return (await accounts.create_token(info.id)).secret

    async def upload(self, query: str, variables: dict[str, Any], payload: bytes, token: str | None) -> dict:
        operations = json.dumps({"query": query, "variables": {**variables, "file": None}})
        response = await self.http.post(
            "/graphql",
            data={"operations": operations, "map": json.dumps({"0": ["variables.file"]})},
            files={"0": ("package.zip", payload, "application/zip")},
            headers={"Authorization": f"Bearer {token}"} if token else {},
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def query(self, query: str, variables: dict[str, Any], token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def client(settings: Settings, encoder: Encoder, bwrap_ok: bool) -> AsyncIterator[Client]:
    app = create_app(settings.model_copy(update={"runtime": "bwrap"}), migrate=False, encoder=encoder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mlrepo.test") as http:
            yield Client(http, app)


async def wait_until_done(client: Client, publication_id: str, token: str) -> dict:
    for _ in range(600):
        body = await client.query(PUBLICATION, {"id": publication_id}, token)
        publication = body["data"]["publication"]
        if publication["status"] in ("PUBLISHED", "FAILED"):
            return publication
        await asyncio.sleep(0.05)
    raise AssertionError(f"publication {publication_id} did not finish")


async def test_upload_publish_and_find_through_graphql(client: Client) -> None:
    token = await client.token("alice")
    body = await client.upload(
        PUBLISH,
        {"requirements": {"timeoutS": 3, "encrypt": True}},
        zip_bytes(package_files(sentiment_manifest())),
        token,
    )
    assert not body.get("errors"), body
    started = body["data"]["publishPackage"]
    assert [s["name"] for s in started["steps"]] == ["package", "test", "verify", "publish", "list"]
    done = await wait_until_done(client, started["id"], token)
    assert done["status"] == "PUBLISHED", done
    assert all(s["status"] == "SUCCEEDED" and s["durationMs"] is not None for s in done["steps"])
    found = await client.query(SEARCH, {"t": "sentiment of english reviews"})
    hits = {r["listing"]["id"]: r["listing"] for r in found["data"]["search"]["results"]}
    assert hits[done["listingId"]]["verificationStatus"] == "VERIFIED"


async def test_errors_carry_codes(client: Client) -> None:
    manifest = sentiment_manifest()
    del manifest["entrypoint"]
    anonymous = await client.upload(PUBLISH, {}, zip_bytes(package_files(manifest)), None)
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    requester = await client.token("bob", "requester")
    refused = await client.upload(PUBLISH, {}, zip_bytes(package_files(manifest)), requester)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    token = await client.token("alice")
    body = await client.upload(PUBLISH, {}, zip_bytes(package_files(manifest)), token)
    done = await wait_until_done(client, body["data"]["publishPackage"]["id"], token)
    assert done["status"] == "FAILED" and "entrypoint: required" in done["error"]
    package = done["steps"][0]
    assert package["status"] == "FAILED" and package["errorCode"] == "BAD_INPUT"

    other = await client.token("mallory")
    missing = await client.query(PUBLICATION, {"id": done["id"]}, other)
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_required_resources_override_only_the_values_given(client: Client) -> None:
    """Requirements replaced the manifest's whole resources: one value given (``memoryMb``) failed the
    publication on the others (sent as null), and through the CLI reset them to the defaults."""
    token = await client.token("alice")
    manifest = sentiment_manifest(resources={"cpu": 2, "memory_mb": 256, "gpu": 0})
    body = await client.upload(
        PUBLISH,
        {"requirements": {"resources": {"memoryMb": 300}}},
        zip_bytes(package_files(manifest)),
        token,
    )
    done = await wait_until_done(client, body["data"]["publishPackage"]["id"], token)
    assert done["status"] == "PUBLISHED", done["error"]
    listing = await client.query(
        "query($id: ID!) { listing(id: $id) { resources { cpu memoryMb gpu } } }",
        {"id": done["listingId"]},
        token,
    )
    assert listing["data"]["listing"]["resources"] == {"cpu": 2.0, "memoryMb": 300, "gpu": 0}


PUBLISH_NOTEBOOK = """
mutation($file: Upload!, $manifest: JSON) {
  publishNotebook(file: $file, manifest: $manifest) { id sourceKind status }
}"""
LISTING = "query($id: ID!) { listing(id: $id) { kind description documentation verificationStatus } }"


async def test_publish_a_notebook_through_graphql(client: Client) -> None:
    token = await client.token("alice")
    body = await client.upload(
        PUBLISH_NOTEBOOK, {"manifest": word_stats_manifest()}, word_stats_notebook(), token
    )
    assert not body.get("errors"), body
    assert body["data"]["publishNotebook"]["sourceKind"] == "NOTEBOOK"
    done = await wait_until_done(client, body["data"]["publishNotebook"]["id"], token)
    assert done["status"] == "PUBLISHED", done
    listing = (await client.query(LISTING, {"id": done["listingId"]}))["data"]["listing"]
    assert listing["kind"] == "NOTEBOOK" and listing["verificationStatus"] == "VERIFIED"
    assert listing["description"].startswith("Counts the words of an English text")
    assert listing["documentation"].startswith("# Word statistics")

    not_a_notebook = await client.upload(PUBLISH_NOTEBOOK, {}, b"print('hi')", token)
    failed = await wait_until_done(client, not_a_notebook["data"]["publishNotebook"]["id"], token)
    assert failed["status"] == "FAILED" and "not a JSON notebook" in failed["error"]
    assert failed["steps"][0]["errorCode"] == "BAD_INPUT"


PUBLISH_CHECKED = """
mutation($file: Upload!, $sha256: String) {
  publishPackage(file: $file, sha256: $sha256) { id status }
}"""


async def test_the_declared_sha256_is_checked_up_front_and_may_carry_its_prefix(client: Client) -> None:
    """``sha256`` was prefixed with "sha256:" unseen: the digest as every other field shows it
    ("sha256:<hex>", e.g. ``artifactDigest``) never matched, and a malformed one was queued, then
    FAILED in step package as an "unsafe archive" whose upload "differs from the declared sha256:xyz"."""
    token = await client.token("alice")
    payload = zip_bytes(package_files(sentiment_manifest(verify=False)))
    for malformed in ("xyz", "sha256:" + "0" * 63, "md5:" + "0" * 32, " "):
        body = await client.upload(PUBLISH_CHECKED, {"sha256": malformed}, payload, token)
        assert body["data"] is None
        assert body["errors"][0]["extensions"] == {"code": "BAD_INPUT", "field": "sha256"}
    for version, spelled in (("1.0.0", lambda hex_: f"sha256:{hex_}"), ("1.0.1", str.upper)):
        payload = zip_bytes(package_files(sentiment_manifest(verify=False, version=version)))
        declared = spelled(hashlib.sha256(payload).hexdigest())
        body = await client.upload(PUBLISH_CHECKED, {"sha256": declared}, payload, token)
        done = await wait_until_done(client, body["data"]["publishPackage"]["id"], token)
        assert done["status"] == "PUBLISHED", done["error"]


async def test_publish_requirements_choose_a_new_listings_visibility(client: Client) -> None:
    """GraphQL could not say who sees a new listing (it was PUBLIC); ``requirements.visibility`` can."""
    token = await client.token("alice")
    query = """mutation($file: Upload!, $manifest: JSON!, $requirements: PublishRequirementsInput) {
      publishDataset(file: $file, manifest: $manifest, requirements: $requirements) { id } }"""
    manifest = {"name": "reviews", "kind": "dataset", "category": "Natural Language Processing"}
    body = await client.upload(
        query, {"manifest": manifest, "requirements": {"visibility": "PRIVATE"}}, b"text\ngreat\n", token
    )
    assert not body.get("errors"), body
    done = await wait_until_done(client, body["data"]["publishDataset"]["id"], token)
    assert done["status"] == "PUBLISHED", done["error"]
    seen = "query($id: ID!) { listing(id: $id) { visibility } }"
    assert (await client.query(seen, {"id": done["listingId"]}, token))["data"]["listing"][
        "visibility"
    ] == "PRIVATE"
    stranger = await client.query(seen, {"id": done["listingId"]}, await client.token("bob", "requester"))
    assert stranger["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    shared = await client.upload(
        query, {"manifest": manifest, "requirements": {"visibility": "SHARED"}}, b"x", token
    )
    assert shared["errors"][0]["extensions"]["code"] == "BAD_INPUT"
