"""Bad requests get a clear error with ``extensions.code`` — never an HTTP 500, never internals."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest
from graphql import GraphQLError
from pydantic import BaseModel, Field, ValidationError

from api.app import create_app
from api.errors import coded_error
from api.schema import _parsed
from infra.errors import NotFound


@pytest.mark.parametrize(
    "query",
    [
        "{ listing(id: ",  # syntax error
        "{ nope }",  # unknown field
        "{ listings(kind: MODEL) { totalCount } }",  # unknown argument
        '{ listings(first: "ten") { totalCount } }',  # wrong argument type
        "{ listings(filter: {kinds: [WIZARD]}) { totalCount } }",  # invalid enum (facet) value
        "{ listing { id } }",  # missing required argument
        "query($id: ID!) { listing(id: $id) { id } }",  # missing variable
        "subscription { nope }",  # operation type the schema lacks
    ],
)
async def test_malformed_graphql_is_bad_input(api, query: str) -> None:
    body = await api.gql(query)
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "BAD_INPUT"
    assert body["errors"][0]["message"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'{"variables": {}}', "application/json"),  # no query
        (b"query=1", "text/plain"),
        (b'"just a string"', "application/json"),  # JSON, but not an object
        (b'[{"query": "{ me { name } }"}]', "application/json"),  # batching is off
        (b"\xff\xfe\x00", "application/json"),  # not decodable text
        # An unpaired surrogate escape decodes to a str no database or tokenizer takes (was INTERNAL).
        (
            b'{"query": "query($t: String!) { search(input: {text: $t}) { totalCount } }", '
            b'"variables": {"t": "ok \\ud800"}}',
            "application/json",
        ),
        (
            b'{"query": "query($id: ID!) { listing(id: $id) { id } }", "variables": {"id": "\\udfff"}}',
            "application/json",
        ),
        (b"--x\r\ngarbage", "multipart/form-data; boundary=x"),
        (
            b'{"query": "{ me { name } }", "variables": {"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
            "application/json",
        ),  # nested past the decoder's recursion limit (was HTTP 500)
    ],
)
async def test_unparseable_requests_are_400_with_code(api, content: bytes, content_type: str) -> None:
    response = await api.http.post("/graphql", content=content, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_INPUT"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'"just a string"', "must be a JSON object"),
        (b'{"query": "{ me { name } }", "variables": {"x": "\\ud800"}}', "unpaired"),
    ],
)
async def test_unusable_bodies_say_what_is_wrong(api, content: bytes, says: str) -> None:
    response = await api.http.post("/graphql", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400 and says in response.json()["errors"][0]["message"]


async def test_long_input_is_not_echoed_in_full(api) -> None:
    body = await api.gql("query($id: ID!) { listing(id: $id) { id } }", {"id": "x" * 100_000})
    error = body["errors"][0]
    assert error["extensions"]["code"] == "NOT_FOUND" and len(error["message"]) <= 500


async def test_get_with_unparseable_variables_is_400(api) -> None:
    response = await api.http.get("/graphql", params={"query": "{ me { name } }", "variables": "{bad"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_INPUT"


async def test_mutation_over_get_is_refused_cleanly(api) -> None:
    response = await api.http.get("/graphql", params={"query": 'mutation { deleteListing(id: "x") { id } }'})
    assert 400 <= response.status_code < 500
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_INPUT"


async def test_abusive_documents_are_refused(api) -> None:
    deep = await api.gql("{ " + "me { " * 20 + "name" + " }" * 20 + " }")
    assert deep["errors"][0]["extensions"]["code"] == "BAD_INPUT"
    assert any("depth" in error["message"] for error in deep["errors"])
    aliases = "{ " + " ".join(f"a{i}: me {{ name }}" for i in range(60)) + " }"
    assert await api.error_code(aliases) == "BAD_INPUT"
    huge = "{ me { " + " ".join(["name"] * 6000) + " } }"
    assert await api.error_code(huge) == "BAD_INPUT"


def _searches(count: int, first: int = 0) -> str:
    return " ".join(
        f'a{i}: search(input: {{text: "q{i}"}}) {{ totalCount }}' for i in range(first, first + count)
    )


async def test_an_operation_runs_at_most_five_searches(api) -> None:
    """50 aliased searches fit the document limits, and one such request kept a 2-core server busy for
    8.4 s (each search is an encode and a ranking pass). More than five searches in one operation are
    refused before any runs, through fragments too; fields under one response key run once."""
    for document in (
        "{ " + _searches(6) + " }",
        "{ " + _searches(3) + " ...More } fragment More on Query { " + _searches(3, first=3) + " }",
    ):
        body = await api.gql(document)
        assert body.get("data") is None, body
        assert body["errors"][0]["extensions"]["code"] == "BAD_INPUT"
        assert "6 'search' fields in one operation; at most 5" in body["errors"][0]["message"]
    repeated = "{ " + _searches(5) + ' a0: search(input: {text: "q0"}) { totalCount } }'
    body = await api.gql(repeated)
    assert "errors" not in body and sorted(body["data"]) == [f"a{i}" for i in range(5)]


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer ", "mlr_abc"])
async def test_wrong_credentials_are_unauthenticated(api, header: str) -> None:
    response = await api.http.post(
        "/graphql", json={"query": "{ me { name } }"}, headers={"Authorization": header}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_revoked_token_is_unauthenticated(api) -> None:
    accounts = api.services.catalog.accounts
    info = await accounts.create("alice", "producer")
    token = await accounts.create_token(info.id)
    assert (await api.data("{ me { name } }", token=token.secret))["me"]["name"] == "alice"
    await accounts.revoke_token(info.as_actor(), token.id)
    assert await api.error_code("{ me { name } }", token=token.secret) == "UNAUTHENTICATED"


async def test_missing_token_means_anonymous_and_writes_need_one(api) -> None:
    assert (await api.data("{ me { name } }"))["me"] is None
    create = 'mutation { createListing(input: {name: "x", kind: MODEL, category: "c"}) { id } }'
    assert await api.error_code(create) == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("query", "producer"),
    [
        ('{ listing(id: "a\\u0000b") { id } }', False),
        ('{ listings(filter: {category: "a\\u0000b"}) { totalCount } }', False),
        ('{ unmetDemand(category: "a\\u0000b") { label } }', True),
        ('mutation { subscribeDemand(category: "a\\u0000b") { category } }', True),
    ],
)
async def test_a_nul_character_is_the_clients_error_not_internal(
    api, database_url: str, query: str, producer: bool
) -> None:
    """PostgreSQL refuses NUL in text (SQLite stores it): that reached clients as INTERNAL."""
    token = await api.account("pat") if producer else None
    body = await api.gql(query, token=token)
    codes = [error["extensions"]["code"] for error in body.get("errors") or []]
    assert "INTERNAL" not in codes
    if database_url.startswith("postgresql"):
        assert codes == ["BAD_INPUT"] and "NUL" in body["errors"][0]["message"]


async def test_healthz(api) -> None:
    response = await api.http.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


# ---------------------------------------------------------------------------- the formatter itself


def test_unexpected_exception_becomes_internal_without_leaking(caplog: pytest.LogCaptureFixture) -> None:
    secret = "password=hunter2 at /srv/secret/path"
    error = GraphQLError("boom", original_error=RuntimeError(secret), path=["search"])
    with caplog.at_level(logging.ERROR, logger="mlrepo.api"):
        coded = coded_error(error)
    assert coded.extensions == {"code": "INTERNAL"}
    assert secret not in coded.message and "reference" in coded.message
    reference = coded.message.split("reference ")[1].split(")")[0]
    assert any(reference in record.getMessage() and record.exc_info for record in caplog.records)


def test_domain_errors_keep_their_code_and_plain_details() -> None:
    cause = NotFound("no listing with id 'x'", field="id", candidates=["a", "b"], row=object())
    coded = coded_error(GraphQLError("ignored", original_error=cause))
    assert coded.message == "no listing with id 'x'"
    assert coded.extensions == {"code": "NOT_FOUND", "field": "id", "candidates": ["a", "b"]}


def test_pydantic_validation_errors_are_bad_input() -> None:
    class Probe(BaseModel):
        limit: int = Field(ge=1)

    with pytest.raises(ValidationError) as caught:
        Probe(limit=0)
    coded = coded_error(GraphQLError("x", original_error=caught.value))
    assert coded.extensions == {"code": "BAD_INPUT"}
    assert coded.message.startswith("limit:")


def test_coding_is_idempotent() -> None:
    once = coded_error(GraphQLError("Syntax Error"))
    assert coded_error(once) is once


async def test_oversized_bodies_are_413_with_code(api) -> None:
    huge_variables = await api.http.post(
        "/graphql", json={"query": "{ me { name } }", "variables": {"x": "y" * (9 << 20)}}
    )
    assert huge_variables.status_code == 413
    limit = api.services.settings.publish_max_upload_bytes
    declared = await api.http.post(
        "/graphql",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": str(limit * 2)},
    )
    assert declared.status_code == 413
    assert declared.json()["errors"][0]["extensions"]["code"] == "BAD_INPUT"


async def test_streamed_body_over_the_limit_is_413(sqlite_settings, encoder) -> None:
    app = create_app(sqlite_settings, migrate=False, encoder=encoder)

    async def chunks():
        for _ in range(160):
            yield b" " * (64 * 1024)  # 10 MiB in all, no Content-Length: only counting can stop it

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mlrepo.test") as http:
            response = await http.post(
                "/graphql", content=chunks(), headers={"content-type": "application/json"}
            )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_INPUT"


async def test_documents_are_parsed_once_and_bad_ones_every_time(api) -> None:
    """The parse cache keeps only documents that parsed: a syntax error, sent twice, is reported twice
    with its code (the token limit too), and a good document is parsed once however often it is sent."""
    before = _parsed.cache_info()
    query = f"{{ categories {{ name count }} }} # {uuid.uuid4()}"  # new to the process-wide cache
    for _ in range(3):
        await api.data(query)
    after = _parsed.cache_info()
    assert after.misses == before.misses + 1 and after.hits == before.hits + 2
    for _ in range(2):
        assert await api.error_code("{ listing(id: ") == "BAD_INPUT"
        assert await api.error_code("{ me { " + " ".join(["name"] * 6000) + " } }") == "BAD_INPUT"


async def test_an_unreadable_upload_names_the_file_field(api) -> None:
    """``runJob``'s JSON-lines upload errors named no field: a client could not tell which input (the
    records, the file) to fix."""
    token = await api.account("rita", "requester")
    query = "mutation($input: RunJobInput!, $file: Upload) { runJob(input: $input, file: $file) { id } }"
    operations = {"query": query, "variables": {"input": {"listingId": "any"}, "file": None}}
    response = await api.http.post(
        "/graphql",
        data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.file"]})},
        files={"0": ("inputs.jsonl", b'"one"\nnot json\n', "application/x-ndjson")},
        headers={"Authorization": f"Bearer {token}"},
    )
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "BAD_INPUT", "field": "file"}, error
    assert "line 2 is not JSON" in error["message"]
