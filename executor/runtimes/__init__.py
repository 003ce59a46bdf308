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
            work_dir=settings.sandbox_work_dir,
            runtime_root=settings.bwrap_runtime_root,
            cgroups=settings.sandbox_cgroups,
            uid_base=settings.sandbox_uid_base,
            uid_count=settings.sandbox_uid_count,
            uid_lease_dir=settings.sandbox_uid_lease_dir,
        )

    def select(self, package: Package, has_code: bool | None = None) -> Runtime:
        """``has_code`` says a package can be checked out for bwrap before it is (checkout is costly)."""
        code = package.code_dir is not None if has_code is None else has_code
        docker_ok = package.image is not None and self.docker.available()
        bwrap_ok = code and self.bwrap.available()
        if self.mode in ("docker", "auto") and docker_ok:
            return self.docker
        if self.mode in ("bwrap", "auto") and bwrap_ok:
            return self.bwrap
        wanted = {
            "docker": "an image and a running Docker engine",
            "bwrap": "a code package and bubblewrap",
            "auto": "an image and a Docker engine, or a code package and bubblewrap",
        }[self.mode]
        raise Unavailable(
            f"no sandbox runtime can run this listing (MLREPO_RUNTIME={self.mode} needs {wanted}; "
            f"image={package.image!r}, code package={'yes' if code else 'no'})"
        )
