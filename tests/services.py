"""What every test area needs to reach real services: ``require_service``, ``IN_CI``, ``free_port`` and
``serve_in_background`` (a real uvicorn), ``long_running`` (a real arq worker for the length of a block).

A plain module rather than conftest code because every conftest is a module named ``conftest``: area
conftests and test modules cannot import from the root one. Import it as ``tests.services`` (pyproject
puts the project root on ``sys.path``; ``tests`` is a namespace package).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
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
