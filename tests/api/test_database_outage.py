"""PostgreSQL restarted under a serving API: requests fail with UNAVAILABLE (retry later) while it is
gone, not INTERNAL, and the same process serves again once it is back (the pool reconnects).

The outage is real at the TCP level: the app reaches the test cluster through a local forwarder that is
stopped (listener closed, live connections cut, as a server shutdown does) and started again."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from api.app import create_app
from catalog.indexing import SYNC_INTERVAL_S
from infra.settings import Settings
from search.embeddings import Encoder
from tests.services import free_port, require_service

if TYPE_CHECKING:
    from tests.conftest import PostgresCluster

LISTINGS = "{ listings(first: 1) { edges { node { id } } } }"
SEARCH = '{ search(input: {text: "detect objects in photos"}) { results { listing { id } } } }'


class Forwarder:
    """Forwards 127.0.0.1:port to the database server until stopped; restartable on the same port."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {client_writer, server_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        try:
            await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
        finally:
            self._writers -= {client_writer, server_writer}


@pytest.fixture
async def forwarder(postgres_cluster: PostgresCluster | None) -> AsyncIterator[tuple[Forwarder, str]]:
    require_service("PostgreSQL", postgres_cluster is not None, "no PostgreSQL server")
    assert postgres_cluster is not None
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_cluster.psql(f"CREATE DATABASE {name} TEMPLATE mlrepo_template")
    proxy = Forwarder(postgres_cluster.port)
    await proxy.start()
    yield proxy, f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/{name}"
    with contextlib.suppress(Exception):
        await proxy.stop()


async def test_requests_are_unavailable_while_the_database_is_down_and_served_once_it_is_back(
    forwarder: tuple[Forwarder, str], tmp_path: Path, encoder: Encoder
) -> None:
    proxy, url = forwarder
    app = create_app(
        Settings(data_dir=tmp_path, database_url=url, redis_url=None), migrate=False, encoder=encoder
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mlrepo.test") as http:

            async def codes() -> list[str | None]:
                found = []
                for query in (LISTINGS, SEARCH):
                    body = (await http.post("/graphql", json={"query": query})).json()
                    found.append(body["errors"][0]["extensions"]["code"] if body.get("errors") else None)
                return found

            assert await codes() == [None, None]
            await proxy.stop()
            # A search reads the database only to sync the index, at most once a SYNC_INTERVAL_S (in
            # between it is served from memory, outage or not): let one be due, so this one must read.
            await asyncio.sleep(SYNC_INTERVAL_S)
            assert await codes() == ["UNAVAILABLE", "UNAVAILABLE"]
            await proxy.start()
            assert await codes() == [None, None]
