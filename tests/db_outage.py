"""A real database outage for tests: the test's own PostgreSQL cluster (``private_postgres_cluster``) shut
down the moment the test says (its clients' connections cut, new ones refused), and started again.

Imported as ``tests.db_outage`` by the areas whose writes must outlast an outage (jobs, publications)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from infra.migrate import upgrade
from infra.settings import Settings

if TYPE_CHECKING:
    from tests.conftest import PostgresCluster

DOWN_S = 3.0


def migrated_database(cluster: PostgresCluster) -> str:
    """The URL of a migrated database on ``cluster``: what a test module's ``database_url`` fixture returns
    so that every fixture of the module (settings, catalog, accounts) works on the cluster it restarts."""
    cluster.psql("CREATE DATABASE mlrepo")
    url = cluster.url("mlrepo")
    upgrade(Settings(database_url=url))
    return url


class DatabaseOutage:
    """Shuts the cluster down once (``begin``; later calls do nothing), and starts it again in the
    background ``down_s`` later, or as soon as ``back_when()`` once given."""

    def __init__(
        self,
        cluster: PostgresCluster,
        back_when: Callable[[], bool] | None = None,
        down_s: float = DOWN_S,
    ) -> None:
        self.cluster = cluster
        self.back_when = back_when
        self.down_s = down_s
        self.began: float | None = None  # time.monotonic() when the server went down
        self.restart: asyncio.Task | None = None

    async def begin(self) -> None:
        if self.restart is None:
            await asyncio.to_thread(self.cluster.stop_server)
            self.began = time.monotonic()
            self.restart = asyncio.create_task(self._start_again())

    async def _start_again(self) -> None:
        if self.back_when is None:
            await asyncio.sleep(self.down_s)
        else:
            while not self.back_when():
                await asyncio.sleep(0.05)
        await asyncio.to_thread(self.cluster.start_server)

    async def over(self) -> None:
        """Wait until the server is back (at once if the outage never began)."""
        if self.restart is not None:
            await self.restart
