"""The executor's runtimes offered to publishing through ``catalog.publishing.sandbox.Sandbox``.

Publishing (in the catalog) probes packages and images and runs producers' unit tests, but may not import
the executor; this adapter is what the worker and the API hand it. Code packages run under bubblewrap
(fast to start) unless ``MLREPO_RUNTIME=docker``; images run in Docker. A listing that suggests GPUs is
lent up to that many of this process's (``executor.gpus``), and is verified without one where it has none:
the probe checks the invocation contract, which a program must keep on whatever hardware it is given.
"""

from __future__ import annotations

from catalog.publishing.sandbox import RunTarget, SandboxLimits, SandboxOutcome
from executor.gpus import GpuPool, parse_devices, shared_pool
from executor.runtimes.base import Limits, Package, RunRequest, RunResult
from executor.runtimes.bwrap import BwrapRuntime
from executor.runtimes.docker import DockerRuntime
from infra.settings import Settings


class ExecutorSandbox:
    def __init__(self, settings: Settings, gpus: GpuPool | None = None) -> None:
        self.mode = settings.runtime
        self.bwrap = BwrapRuntime(
            work_dir=settings.data_dir / "sandbox",
            runtime_root=settings.bwrap_runtime_root,  # the interpreter jobs will get: verify on it
            cgroups=settings.sandbox_cgroups,
            uid_base=settings.sandbox_uid_base,
            uid_count=settings.sandbox_uid_count,
            uid_lease_dir=settings.sandbox_uid_lease_dir,
        )
        self.docker = DockerRuntime(settings.docker_host)
        self.gpus = gpus or shared_pool(parse_devices(settings.gpu_devices))

    def can_run_code(self) -> bool:
        return self.mode != "docker" and BwrapRuntime.available()

    def can_run_images(self) -> bool:
        return self.mode != "bwrap" and self.docker.available()

    def gpus_available(self) -> int:
        return len(self.gpus.devices)

    async def run(self, target: RunTarget, stdin: bytes, limits: SandboxLimits) -> SandboxOutcome:
        package = Package(entrypoint=target.command, image=target.image, code_dir=target.code_dir)
        runtime: BwrapRuntime | DockerRuntime
        if target.code_dir is not None and self.can_run_code():
            runtime = self.bwrap
        elif target.image is not None and self.can_run_images():
            runtime = self.docker
        else:
            return SandboxOutcome(b"", b"", False, "no sandbox runtime can run this here", "none", 0.0)
        request = RunRequest(command=target.command, stdin=stdin, labels={"mlrepo.purpose": "publish"})
        async with self.gpus.lease(min(limits.gpus, len(self.gpus.devices))) as gpus:
            result: RunResult = await runtime.run(
                package,
                request,
                Limits(timeout_s=limits.timeout_s, memory_mb=limits.memory_mb, cpus=limits.cpus, gpus=gpus),
            )
        reason = None if result.failure is None else f"{result.failure.kind.value}: {result.failure.reason}"
        return SandboxOutcome(
            result.stdout, result.stderr, result.ok, reason, runtime.name, result.duration_s
        )
