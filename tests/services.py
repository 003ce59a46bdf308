"""What every test area needs to reach real services: ``require_service``, ``IN_CI``, ``free_port`` and
``serve_in_background`` (a real uvicorn), ``long_running`` (a real arq worker for the length of a block),
``postgres_bin_dir`` (where the installed PostgreSQL server's initdb and pg_ctl are).

A plain module rather than conftest code because every conftest is a module named ``conftest``: area
conftests and test modules cannot import from the root one. Import it as ``tests.services`` (pyproject
puts the project root on ``sys.path``; ``tests`` is a namespace package).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_service(name: str, ok: bool, why: str = "") -> None:
    """Skip locally, fail in CI: a missing service must never turn CI green."""
    if ok:
        return
    message = f"{name} is not available: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required services must run)")
    pytest.skip(message)


POSTGRES_ROOT = Path("/usr/lib/postgresql")


def postgres_bin_dir(root: Path = POSTGRES_ROOT) -> Path | None:
    """The directory of the PostgreSQL server programs (initdb, pg_ctl), of whatever version is installed.

    ``scripts/test-services.sh`` installs the distribution's ``postgresql``, whose major version varies
    (15 on Debian 12, 16 on Ubuntu 24.04, 17 on Debian 13): ``MLREPO_TEST_PG_BIN`` if set, else the newest
    ``root/<version>/bin`` holding both (Debian, Ubuntu), else the directory of ``pg_ctl`` on PATH (Fedora,
    Homebrew); None when there is no server."""
    override = os.environ.get("MLREPO_TEST_PG_BIN")
    if override:
        return Path(override)
    installed = [version / "bin" for version in root.glob("*") if _has_server(version / "bin")]
    if installed:
        return max(installed, key=lambda bin_dir: [int(n) for n in re.findall(r"\d+", bin_dir.parent.name)])
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is not None and _has_server(Path(pg_ctl).parent):
        return Path(pg_ctl).parent
    return None


def _has_server(bin_dir: Path) -> bool:
    return (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file()


def free_port() -> int:
    """A TCP port nothing listens on right now (for throwaway servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serve_in_background(app: Any, **options: Any) -> AsyncIterator[str]:
    """Serve ``app`` with a real uvicorn on a free local port while the block runs; yields ``host:port``.

    Websocket subscriptions need a real server (the ASGI test transport speaks HTTP only)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def run_mlrepo(data_dir: Path, *args: str, timeout: float = 180) -> tuple[int, str, str]:
    """Run the installed ``mlrepo`` CLI as a user would: its own process, on ``data_dir``'s SQLite
    catalog, bwrap sandboxes and in-process jobs (no database or Redis URL leaks in from the caller)."""
    env = {**os.environ, "MLREPO_DATA_DIR": str(data_dir), "MLREPO_RUNTIME": "bwrap"}
    env.pop("MLREPO_DATABASE_URL", None)
    env.pop("MLREPO_REDIS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "mlrepo"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def long_running(worker: Any) -> AsyncIterator[Any]:
    """``worker`` (not burst) runs as a task of this loop for the block, then stops cleanly."""
    running = asyncio.create_task(worker.main())
    try:
        yield worker
    finally:
        # A job's row turns final before arq writes its own result to Redis: let that bookkeeping end
        # first, or cancelling main() cancels it and close() re-raises the CancelledError.
        for _ in range(100):
            if all(task.done() for task in worker.tasks.values()):
                break
            await asyncio.sleep(0.05)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        with contextlib.suppress(asyncio.CancelledError):
            await worker.close()
