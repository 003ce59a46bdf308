"""Docker runtime: every run is a fresh container created from the published image — a copy.

The original image is never run writable and never modified: the container's root filesystem is
read-only, the only writable places are size-capped tmpfs mounts, and the container is removed after the
run. Flags follow architecture.md §5 (seen working with the engine started by scripts/start-dockerd.sh):
no network, all capabilities dropped, no-new-privileges, pids/memory/cpu limits, uid 65534, inputs bound
read-only. Container logs are disabled (``log_config none``): a program printing gigabytes must not fill
the engine's disk with json logs; its output comes only through the attach stream, capped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from docker.types import DeviceRequest, LogConfig, Ulimit

from executor.runtimes.base import (
    APP_DIR,
    DATA_DIR,
    OUTPUT_DIR,
    SANDBOX_ENV,
    STDERR_KEEP_BYTES,
    Failure,
    FailureKind,
    Limits,
    Package,
    RunRequest,
    RunResult,
    StreamCapture,
    collect_output_command,
    explain_exit,
)
from infra.docker_engine import docker_base_url, docker_client

logger = logging.getLogger("mlrepo.executor.docker")

SANDBOX_USER = "65534:65534"
RUN_LABEL = "mlrepo.sandbox"
STOP_POLL_S = 0.25  # how soon a cancelled run notices
MIN_CPUS = 0.01  # the smallest --cpus the engine takes
_STDOUT, _STDERR = 1, 2


class DockerRuntime:
    name = "docker"

    def __init__(self, docker_host: str | None = None) -> None:
        self.docker_host = docker_host
        self._client: docker.DockerClient | None = None
        self._engine_cpus: int | None = None

    @property
    def base_url(self) -> str:
        return docker_base_url(self.docker_host)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker_client(self.docker_host, timeout=60)
        return self._client

    def available(self) -> bool:
        try:
            return bool(self.client.ping())
        except (DockerException, OSError):
            return False

    def nano_cpus(self, cpus: float) -> int:
        """A run's CPU share as the engine takes it. The engine refuses a share above its CPU count
        ("Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available") or below 0.01: a
        listing suggesting 4 cores, within the default quota, failed every run on a 2-core worker. Above
        the engine's count the run gets all of it, which is what it would get; below the floor it gets
        the floor (0 nano-CPUs, what a tiny share rounded to, means no limit at all)."""
        share = max(MIN_CPUS, cpus)
        if self._engine_cpus is None:
            try:
                self._engine_cpus = int(self.client.info()["NCPU"])
            except (DockerException, OSError, KeyError, TypeError, ValueError):
                return int(share * 1e9)  # the create call will tell what the engine thinks
        return int(min(share, self._engine_cpus) * 1e9)

    def can_run(self, package: Package) -> bool:
        return package.image is not None and self.available()

    async def run(self, package: Package, request: RunRequest, limits: Limits) -> RunResult:
        return await self.prepare(package, request, limits).feed(request.stdin)

    def prepare(self, package: Package, request: RunRequest, limits: Limits) -> PreparedContainer:
        """Create and start the container now, on a thread; it waits for its input on stdin.

        Why: a fresh container costs ~0.2 s to create and start, and the entrypoint as much again to
        import its libraries, on every scoring call. Prepared while the previous batch runs, the next
        call finds its copy already waiting (``executor.inference``). Still one container per call."""
        return PreparedContainer(self, package.image, request, limits)

    def container_options(
        self, request: RunRequest, limits: Limits, image_volumes: Iterable[str] = ()
    ) -> dict[str, Any]:
        """``image_volumes``: the paths the image declares as VOLUMEs (``image_volumes``)."""
        volumes = {}
        if request.data_dir is not None:
            volumes[str(request.data_dir)] = {"bind": DATA_DIR, "mode": "ro"}
        file_limit = limits.max_file_mb << 20
        tmpfs = {
            "/tmp": f"rw,nosuid,nodev,size={limits.tmpfs_mb}m,mode=1777",
            OUTPUT_DIR: f"rw,nosuid,nodev,size={limits.output_dir_mb}m,mode=1777",
        }
        # A VOLUME of the image was an anonymous volume on the engine's disk: writable past every size
        # limit, and left behind by the container's removal. It is an empty tmpfs capped like /tmp now
        # (the engine makes no volume where something is mounted); where we mount something, ours wins.
        taken = {*tmpfs, *(DATA_DIR for _ in volumes)}
        for path in sorted(set(image_volumes) - taken):
            tmpfs[path] = tmpfs["/tmp"]
        options: dict[str, Any] = {
            "stdin_open": True,
            "tty": False,
            "network_mode": "none",
            "read_only": True,
            "tmpfs": tmpfs,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "shm_size": f"{limits.tmpfs_mb}m",  # /dev/shm capped like /tmp (the engine's default: 64 MB)
            "pids_limit": limits.pids,
            "mem_limit": f"{limits.memory_mb}m",
            "memswap_limit": f"{limits.memory_mb}m",
            "nano_cpus": self.nano_cpus(limits.cpus),
            "ulimits": [
                Ulimit(name="fsize", soft=file_limit, hard=file_limit),
                Ulimit(name="core", soft=0, hard=0),
            ],
            "user": SANDBOX_USER,
            "working_dir": APP_DIR,
            "environment": {**SANDBOX_ENV, **limits.thread_env()},
            "volumes": volumes,
            "log_config": LogConfig(type="none"),
            "labels": {RUN_LABEL: "1", **request.labels},
            "hostname": "sandbox",
        }
        if limits.gpus:  # the leased GPUs only (``executor.gpus``); needs the NVIDIA container toolkit
            options["device_requests"] = gpu_requests(limits.gpus)
        return options

    def remove_containers(self, label: str, value: str) -> int:
        """Remove the containers of a run whose worker died (nothing else would ever stop them)."""
        removed = 0
        try:
            found = self.client.containers.list(all=True, filters={"label": f"{label}={value}"})
        except (DockerException, OSError):
            return 0
        for container in found:
            with contextlib.suppress(DockerException, OSError):
                container.remove(force=True, v=True)
                removed += 1
        return removed

    def image_volumes(self, image: str) -> list[str]:
        """The paths the image declares as VOLUMEs (an image inspect, a few ms on the local engine)."""
        config = self.client.images.get(image).attrs.get("Config") or {}
        return list(config.get("Volumes") or {})

    def _start_blocking(self, image: str, request: RunRequest, limits: Limits) -> _Started | RunResult:
        """A created, attached and started container (output is held until read), or the failure."""
        begun = time.perf_counter()
        command = collect_output_command(request.command) if request.collect_output_dir else request.command
        try:
            options = self.container_options(request, limits, self.image_volumes(image))
            container = self.client.containers.create(image, list(command), **options)
        except ImageNotFound:
            return _sandbox_failure(begun, f"image {image} is not available to the engine")
        except (APIError, DockerException, OSError) as exc:
            return _engine_failure(begun, "container could not be created", exc)
        try:
            attached = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        except (APIError, DockerException, OSError) as exc:
            _remove(container)
            return _engine_failure(begun, "container could not be attached", exc)
        started = _Started(container, attached, attached._sock)
        try:
            container.start()
        except (APIError, DockerException) as exc:
            started.close()
            return _engine_failure(begun, "container did not start", exc)
        return started

    def _finish_blocking(
        self, started: _Started, stdin: bytes, limits: Limits, stop: threading.Event
    ) -> RunResult:
        """Feed ``stdin`` and collect the run; the timeout counts from here. The container is removed."""
        begun = time.perf_counter()
        container, raw = started.container, started.raw
        try:
            writer = threading.Thread(target=_feed, args=(raw, stdin), daemon=True)
            writer.start()
            out = StreamCapture(limits.max_output_bytes)
            err = StreamCapture(STDERR_KEEP_BYTES, keep_tail=True)
            deadline = begun + limits.deadline_s
            failure = _read_frames(raw, out, err, deadline, limits, stop)
            # Close our end first: a container blocked writing to an unread attach stream cannot be killed.
            _hang_up(started.attached, raw)
            if failure is not None:
                with contextlib.suppress(DockerException, OSError):
                    container.kill()
            try:
                status = container.wait(timeout=max(5.0, deadline - time.perf_counter()))
                exit_code: int | None = int(status.get("StatusCode", -1))
            except (DockerException, OSError, ValueError):
                with contextlib.suppress(DockerException, OSError):
                    container.kill()
                exit_code = None
                failure = failure or Failure(FailureKind.TIMEOUT, limits.timeout_reason())
            if failure is None:
                container.reload()
                if container.attrs.get("State", {}).get("OOMKilled"):
                    failure = Failure(FailureKind.MEMORY, f"memory limit of {limits.memory_mb} MB exceeded")
                else:
                    failure = explain_exit(exit_code, err.value(), limits)
            return RunResult(out.value(), err.value(), exit_code, time.perf_counter() - begun, failure)
        finally:
            started.close()


class _Started:
    """A running container attached on one socket: its stdin not yet written, its output not yet read."""

    def __init__(self, container: Any, attached: Any, raw: socket.socket) -> None:
        self.container, self.attached, self.raw = container, attached, raw

    def close(self) -> None:
        """Hang up and remove the container, whatever state it is in (idempotent)."""
        _hang_up(self.attached, self.raw)
        _remove(self.container)


class PreparedContainer:
    """``PreparedRun`` for docker: the container is created and started on a thread at once."""

    def __init__(
        self, runtime: DockerRuntime, image: str | None, request: RunRequest, limits: Limits
    ) -> None:
        self._runtime, self._limits = runtime, limits
        self._start: asyncio.Future[_Started | RunResult] | None = None
        if image is None:
            self._failure: RunResult | None = RunResult(
                b"", b"", None, 0.0, Failure(FailureKind.SANDBOX, "no container image to run")
            )
        else:
            self._failure = None
            self._start = asyncio.ensure_future(
                asyncio.to_thread(runtime._start_blocking, image, request, limits)
            )

    async def feed(self, stdin: bytes) -> RunResult:
        if self._start is None:
            assert self._failure is not None
            return self._failure
        try:
            started = await asyncio.shield(self._start)
        except asyncio.CancelledError:
            await asyncio.shield(self.discard())
            raise
        if isinstance(started, RunResult):
            return started
        stop = threading.Event()
        work = asyncio.ensure_future(
            asyncio.to_thread(self._runtime._finish_blocking, started, stdin, self._limits, stop)
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # The job was cancelled: kill the container now instead of at its deadline, and wait for it
            # to be removed so nothing outlives the run.
            stop.set()
            with contextlib.suppress(Exception):
                await work
            raise

    async def discard(self) -> None:
        """Remove the container unused (once its start has finished, so that it cannot outlive this)."""
        if self._start is None:
            return
        with contextlib.suppress(Exception):
            started = await self._start
            if isinstance(started, _Started):
                await asyncio.to_thread(started.close)


def gpu_requests(gpus: tuple[int, ...]) -> list[DeviceRequest]:
    """Docker's form of "these GPUs and no other": what ``docker run --gpus device=0,2`` sends."""
    return [DeviceRequest(device_ids=[str(index) for index in gpus], capabilities=[["gpu"]])]


def _remove(container: Any) -> None:
    """Remove the container and its anonymous volumes (``v``)."""
    with contextlib.suppress(DockerException, OSError):
        container.remove(force=True, v=True)


def _hang_up(attached: Any, raw: socket.socket) -> None:
    """Shut the connection down for real (``close`` alone waits for every reference to the socket)."""
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        attached.close()
    raw.close()


def _feed(raw: socket.socket, data: bytes) -> None:
    """Write stdin, then half-close so the entrypoint sees EOF (``stdin_once`` closes its stdin)."""
    with contextlib.suppress(OSError):
        raw.sendall(data)
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_WR)


def _read_frames(
    raw: socket.socket,
    out: StreamCapture,
    err: StreamCapture,
    deadline: float,
    limits: Limits,
    stop: threading.Event,
) -> Failure | None:
    """Demultiplex the attach stream (8-byte frame headers) until EOF, the deadline, the cap or ``stop``."""
    buffer = b""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return Failure(FailureKind.TIMEOUT, limits.timeout_reason())
        if stop.is_set():
            return Failure(FailureKind.SANDBOX, "stopped: the job was cancelled")
        raw.settimeout(min(remaining, STOP_POLL_S))
        try:
            chunk = raw.recv(1 << 16)
        except TimeoutError:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        buffer += chunk
        while len(buffer) >= 8:
            stream, size = buffer[0], struct.unpack(">I", buffer[4:8])[0]
            if len(buffer) < 8 + size:
                break
            payload, buffer = buffer[8 : 8 + size], buffer[8 + size :]
            capture = err if stream == _STDERR else out
            if not capture.add(payload) or capture.size > limits.max_output_bytes:
                return Failure(
                    FailureKind.OUTPUT_LIMIT, f"output exceeded the limit of {limits.max_output_bytes} bytes"
                )


# What the OCI runtime says when the image's own command cannot be executed: about the image, not the
# host, so the run's reason may quote it (a producer's image whose command is missing was told only
# "the container engine refused it (the worker's log says why)", a log they cannot read).
_UNRUNNABLE_COMMAND = re.compile(
    r'exec: "[^"\n]{1,200}": '
    r"(?:executable file not found in \$PATH|no such file or directory|permission denied)"
)


def _engine_failure(started: float, what: str, exc: BaseException) -> RunResult:
    """The engine's own text names its socket, its API and host paths: it goes to the operator's log,
    and the run's reason, which the job's owner reads, says what failed."""
    logger.warning("%s: %s", what, exc)
    unrunnable = _UNRUNNABLE_COMMAND.search(str(exc))
    if unrunnable is not None:
        return _sandbox_failure(started, f"{what}: the image cannot run its command: {unrunnable.group(0)}")
    return _sandbox_failure(started, f"{what}: the container engine refused it (the worker's log says why)")


def _sandbox_failure(started: float, reason: str) -> RunResult:
    return RunResult(b"", b"", None, time.perf_counter() - started, Failure(FailureKind.SANDBOX, reason))
