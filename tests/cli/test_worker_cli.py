"""``mlrepo worker`` as an operator runs it: its own process, its default log on stderr, ``--check``.

The worker runs on a redis-server of its own (restarted under it) and a SQLite catalog; the job it claims
names a listing that does not exist, so it fails at once without a sandbox.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.db import Database
from infra.migrate import upgrade_async
from infra.settings import Settings
from infra.tables import Account, Job
from tests.services import free_port, require_service

MLREPO = str(Path(sys.executable).parent / "mlrepo")


@pytest.fixture
def redis_port() -> int:
    require_service("Redis", shutil.which("redis-server") is not None, "redis-server is not installed")
    return free_port()  # a server of its own: it is restarted under the worker


def redis_server(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def worker_env(settings: Settings, redis_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "MLREPO_DATA_DIR": str(settings.data_dir),
        "MLREPO_DATABASE_URL": settings.resolved_database_url,
        "MLREPO_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
    }


async def queue_a_doomed_job(settings: Settings) -> str:
    """A QUEUED job (the worker's startup reconciler queues it) of a listing that does not exist."""
    db = Database.from_settings(settings)
    try:
        async with db.session() as session:
            account = Account(name="alice", role="requester")
            session.add(account)
            await session.flush()
            job = Job(owner_id=account.id, listing_id="nosuchlisting", task="inference", status="queued")
            session.add(job)
            await session.flush()
            return job.id
    finally:
        await db.dispose()


async def wait_for(log: Path, text: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout  # the import of the model libraries alone takes seconds
    while time.monotonic() < deadline:
        content = log.read_text()
        if text in content:
            return content
        await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} not logged in {timeout} s:\n{log.read_text()}")


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MLREPO, "worker", *args, "--check"], env=env, capture_output=True, text=True)


async def test_a_worker_tells_its_operator_what_it_does_by_default(
    sqlite_settings: Settings, redis_port: int, tmp_path: Path
) -> None:
    """Without -v ``mlrepo worker`` printed nothing at all, not even that it had started, so an operator
    could not tell a working worker from a stuck one. Now: one line when it starts (queue, resource
    class, concurrency), one per job claimed and finished, one when Redis is lost and one when it is back;
    nothing of arq's chatter."""
    job_id = await queue_a_doomed_job(sqlite_settings)
    env = worker_env(sqlite_settings, redis_port)
    redis = redis_server(redis_port)
    log = tmp_path / "worker.log"
    with log.open("w") as log_file:
        worker = subprocess.Popen(
            [MLREPO, "worker"], env=env, start_new_session=True, stdout=log_file, stderr=log_file
        )
    try:
        started = await wait_for(log, f"job {job_id} failed in ")
        assert "worker started: queue arq:queue (cpu jobs and publishing), up to 10 at once; " in started
        assert f"job {job_id} claimed (attempt 1): inference of listing nosuchlisting" in started
        healthy = check(env)
        assert healthy.returncode == 0 and healthy.stdout.startswith("worker alive: "), healthy

        redis.terminate()
        redis.wait(timeout=10)
        await wait_for(log, "lost Redis")
        redis = redis_server(redis_port)
        content = await wait_for(log, "Redis is back after ")
        assert content.count("worker started: ") == 2, content
        assert worker.poll() is None
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        finally:
            worker.kill()
            worker.wait()
    content = log.read_text()
    lines = content.splitlines()
    # Quiet otherwise: arq's own lines (its start, each job's arrow lines, the health record) stay out.
    assert not [line for line in lines if " arq." in line or "Starting worker" in line], content
    assert len([line for line in lines if f"job {job_id}" in line]) == 2, content
    assert "Traceback" not in content and lines[-1].endswith("INFO mlrepo.worker: worker stopped"), content

    dead = check(env)  # the worker is gone: its record went with it
    assert dead.returncode == 1 and dead.stderr.startswith("error: no worker of queue arq:queue on "), dead
    redis.terminate()
    redis.wait(timeout=10)
    unreachable = check(env)
    assert unreachable.returncode == 1 and "cannot reach Redis at 127.0.0.1:" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1, unreachable.stderr


async def test_a_quiet_worker_logs_only_problems(
    sqlite_settings: Settings, redis_port: int, tmp_path: Path
) -> None:
    job_id = await queue_a_doomed_job(sqlite_settings)
    env = worker_env(sqlite_settings, redis_port)
    redis = redis_server(redis_port)
    try:
        worker = subprocess.Popen(
            [MLREPO, "-q", "worker"], env=env, start_new_session=True, stderr=subprocess.PIPE
        )
        try:
            db = Database.from_settings(sqlite_settings)
            try:
                for _ in range(450):  # the job failing is the sign it ran
                    async with db.session() as session:
                        if (await session.get(Job, job_id)).status == "failed":
                            break
                    await asyncio.sleep(0.2)
            finally:
                await db.dispose()
            worker.terminate()
            _, err = worker.communicate(timeout=30)
        finally:
            worker.kill()
            worker.wait()
        assert err.decode() == "", err.decode()
    finally:
        redis.terminate()
        redis.wait(timeout=10)


async def test_a_worker_says_when_its_database_is_back(
    private_postgres_cluster, redis_port: int, tmp_path: Path
) -> None:
    """A worker started while PostgreSQL is down says so and waits; its log then never said the database
    had come back (only a second "worker started" line, indistinguishable from a restart)."""
    cluster = private_postgres_cluster
    cluster.psql("CREATE DATABASE mlrepo")
    settings = Settings(data_dir=tmp_path / "data", database_url=cluster.url("mlrepo"))
    await upgrade_async(settings)
    cluster.stop_server()
    redis = redis_server(redis_port)
    log = tmp_path / "worker.log"
    with log.open("w") as log_file:
        worker = subprocess.Popen(
            [MLREPO, "worker"], env=worker_env(settings, redis_port), start_new_session=True, stderr=log_file
        )
    try:
        await wait_for(log, "the database cannot be reached")
        cluster.start_server()
        content = await wait_for(log, "worker started: ")
    finally:
        worker.kill()
        worker.wait()
        redis.terminate()
        redis.wait(timeout=10)
    back = [line for line in content.splitlines() if "the database is back after " in line]
    assert len(back) == 1 and content.index(back[0]) < content.index("worker started: "), content


async def test_a_running_worker_says_once_that_its_database_is_lost_and_once_that_it_is_back(
    private_postgres_cluster, redis_port: int, tmp_path: Path
) -> None:
    """PostgreSQL stops under a running, idle worker and starts again: its log said nothing of it (a
    busy worker's jobs each logged warnings of their own, and nothing said the outage was over). Now one
    warning, however many checks fail, and one "back after" line."""
    cluster = private_postgres_cluster
    cluster.psql("CREATE DATABASE mlrepo")
    settings = Settings(data_dir=tmp_path / "data", database_url=cluster.url("mlrepo"))
    await upgrade_async(settings)
    redis = redis_server(redis_port)
    log = tmp_path / "worker.log"
    env = {**worker_env(settings, redis_port), "MLREPO_WORKER_DATABASE_CHECK_S": "0.2"}
    with log.open("w") as log_file:
        worker = subprocess.Popen([MLREPO, "worker"], env=env, start_new_session=True, stderr=log_file)
    try:
        await wait_for(log, "worker started: ")
        cluster.stop_server()
        await wait_for(log, "the database cannot be reached")
        await asyncio.sleep(2)  # ten more checks fail
        cluster.start_server()
        content = await wait_for(log, "the database is back after ")
    finally:
        worker.kill()
        worker.wait()
        redis.terminate()
        redis.wait(timeout=10)
    lost = [line for line in content.splitlines() if "the database cannot be reached" in line]
    back = [line for line in content.splitlines() if "the database is back after " in line]
    assert len(lost) == 1 and "WARNING" in lost[0] and len(back) == 1, content
    assert content.index(lost[0]) < content.index(back[0]), content
