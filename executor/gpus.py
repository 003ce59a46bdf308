"""GPUs for sandboxed runs: which devices a worker hands out, and which device nodes a sandbox needs.

Why this exists: an allocation says *how many* GPUs a job gets (``executor.allocation``) and the queue
sends it to a GPU worker, but a sandbox sees no device unless it is handed one: bubblewrap builds an empty
``/dev`` and Docker adds no GPU without a device request. The worker therefore owns a pool of device
indices, leases a job the number it was allocated for as long as it runs (two jobs never share a device),
and the runtimes expose exactly the leased devices (``Limits.gpus``).

NVIDIA's userspace driver reaches GPU N through ``/dev/nvidiaN`` plus the control nodes below; with only
the leased ``/dev/nvidiaN`` in its ``/dev``, a sandboxed program can open no other GPU (it cannot create
device nodes: no capabilities, no new privileges). The driver libraries come in with ``/usr``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path

from infra.errors import BadInput, Unavailable

DEV_DIR = Path("/dev")
GPU_NODE = re.compile(r"nvidia(\d+)")
# Shared by every GPU: the driver's control device, unified memory (CUDA needs it for any allocation),
# and mode setting where the host has it. Bound only when present.
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
AUTO = "auto"

_leased: ContextVar[tuple[int, ...]] = ContextVar("mlrepo_leased_gpus", default=())


def discover(dev_dir: Path = DEV_DIR) -> tuple[int, ...]:
    """The GPU indices whose device nodes exist on this host, in order."""
    if not dev_dir.is_dir():
        return ()
    found = (GPU_NODE.fullmatch(entry.name) for entry in dev_dir.iterdir())
    return tuple(sorted(int(match.group(1)) for match in found if match))


def parse_devices(spec: str, dev_dir: Path = DEV_DIR) -> tuple[int, ...]:
    """``MLREPO_GPU_DEVICES``: ``auto`` (every GPU on the host), empty (none), or indices ``0,2``."""
    spec = spec.strip()
    if spec.lower() == AUTO:
        return discover(dev_dir)
    indices: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if not part.isdigit():
            raise BadInput(
                f"MLREPO_GPU_DEVICES must be 'auto' or GPU indices such as 0,1; got {spec!r}",
                field="gpu_devices",
            )
        if int(part) not in indices:
            indices.append(int(part))
    return tuple(indices)


def device_nodes(indices: Sequence[int], dev_dir: Path = DEV_DIR) -> list[Path]:
    """The device nodes a sandbox needs for ``indices``: the shared control nodes present on this host,
    then one ``nvidiaN`` per GPU (each must exist: a missing one is a misconfigured worker)."""
    if not indices:
        return []
    nodes = [dev_dir / name for name in CONTROL_NODES if (dev_dir / name).exists()]
    for index in indices:
        node = dev_dir / f"nvidia{index}"
        if not node.exists():
            raise Unavailable(f"GPU {index} was leased but {node} does not exist on this worker")
        nodes.append(node)
    return nodes


def leased_gpus() -> tuple[int, ...]:
    """The GPUs leased to the job this task runs (empty outside a lease)."""
    return _leased.get()


class GpuPool:
    """The GPUs one worker process hands to jobs: each lease takes free devices until the job ends.

    A job that needs more GPUs than the worker has fails at once with the reason; one that needs more
    than are free now waits for a running job to give its devices back. Workers on one host must be given
    disjoint ``MLREPO_GPU_DEVICES``: the pool cannot see another process's leases."""

    def __init__(self, devices: Sequence[int]) -> None:
        self.devices = tuple(devices)
        self._free = list(self.devices)
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def free(self) -> tuple[int, ...]:
        return tuple(self._free)

    @asynccontextmanager
    async def lease(self, count: int) -> AsyncIterator[tuple[int, ...]]:
        """Hold ``count`` devices for the body; ``leased_gpus()`` names them inside it."""
        if count <= 0:
            yield ()
            return
        held = leased_gpus()
        if count <= len(held) and set(held) <= set(self.devices):
            # Nested in a job's lease (a pipeline's step trained as a job of its own, in the same task):
            # it runs on the job's devices. Waiting for free ones would wait for itself.
            yield held[:count]
            return
        if count > len(self.devices):
            raise Unavailable(
                f"this job needs {count} GPU(s) and this worker has {len(self.devices)} "
                f"(MLREPO_GPU_DEVICES); run it on a GPU worker, or ask for resources {{gpu: 0}} to run "
                "it on CPU"
            )
        if self._loop is not asyncio.get_running_loop():  # a Condition serves the loop it was made in
            self._changed, self._loop = asyncio.Condition(), asyncio.get_running_loop()
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._free) >= count)
            taken = tuple(self._free[:count])
            del self._free[:count]
        token = _leased.set(taken)
        changed = self._changed
        try:
            yield taken
        finally:
            _leased.reset(token)
            async with changed:
                self._free = sorted({*self._free, *taken}, key=self.devices.index)
                self._changed.notify_all()


_pools: dict[tuple[int, ...], GpuPool] = {}


def shared_pool(devices: Sequence[int]) -> GpuPool:
    """One pool per device set in this process, so that jobs and publishing's sandbox runs in one API
    process or worker never lease the same GPU twice."""
    key = tuple(devices)
    if key not in _pools:
        _pools[key] = GpuPool(key)
    return _pools[key]
