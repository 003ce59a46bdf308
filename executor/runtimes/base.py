"""What every sandbox runtime shares: the run request, its limits, its result, and why it failed.

Why one interface: the job code (batching, output filtering, training) must not care whether a producer's
code runs in a Docker container or a bubblewrap sandbox. Both runtimes lay out the sandbox the same way:

    /app      the package copy (read-only), the working directory
    /data     the requester's input data (read-only), only when given
    /output   a size-capped tmpfs; for training it is tarred back to the host after the entrypoint exits
    /tmp      a size-capped tmpfs

and both speak the invocation contract of architecture.md §4 on stdin/stdout.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from infra.text import storable_text

APP_DIR = "/app"
DATA_DIR = "/data"
OUTPUT_DIR = "/output"
STDERR_KEEP_BYTES = 64 << 10

# The only environment a sandboxed program sees: nothing of the worker's (tokens, URLs, keys) leaks in.
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    # Not PYTHONUNBUFFERED: a write (and a wake-up of the reader) per record costs more than the model on
    # small inputs; block-buffered answers of a killed call are simply retried by batch halving.
}


@dataclass(frozen=True)
class Limits:
    """Hard limits of one sandbox run; the runtime kills the run as soon as one is crossed."""

    timeout_s: float = 60.0
    # Seconds added to ``timeout_s`` for the sandbox to start (ours to pay, not the producer's): the run is
    # killed at ``deadline_s`` but reported against the producer's own limit (``timeout_reason``).
    start_allowance_s: float = 0.0
    memory_mb: int = 512
    cpus: float = 1.0
    pids: int = 64
    max_output_bytes: int = 64 << 20  # stdout (results, or the training output tarball)
    tmpfs_mb: int = 64
    output_dir_mb: int = 256
    max_file_mb: int = 256
    # GPU indices leased to this run (``executor.gpus``): exactly these devices appear in the sandbox.
    gpus: tuple[int, ...] = ()

    @property
    def deadline_s(self) -> float:
        """Seconds a run may take before it is killed: the limit plus the start allowance."""
        return self.timeout_s + self.start_allowance_s

    def timeout_reason(self) -> str:
        """What a killed run is told: the producer's limit, and the allowance apart from it (a listing
        whose limit is 2 s read "timed out after 4 s")."""
        if not self.start_allowance_s:
            return f"timed out after {self.timeout_s:g} s"
        return (
            f"timed out after the listing's limit of {self.timeout_s:g} s per call "
            f"(plus {self.start_allowance_s:g} s allowed for the sandbox to start)"
        )

    def thread_env(self) -> dict[str, str]:
        """BLAS/OpenMP thread pools sized to the CPU share, so numpy neither oversubscribes nor
        reserves per-core arenas that blow an address-space limit."""
        n = str(max(1, int(self.cpus)))
        return {"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}


@dataclass(frozen=True)
class Package:
    """What to run: a container image (docker) and/or an unpacked code package directory (bwrap)."""

    entrypoint: tuple[str, ...]
    image: str | None = None
    code_dir: Path | None = None
    train_entrypoint: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RunRequest:
    command: tuple[str, ...]
    stdin: bytes = b""
    data_dir: Path | None = None
    collect_output_dir: bool = False  # training: /output comes back as a tar stream on stdout
    labels: dict[str, str] = field(default_factory=dict)


class FailureKind(StrEnum):
    TIMEOUT = "timeout"
    MEMORY = "memory"
    OUTPUT_LIMIT = "output_limit"
    CPU_TIME = "cpu_time"
    FILE_SIZE = "file_size"
    DISK_FULL = "disk_full"
    PROCESSES = "processes"
    CRASHED = "crashed"
    SANDBOX = "sandbox"  # the sandbox itself could not start


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    reason: str


@dataclass
class RunResult:
    stdout: bytes
    stderr: bytes
    exit_code: int | None
    duration_s: float
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class PreparedRun(Protocol):
    """A fresh sandbox copy made ready before its input is known (``Runtime.prepare``).

    ``feed`` runs it on ``stdin`` and returns what ``Runtime.run`` would; the limits' clock (timeout)
    starts when the input is fed, not while the copy waited. ``discard`` removes a copy never fed. Each
    is used at most once: a prepared copy is still one copy per call."""

    async def feed(self, stdin: bytes) -> RunResult: ...

    async def discard(self) -> None: ...


class Runtime(Protocol):
    """Runs one command in a fresh, throwaway copy of a package, under ``limits``."""

    name: str

    async def run(self, package: Package, request: RunRequest, limits: Limits) -> RunResult: ...

    def prepare(self, package: Package, request: RunRequest, limits: Limits) -> PreparedRun:
        """A copy for ``request`` (its ``stdin`` is ignored) that ``feed`` runs later."""
        ...

    def can_run(self, package: Package) -> bool: ...


class DeferredRun:
    """``PreparedRun`` for a runtime whose copies start fast (bwrap, ~20 ms): nothing happens before
    ``feed``, which is a plain ``run``."""

    def __init__(self, runtime: Runtime, package: Package, request: RunRequest, limits: Limits) -> None:
        self.runtime, self.package, self.request, self.limits = runtime, package, request, limits

    async def feed(self, stdin: bytes) -> RunResult:
        return await self.runtime.run(self.package, replace(self.request, stdin=stdin), self.limits)

    async def discard(self) -> None:
        return None


def collect_output_command(command: tuple[str, ...]) -> tuple[str, ...]:
    """Wrap a training command so its stdout goes to stderr and, once it succeeds, ``/output`` is
    streamed back as a tar archive on stdout (tmpfs mounts vanish with the sandbox, so this is how the
    size-capped output directory leaves it)."""
    # Members are listed relative to /output ("model.bin", not "./model.bin"), so the archive passes the
    # same safety checks as a producer's upload.
    listing = f"find {OUTPUT_DIR} -mindepth 1 -printf '%P\\n'"
    script = f'"$@" 1>&2 && {listing} | exec tar -C {OUTPUT_DIR} --no-recursion -cf - -T -'
    return ("/bin/sh", "-c", script, "sh", *command)


_STDERR_HINTS: tuple[tuple[str, FailureKind, str], ...] = (
    ("MemoryError", FailureKind.MEMORY, "memory limit of {memory_mb} MB exceeded"),
    ("Cannot allocate memory", FailureKind.MEMORY, "memory limit of {memory_mb} MB exceeded"),
    ("No space left on device", FailureKind.DISK_FULL, "disk space exhausted (tmpfs limit {tmpfs_mb} MB)"),
    ("File too large", FailureKind.FILE_SIZE, "file size limit of {max_file_mb} MB exceeded"),
    ("Resource temporarily unavailable", FailureKind.PROCESSES, "process limit of {pids} reached"),
)


def explain_exit(exit_code: int | None, stderr: bytes, limits: Limits) -> Failure | None:
    """Turn an exit status and the tail of stderr into a reason a requester can act on."""
    if exit_code == 0:
        return None
    signo = -exit_code if exit_code is not None and exit_code < 0 else None
    if exit_code is not None and exit_code > 128:
        signo = exit_code - 128
    fmt = {
        "memory_mb": limits.memory_mb,
        "tmpfs_mb": limits.tmpfs_mb,
        "max_file_mb": limits.max_file_mb,
        "pids": limits.pids,
    }
    if signo == signal.SIGXCPU:
        return Failure(FailureKind.CPU_TIME, f"CPU time limit exceeded (signal {signo})")
    if signo == signal.SIGXFSZ:
        return Failure(FailureKind.FILE_SIZE, f"file size limit of {limits.max_file_mb} MB exceeded")
    tail = storable_text(stderr[-4096:].decode("utf-8", "replace"))
    for needle, kind, template in _STDERR_HINTS:
        if needle in tail:
            return Failure(kind, f"{template.format(**fmt)}: {last_line(tail)}")
    if signo == signal.SIGKILL:
        return Failure(FailureKind.CRASHED, "killed (signal 9), likely by the memory limit")
    if signo is not None:
        return Failure(FailureKind.CRASHED, f"killed by signal {signo}: {last_line(tail)}")
    return Failure(FailureKind.CRASHED, f"exited with status {exit_code}: {last_line(tail)}")


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return storable_text(lines[-1][:500]) if lines else "(no error output)"


class StreamCapture:
    """Accumulates a stream up to a cap (stdout) or keeps only its tail (stderr)."""

    def __init__(self, cap: int, keep_tail: bool = False) -> None:
        self.cap = cap
        self.keep_tail = keep_tail
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflowed = False

    def add(self, chunk: bytes) -> bool:
        """Returns False once the cap is crossed (the caller then kills the run)."""
        self.size += len(chunk)
        if self.keep_tail:
            self.chunks.append(chunk)
            data = b"".join(self.chunks)
            self.chunks = [data[-self.cap :]]
            return True
        if self.size > self.cap:
            self.overflowed = True
            return False
        self.chunks.append(chunk)
        return True

    def value(self) -> bytes:
        return b"".join(self.chunks)
