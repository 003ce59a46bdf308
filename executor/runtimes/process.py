"""Run a sandbox launcher as a child process: feed stdin, cap stdout/stderr, kill at the deadline.

Shared by runtimes whose sandbox is a local process tree (bwrap). The child is started in its own
session so a kill takes the whole tree with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

logger = logging.getLogger("mlrepo.sandbox")
READ_CHUNK = 1 << 16
# How long a run cancelled while its launcher starts waits for that launcher to exit once killed, and how
# often it looks: SIGKILL ends it within milliseconds; the bound only keeps a stuck kernel from holding
# the cancel for good.
KILL_WAIT_S = 10.0
KILL_POLL_S = 0.005
# Kills of launchers whose run was cancelled while they started, held until done: the event loop holds its
# tasks by weak references.
_CANCELLED_STARTS: set[asyncio.Future[None]] = set()


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
    it could die with its parent, kept them open, and the cancelled run hung for good, its cgroup with it.)

    The cancel is passed on only once that launcher has exited (``_killed``): the caller holds the run's
    sandbox uid lease until then (``executor.uid_leases``), and released earlier, the uid went to another
    run while the half-started launcher could still run as it. Another cancel meanwhile does not cut the
    wait short; the wait is for a SIGKILLed process's exit, bounded by ``KILL_WAIT_S``."""
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
        killing = asyncio.ensure_future(_killed(spawning))
        _CANCELLED_STARTS.add(killing)
        killing.add_done_callback(_CANCELLED_STARTS.discard)
        while not killing.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(killing)
        raise


async def _killed(spawning: asyncio.Future[asyncio.subprocess.Process]) -> None:
    """Once the launcher has started, its session killed and the launcher exited (reaped: its pid gone)."""
    try:
        proc = await spawning
    except Exception:  # it never started (``run_process`` would have reported why)
        return
    kill_tree(proc.pid)
    deadline = time.monotonic() + KILL_WAIT_S
    # Its exit, not ``proc.wait()``: that waits for the pipes too, which an orphaned sandbox may hold.
    while proc.returncode is None:
        if time.monotonic() >= deadline:
            logger.warning("sandbox launcher %d did not exit %g s after SIGKILL", proc.pid, KILL_WAIT_S)
            return
        await asyncio.sleep(KILL_POLL_S)


def kill_tree(pid: int) -> None:
    """SIGKILL the child's whole session (the sandbox launcher and everything it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
