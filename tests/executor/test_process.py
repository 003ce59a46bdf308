"""``run_process``, which runs a sandbox's launcher as a child process: what happens when its run is
cancelled at a bad moment (the sandbox tests cover what it does for a run that goes its way)."""

from __future__ import annotations

import asyncio
import time

import pytest

from executor.runtimes import Limits
from executor.runtimes.process import run_process

# A launcher that starts what keeps its pipes open, and leaves it behind: as a sandbox's launcher does
# whose parent is gone before the sandbox could die with it.
LEAVES_A_CHILD_BEHIND = ["/bin/sh", "-c", "sleep 60 & exit 0"]


async def test_a_run_cancelled_while_its_launcher_starts_ends_at_once() -> None:
    """Cancelled while the launcher was starting, asyncio killed the launcher alone and waited for its
    pipes: a sandbox it had begun kept them open, and the run (its job, the server's shutdown) hung."""
    run = asyncio.create_task(run_process(LEAVES_A_CHILD_BEHIND, b"", Limits(), {"PATH": "/usr/bin:/bin"}))
    await asyncio.sleep(0)  # the run starts the launcher and waits for its pipes
    time.sleep(1.0)  # the loop held: the launcher has left its child behind before the cancel comes
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 10)
