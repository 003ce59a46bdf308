"""Session-wide fixtures: throwaway PostgreSQL and Redis servers, and a migrated database per test.

Real services only. Where a service cannot be started, a test that needs it is skipped on a developer's
machine but FAILS under ``CI=true`` (``require_service``), so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from catalog.actors import Actor
from catalog.app import CatalogApp
from infra.db import Database
from infra.migrate import upgrade
from infra.settings import Settings
from search.embeddings import Encoder
from tests.services import IN_CI, POSTGRES_ROOT, free_port, postgres_bin_dir, require_service

__all__ = ["IN_CI", "free_port", "require_service"]  # also reachable here, for older plugin-manager lookups

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# No garbage collection by the clock: at 00:43 local time (the default schedule) every API app and worker
# a test starts would run a real ``gc --delete`` on that test's data, and a test's outcome would depend on
# the minute it ran. Set here, so it holds for every Settings a test builds and every process it starts;
# the tests of the schedule itself give ``gc_interval_hours`` explicitly.
os.environ["MLREPO_GC_INTERVAL_HOURS"] = "0"

PG_BIN = postgres_bin_dir()  # whatever major version the distribution installed
NO_POSTGRES = (
    f"no runnable PostgreSQL server (initdb, pg_ctl) in {PG_BIN or f'{POSTGRES_ROOT}/*/bin or on PATH'} "
    "or no psql (scripts/test-services.sh installs them; MLREPO_TEST_PG_BIN names another directory)"
)


def _wait_for_port(port: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- PostgreSQL


class PostgresCluster:
    """A throwaway cluster of the installed PostgreSQL, owned by ``postgres`` (it refuses to run as root)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mlrepo-pg-"))
        self.data = self.root / "data"

    def _as_postgres(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(
            self._as_postgres(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
            ),
            check=True,
            capture_output=True,
        )
        self.start_server()

    def start_server(self) -> None:
        """Start the server of the initialized cluster (again, after ``stop_server``), on the same port."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            self._as_postgres(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.root / "log"),
                "-w",
                "start",
            ),
            check=True,
            capture_output=True,
        )

    def stop_server(self) -> None:
        """Shut the server down as an operator's restart does (clients' connections are cut), keeping
        its data: a database outage, ended by ``start_server``."""
        subprocess.run(
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"),
            check=True,
            capture_output=True,
        )

    def psql(self, sql: str) -> None:
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                sql,
            ],
            check=True,
            capture_output=True,
        )

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster | None]:
    if PG_BIN is None or not (PG_BIN / "initdb").exists() or shutil.which("psql") is None:
        yield None
        return
    cluster = PostgresCluster(PG_BIN)
    try:
        cluster.start()
    except subprocess.CalledProcessError as exc:
        print(f"PostgreSQL failed to start: {exc.stderr!r}")
        shutil.rmtree(cluster.root, ignore_errors=True)
        yield None
        return
    try:
        # One migrated template; each test gets a fast copy of it (CREATE DATABASE ... TEMPLATE).
        cluster.psql("CREATE DATABASE mlrepo_template")
        upgrade(Settings(database_url=cluster.url("mlrepo_template")))
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def private_postgres_cluster() -> Iterator[PostgresCluster]:
    """A cluster of the test's own, which it may stop and start again (a database outage) without
    cutting off any other test's database; it costs an initdb (~1-2 s)."""
    require_service("PostgreSQL", PG_BIN is not None and shutil.which("psql") is not None, NO_POSTGRES)
    assert PG_BIN is not None
    cluster = PostgresCluster(PG_BIN)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster | None) -> str:
    """URL of an empty, unmigrated database on the throwaway cluster (session-wide)."""
    require_service("PostgreSQL", postgres_cluster is not None, NO_POSTGRES)
    assert postgres_cluster is not None
    postgres_cluster.psql("CREATE DATABASE mlrepo_session")
    return postgres_cluster.url("mlrepo_session")


def _fresh_postgres_database(cluster: PostgresCluster) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    cluster.psql(f"CREATE DATABASE {name} TEMPLATE mlrepo_template")
    return cluster.url(name)


# --------------------------------------------------------------------------- SQLite


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(Settings(database_url=f"sqlite+aiosqlite:///{path}"))
    return path


# --------------------------------------------------------------------------- per-test database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    postgres_cluster: PostgresCluster | None,
) -> str:
    """A freshly migrated, empty database of each kind: every catalog test runs on both."""
    if request.param == "sqlite":
        target = tmp_path / "mlrepo.db"
        shutil.copyfile(sqlite_template, target)
        return f"sqlite+aiosqlite:///{target}"
    require_service("PostgreSQL", postgres_cluster is not None, NO_POSTGRES)
    assert postgres_cluster is not None
    return _fresh_postgres_database(postgres_cluster)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings on a private data dir and a migrated database; jobs run in-process (no Redis)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return Settings(data_dir=data_dir, database_url=database_url, redis_url=None)


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    """SQLite only, for tests whose subject does not depend on the database engine."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    target = data_dir / "mlrepo.db"
    shutil.copyfile(sqlite_template, target)
    return Settings(data_dir=data_dir, database_url=f"sqlite+aiosqlite:///{target}", redis_url=None)


# --------------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"redis://127.0.0.1:{port}/0" if _wait_for_port(port) else None
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: str | None) -> str:
    """The throwaway redis-server, flushed before each test."""
    require_service("Redis", redis_server is not None, "redis-server is not installed or did not start")
    assert redis_server is not None
    port = redis_server.rsplit(":", 1)[1].split("/")[0]
    subprocess.run(["redis-cli", "-p", port, "FLUSHALL"], check=True, capture_output=True)
    return redis_server


# --------------------------------------------------------------------------- shared real components


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    """One real MiniLM for the whole session: loading it costs ~1-2 s, encoding is what tests exercise."""
    return Encoder()


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """The test's migrated database, for tests below the catalog (no index, no encoder)."""
    database = Database.from_settings(settings)
    yield database
    await database.dispose()


@pytest.fixture
async def catalog_app(settings: Settings, encoder: Encoder) -> AsyncIterator[CatalogApp]:
    """The real catalog (database + embedded search index + encoder) on the test's database."""
    app = await CatalogApp.open(settings, encoder=encoder)
    try:
        yield app
    finally:
        await app.close()


@pytest.fixture
async def alice(catalog_app: CatalogApp) -> Actor:
    """A producer account in ``catalog_app``."""
    return (await catalog_app.accounts.create("alice", "producer")).as_actor()


@pytest.fixture
async def bob(catalog_app: CatalogApp) -> Actor:
    """A requester account in ``catalog_app``."""
    return (await catalog_app.accounts.create("bob", "requester")).as_actor()
