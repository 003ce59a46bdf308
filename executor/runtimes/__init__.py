"""Sandbox runtimes behind one interface, chosen by ``MLREPO_RUNTIME`` (docker | bwrap | auto)."""

from __future__ import annotations

from executor.runtimes.base import Failure, FailureKind, Limits, Package, RunRequest, RunResult, Runtime
from executor.runtimes.bwrap import BwrapRuntime
from executor.runtimes.docker import DockerRuntime
from infra.errors import Unavailable
from infra.settings import Settings

__all__ = [
    "BwrapRuntime",
    "DockerRuntime",
    "Failure",
    "FailureKind",
    "Limits",
    "Package",
    "RunRequest",
    "RunResult",
    "Runtime",
    "RuntimeSelector",
]


class RuntimeSelector:
    """Picks the runtime for a package: the configured one, or under ``auto`` docker when the engine
    answers and the package has an image, else bwrap when the package has code."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.runtime
        self.docker = DockerRuntime(settings.docker_host)
        self.bwrap = BwrapRuntime(
            work_dir=settings.sandbox_work_dir, runtime_root=settings.bwrap_runtime_root
        )

    def select(self, package: Package) -> Runtime:
        if self.mode == "docker":
            candidates: list[Runtime] = [self.docker]
        elif self.mode == "bwrap":
            candidates = [self.bwrap]
        else:
            candidates = [self.docker, self.bwrap]
        for runtime in candidates:
            if runtime.can_run(package):
                return runtime
        wanted = "an image and a running Docker engine" if self.mode == "docker" else "a runnable package"
        raise Unavailable(
            f"no sandbox runtime can run this package (MLREPO_RUNTIME={self.mode}; needs {wanted}: "
            f"image={package.image!r}, code={'yes' if package.code_dir else 'no'})"
        )
