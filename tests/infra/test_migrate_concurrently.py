"""Several processes migrating one database (PostgreSQL, or a SQLite file) at once: two ``mlrepo serve``
(or a worker's ``mlrepo migrate`` beside them) started together, as a deployment restarts them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from infra.migrate import alembic_config
from tests.services import require_service

if TYPE_CHECKING:
    from tests.conftest import PostgresCluster

REPO = Path(__file__).resolve().parents[2]
# Each process imports everything first, then waits for its go on stdin, so all migrate at one moment.
MIGRATE_ON_GO = (
    "import sys; from infra.migrate import upgrade; from infra.settings import Settings; "
    "settings = Settings(database_url=sys.argv[1]); print('ready', flush=True); sys.stdin.readline(); "
    "upgrade(settings)"
)


def test_processes_migrating_at_once_all_succeed(
    postgres_cluster: PostgresCluster | None,
) -> None:
    require_service("PostgreSQL", postgres_cluster is not None, "no PostgreSQL server")
    name = f"m_{uuid.uuid4().hex[:12]}"
    postgres_cluster.psql(f"CREATE DATABASE {name}")
    url = postgres_cluster.url(name)
    migrate_at_once(url)
    assert asyncio.run(_revisions(url)) == [head_revision()]


def test_processes_migrating_a_new_sqlite_file_at_once_all_succeed(tmp_path: Path) -> None:
    """SQLite migrations took no lock (PostgreSQL's take an advisory one): processes started together on
    a new database file each found it empty and created the tables, and all but one failed."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'mlrepo.db'}"
    migrate_at_once(url)
    assert asyncio.run(_revisions(url)) == [head_revision()]


def migrate_at_once(url: str, count: int = 4) -> None:
    """``count`` processes migrate the database at ``url`` at one moment; each must succeed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_ON_GO, url],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outcomes = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    failures = [err for process, (_, err) in zip(processes, outcomes, strict=True) if process.returncode]
    assert not failures, failures[0]


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head() or ""


async def _revisions(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return list((await connection.scalars(text("SELECT version_num FROM alembic_version"))).all())
    finally:
        await engine.dispose()
