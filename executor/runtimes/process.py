"""Run a sandbox launcher as a child process: feed stdin, cap stdout/stderr, kill at the deadline.

Shared by runtimes whose sandbox is a local process tree (bwrap). The child is started in its own
session so a kill takes the whole tree with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from executor.runtimes.base import (
    STDERR_KEEP_BYTES,
    Failure,
    FailureKind,
    Limits,
    RunResult,
    StreamCapture,
    explain_exit,
)

READ_CHUNK = 1 << 16
# Starts whose run was cancelled, held until they end: the event loop holds its tasks by weak references.
_CANCELLED_STARTS: set[asyncio.Future[asyncio.subprocess.Process]] = set()


async def run_process(argv: list[str], stdin: bytes, limits: Limits, env: dict[str, str]) -> RunResult:
    started = time.perf_counter()
    try:
        proc = await _spawn(argv, env)
    except OSError as exc:
        return RunResult(b"", b"", None, 0.0, Failure(FailureKind.SANDBOX, f"sandbox did not start: {exc}"))

    out = StreamCapture(limits.max_output_bytes)
    err = StreamCapture(STDERR_KEEP_BYTES, keep_tail=True)
    overflow = asyncio.Event()

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin)
            await proc.stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()

    async def drain(stream: asyncio.StreamReader, capture: StreamCapture) -> None:
        # Read to EOF even past the cap (discarding): asyncio's wait() only returns once the pipes are
        # closed, and a paused, unread pipe never sees its EOF.
        while chunk := await stream.read(READ_CHUNK):
            if overflow.is_set():
                continue
            if not capture.add(chunk) or capture.size > limits.max_output_bytes:
                overflow.set()

    assert proc.stdout is not None and proc.stderr is not None
    tasks = [
        asyncio.ensure_future(feed()),
        asyncio.ensure_future(drain(proc.stdout, out)),
        asyncio.ensure_future(drain(proc.stderr, err)),
    ]
    waiter = asyncio.ensure_future(proc.wait())
    overflow_waiter = asyncio.ensure_future(overflow.wait())
    failure: Failure | None = None
    try:
        done, _ = await asyncio.wait(
            {waiter, overflow_waiter}, timeout=limits.deadline_s, return_when=asyncio.FIRST_COMPLETED
        )
        if overflow_waiter in done:
            failure = Failure(
                FailureKind.OUTPUT_LIMIT, f"output exceeded the limit of {limits.max_output_bytes} bytes"
            )
        elif waiter not in done:
            failure = Failure(FailureKind.TIMEOUT, limits.timeout_reason())
    finally:
        if proc.returncode is None:
            kill_tree(proc.pid)
        await waiter
        overflow_waiter.cancel()
        # Let the readers pick up what was already written, but never wait on a stuck pipe for long.
        _, pending = await asyncio.wait(tasks, timeout=1.0)
        for task in pending:
            task.cancel()
    exit_code = proc.returncode
    if failure is None:
        failure = explain_exit(exit_code, err.value(), limits)
    return RunResult(out.value(), err.value(), exit_code, time.perf_counter() - started, failure)


async def _spawn(argv: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start the launcher in a session of its own. A cancel that comes while it starts does not stop the
    start: the launcher's session is killed once it has started. (Cancelled there, asyncio kills the
    launcher alone, then waits for its pipes to close; the sandbox it had begun to start, orphaned before
    it could die with its parent, kept them open, and the cancelled run hung for good, its cgroup with it.)"""
    spawning = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    )
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        _CANCELLED_STARTS.add(spawning)
        spawning.add_done_callback(_kill_spawned)
        raise


def _kill_spawned(spawning: asyncio.Future[asyncio.subprocess.Process]) -> None:
    _CANCELLED_STARTS.discard(spawning)
    if not spawning.cancelled() and spawning.exception() is None:
        kill_tree(spawning.result().pid)


def kill_tree(pid: int) -> None:
    """SIGKILL the child's whole session (the sandbox launcher and everything it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
