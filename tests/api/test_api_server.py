"""The app under a real uvicorn: migrations at start, HTTP, and websockets speaking graphql-transport-ws."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from catalog.actors import Actor
from catalog.app import CatalogApp
from infra.settings import Settings
from search.embeddings import Encoder
from tests.services import serve_in_background

PROTOCOL = "graphql-transport-ws"


@pytest.fixture
async def server(tmp_path: Path, encoder: Encoder) -> AsyncIterator[tuple[str, Settings]]:
    """uvicorn serving the app on a fresh, *unmigrated* SQLite data dir: the lifespan must migrate it."""
    settings = Settings(data_dir=tmp_path / "fresh", redis_url=None)
    async with serve_in_background(create_app(settings, encoder=encoder), lifespan="on") as address:
        yield address, settings


async def _token(settings: Settings, name: str) -> str:
    async with await CatalogApp.open(settings, with_index=False) as catalog:
        info = await catalog.accounts.create(name, "producer")
        return (await catalog.accounts.create_token(info.id)).secret


async def _handshake(address: str, payload: dict | None = None):
    socket = await connect(f"ws://{address}/graphql", subprotocols=[PROTOCOL])
    assert socket.subprotocol == PROTOCOL
    await socket.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
    return socket


async def test_http_against_real_server_after_startup_migration(server) -> None:
    address, _settings = server
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        response = await http.post("/graphql", json={"query": "{ categories { name } me { name } }"})
        assert response.status_code == 200
        assert response.json() == {"data": {"categories": [], "me": None}}


async def test_websocket_operation_with_token_in_connection_init(server) -> None:
    address, settings = server
    token = await _token(settings, "alice")
    socket = await _handshake(address, {"Authorization": f"Bearer {token}"})
    try:
        assert json.loads(await socket.recv()) == {"type": "connection_ack"}
        await socket.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ me { name } }"}})
        )
        message = json.loads(await socket.recv())
        assert message == {"id": "1", "type": "next", "payload": {"data": {"me": {"name": "alice"}}}}
        assert json.loads(await socket.recv()) == {"id": "1", "type": "complete"}

        await socket.send(
            json.dumps({"id": "2", "type": "subscribe", "payload": {"query": '{ listing(id: "x") { id } }'}})
        )
        message = json.loads(await socket.recv())
        assert message["type"] == "next"
        assert message["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    finally:
        await socket.close()


async def test_websocket_with_wrong_token_is_closed_4403(server) -> None:
    address, _settings = server
    socket = await _handshake(address, {"Authorization": "Bearer wrong"})
    with pytest.raises(ConnectionClosed) as closed:
        await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


@pytest.mark.parametrize("value", [5, ["Bearer x"], {"token": "x"}, True])
async def test_websocket_with_a_non_text_authorization_is_closed_4403(server, value) -> None:
    """A connection_init Authorization that is not a string is credentials that do not check out, as a
    malformed HTTP header is: it was ignored, and the socket served the caller as anonymous."""
    address, _settings = server
    socket = await _handshake(address, {"Authorization": value})
    with pytest.raises(ConnectionClosed) as closed:
        await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_websocket_with_wrong_header_is_closed_4403(server) -> None:
    address, _settings = server
    socket = await connect(
        f"ws://{address}/graphql",
        subprotocols=[PROTOCOL],
        additional_headers={"Authorization": "Bearer nope"},
    )
    await socket.send(json.dumps({"type": "connection_init", "payload": {}}))
    with pytest.raises(ConnectionClosed) as closed:
        await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


@pytest.mark.parametrize(("protocol", "start"), [(PROTOCOL, "subscribe"), ("graphql-ws", "start")])
async def test_a_socket_whose_token_is_revoked_serves_no_more_operations(server, protocol, start) -> None:
    """README: revokeToken revokes a token at once. A websocket authenticated in connection_init kept
    serving new operations as the account after its token was revoked (subscriptions to its jobs, its
    demand alerts), for as long as the client kept the socket open. Revoked, the next operation closes
    the socket with 4403, as credentials that do not check out at connection_init do."""
    address, settings = server
    token = await _token(settings, "alice")
    socket = await connect(f"ws://{address}/graphql", subprotocols=[protocol])
    operation = {"query": 'subscription { jobStatus(id: "none") { id } }'}
    try:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await socket.send(json.dumps(init))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        await socket.send(json.dumps({"id": "1", "type": start, "payload": operation}))
        served = json.loads(await socket.recv())  # answered (no such job) while the token holds
        assert served["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND", served
        assert json.loads(await socket.recv())["type"] == "complete"
        async with await CatalogApp.open(settings, with_index=False) as catalog:
            alice = await catalog.accounts.resolve("alice")
            assert await catalog.accounts.revoke_tokens(alice.id) == 1
        await socket.send(json.dumps({"id": "2", "type": start, "payload": operation}))
        with pytest.raises(ConnectionClosed) as closed:
            await socket.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    finally:
        await socket.close()


UNPAIRED = (
    '{"id": "1", "type": "subscribe", "payload": {"query": "{ me { name } }", "variables": {"x": "\\ud800"}}}'
)


@pytest.mark.parametrize("message", ["{not json", '"just a string"', UNPAIRED])
async def test_a_websocket_message_that_is_not_usable_json_is_closed_4400(server, message: str) -> None:
    """The body checks raised the HTTP layer's exception inside the websocket loop too: the connection
    died with a traceback and no close frame instead of graphql-transport-ws's 4400."""
    address, _settings = server
    socket = await _handshake(address)
    assert json.loads(await socket.recv()) == {"type": "connection_ack"}
    await socket.send(message)
    with pytest.raises(ConnectionClosed) as closed:
        await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


async def test_what_the_started_app_holds_is_frozen_out_of_the_collector_until_shutdown(
    sqlite_settings: Settings, encoder: Encoder
) -> None:
    """Full collections walked every startup object (the index's projections, the model) for nothing:
    they live as long as the process. Closing the app hands them back, so tests can free what they open."""
    app = create_app(sqlite_settings, migrate=False, encoder=encoder)
    async with app.router.lifespan_context(app):
        services = app.state.services
        assert gc.get_freeze_count() > 0
        assert not any(held is services for held in gc.get_objects())
    assert gc.get_freeze_count() == 0
    assert any(held is services for held in gc.get_objects())


async def _held_until(services, actor: Actor, count: int) -> None:
    """Wait (bounded) until the server counts ``count`` live subscriptions of ``actor``."""
    for _ in range(600):
        if services.subscriptions.held(actor) == count:
            return
        await asyncio.sleep(0.05)
    assert services.subscriptions.held(actor) == count


def _errors(message: dict) -> list[dict]:
    payload = message.get("payload")
    return payload if isinstance(payload, list) else (payload or {}).get("errors") or []


@pytest.mark.parametrize(
    ("protocol", "start", "stop"), [(PROTOCOL, "subscribe", "complete"), ("graphql-ws", "start", "stop")]
)
async def test_one_account_holds_at_most_its_live_subscriptions_over_all_its_sockets(
    tmp_path: Path, encoder: Encoder, protocol: str, start: str, stop: str
) -> None:
    """A socket carries at most 100 operations, but one token could open sockets without end: 50
    sockets of demandAlerts grew a server by ~110 MB. Past MLREPO_MAX_SUBSCRIPTIONS_PER_ACCOUNT the next
    subscription is FORBIDDEN, whichever socket asks; a completed or disconnected one frees its slot."""
    settings = Settings(data_dir=tmp_path / "d", redis_url=None, max_subscriptions_per_account=2)
    app = create_app(settings, encoder=encoder)
    operation = {"query": 'subscription { demandAlerts(category: "Vision") { text } }'}
    async with serve_in_background(app, lifespan="on") as address:
        token = await _token(settings, "alice")
        async with await CatalogApp.open(settings, with_index=False) as catalog:
            alice = Actor(account_id=(await catalog.accounts.resolve("alice")).id)
        services = app.state.services
        init = json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        sockets = [await connect(f"ws://{address}/graphql", subprotocols=[protocol]) for _ in range(2)]
        first, second = sockets
        try:
            for socket in sockets:
                await socket.send(init)
                assert json.loads(await socket.recv())["type"] == "connection_ack"
            for id_ in ("1", "2"):
                await first.send(json.dumps({"id": id_, "type": start, "payload": operation}))
            await _held_until(services, alice, 2)

            await second.send(json.dumps({"id": "3", "type": start, "payload": operation}))
            refused = json.loads(await asyncio.wait_for(second.recv(), 60))
            assert refused["id"] == "3" and _errors(refused), refused
            assert _errors(refused)[0]["extensions"]["code"] == "FORBIDDEN", refused
            assert services.subscriptions.held(alice) == 2

            await first.send(json.dumps({"id": "1", "type": stop}))
            await _held_until(services, alice, 1)
            await second.send(json.dumps({"id": "4", "type": start, "payload": operation}))
            await _held_until(services, alice, 2)
        finally:
            for socket in sockets:
                await socket.close()
        await _held_until(services, alice, 0)


async def _refusal_of(address: str, trickle: bool) -> tuple[bytes, bytes]:
    """Send most of a JSON body, then stall (or trickle a byte every 0.1 s); the status line and body of
    the answer, read until the server closes the connection."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    head += b"content-length: 100000\r\n\r\n"
    writer.write(head + b'{"query": "{ me { name } }", "x": "' + b"y" * 50_000)
    await writer.drain()

    async def drip() -> None:
        while True:
            await asyncio.sleep(0.1)
            writer.write(b"y")
            await writer.drain()

    dripping = asyncio.create_task(drip()) if trickle else None
    try:
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        if dripping is not None:
            dripping.cancel()
        writer.close()
    status, _, rest = answer.partition(b"\r\n")
    return status, rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
async def test_a_request_body_that_does_not_arrive_in_time_is_refused_408(
    tmp_path: Path, encoder: Encoder, trickle: bool
) -> None:
    """A client that sent most of a JSON body and then stopped (or sent a byte now and then) held the
    connection and what it had sent for as long as it liked: 40 such 8 MB bodies grew a server by 290
    MB. Past MLREPO_REQUEST_BODY_TIMEOUT_S the server answers 408 with a code and closes."""
    settings = Settings(data_dir=tmp_path / "d", redis_url=None, request_body_timeout_s=0.5)
    async with serve_in_background(create_app(settings, encoder=encoder), lifespan="on") as address:
        status, body = await _refusal_of(address, trickle)
        assert status.startswith(b"HTTP/1.1 408"), status
        error = json.loads(body)["errors"][0]
        assert error["extensions"]["code"] == "BAD_INPUT" and "0.5 s" in error["message"]
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:  # and it serves the others
            response = await http.post("/graphql", json={"query": "{ me { name } }"})
            assert response.json() == {"data": {"me": None}}


@pytest.mark.parametrize(("protocol", "start"), [(PROTOCOL, "subscribe"), ("graphql-ws", "start")])
async def test_a_revoked_token_loses_its_running_streams_too(
    tmp_path: Path, encoder: Encoder, protocol: str, start: str
) -> None:
    """Credentials were checked again only at each new operation, so a stream already running went on,
    and a demandAlerts stream never ends: the holder of a leaked token, revoked, kept reading the
    account's alerts (other people's searches). The socket is now closed with 4403 within
    MLREPO_WEBSOCKET_AUTH_RECHECK_S of the revocation."""
    settings = Settings(data_dir=tmp_path / "d", redis_url=None, websocket_auth_recheck_s=0.2)
    app = create_app(settings, encoder=encoder)
    async with serve_in_background(app, lifespan="on") as address:
        token = await _token(settings, "alice")
        async with await CatalogApp.open(settings, with_index=False) as catalog:
            alice = Actor(account_id=(await catalog.accounts.resolve("alice")).id)
        socket = await connect(f"ws://{address}/graphql", subprotocols=[protocol])
        try:
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
            await socket.send(json.dumps(init))
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            operation = {"query": 'subscription { demandAlerts(category: "Vision") { text } }'}
            await socket.send(json.dumps({"id": "1", "type": start, "payload": operation}))
            await _held_until(app.state.services, alice, 1)  # the stream runs
            async with await CatalogApp.open(settings, with_index=False) as catalog:
                assert await catalog.accounts.revoke_tokens("alice") == 1
            with pytest.raises(ConnectionClosed) as closed:
                while True:  # keep-alive messages of the legacy protocol may come first
                    await asyncio.wait_for(socket.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        finally:
            await socket.close()
        await _held_until(app.state.services, alice, 0)
