"""What publishing needs from a sandbox, stated here so the catalog does not import the executor.

Dependencies point one way (executor → catalog), yet publishing must run producers' code (contract probe,
unit tests, re-verification). So the catalog states the interface and the executor provides it
(``executor.publish_sandbox.ExecutorSandbox`` wraps the docker and bwrap runtimes); the worker and API
wire one in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class RunTarget:
    """A code package directory (run with bwrap or in its image) and/or a container image."""

    command: tuple[str, ...]
    code_dir: Path | None = None
    image: str | None = None


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 30.0
    memory_mb: int = 512
    cpus: float = 1.0
    # GPUs the listing suggests: the executor lends what its worker has, up to this many.
    gpus: int = 0


@dataclass(frozen=True)
class SandboxOutcome:
    stdout: bytes
    stderr: bytes
    ok: bool
    reason: str | None  # why the run failed (timeout, memory, crash, ...) when not ok
    runtime: str
    duration_s: float


class Sandbox(Protocol):
    """Runs ``target.command`` once, with no network, on ``stdin``; never raises for the program's faults."""

    def can_run_code(self) -> bool: ...

    def can_run_images(self) -> bool: ...

    def gpus_available(self) -> int:
        """How many GPUs this process can lend a run (busy or not): 0 where it has none."""
        ...

    async def run(self, target: RunTarget, stdin: bytes, limits: SandboxLimits) -> SandboxOutcome: ...
