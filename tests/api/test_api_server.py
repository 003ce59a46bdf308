"""The app under a real uvicorn: migrations at start, HTTP, and websockets speaking graphql-transport-ws."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from catalog.app import CatalogApp
from infra.settings import Settings
from search.embeddings import Encoder

PROTOCOL = "graphql-transport-ws"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def server(tmp_path: Path, encoder: Encoder) -> AsyncIterator[tuple[str, Settings]]:
    """uvicorn serving the app on a fresh, *unmigrated* SQLite data dir: the lifespan must migrate it."""
    settings = Settings(data_dir=tmp_path / "fresh", redis_url=None)
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings, encoder=encoder), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    for _ in range(400):
        if uv.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    try:
        yield f"127.0.0.1:{port}", settings
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 30)


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
