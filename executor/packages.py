"""Turn a published listing version into something a runtime can run (a ``Package``).

A version carries an image (``image_ref``, pushed to mlrepo's registry by publishing) and, for code
packages, the content-addressed package in the artifact store. Docker runs the image; bwrap runs a private
checkout of the package (``checkout_package`` exports it with its digest checked and unpacks it through
the archive safety checks). The command is the one publishing recorded and verified (``manifest.command``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from docker.errors import ImageNotFound

from catalog.pipelines.runnability import commands_of
from catalog.publishing.archive_safety import ArchiveLimits
from catalog.publishing.images import ImageService
from catalog.publishing.packaging import PACKAGED_KINDS, checkout_package
from executor.runtimes import BwrapRuntime, DockerRuntime, Package, Runtime, RuntimeSelector
from infra.artifacts import ArtifactStore
from infra.errors import BadInput, Unavailable
from infra.settings import Settings
from infra.tables import ListingVersion


@dataclass(frozen=True)
class Runnable:
    runtime: Runtime
    package: Package
    version: str
    notebook: bool = False  # a notebook's runner, whose replies carry the executed notebook


async def prepare_runnable(
    settings: Settings, selector: RuntimeSelector, version: ListingVersion, staging: Path
) -> Runnable:
    """Pick the runtime for this version and make the package available to it (staging is the caller's)."""
    manifest = version.manifest or {}
    command, train = commands_of(manifest)
    if not command and not train:
        raise BadInput("this listing version declares no entrypoint to run")
    has_code = version.artifact_kind in PACKAGED_KINDS and bool(version.artifact_digest)
    runtime = selector.select(Package(entrypoint=command, image=version.image_ref), has_code=has_code)
    code_dir = None
    if isinstance(runtime, DockerRuntime):
        assert version.image_ref is not None
        await asyncio.to_thread(_ensure_image, settings, runtime, version.image_ref)
    elif isinstance(runtime, BwrapRuntime):
        store = ArtifactStore.from_settings(settings)
        limits = ArchiveLimits.from_settings(settings)
        code_dir = await asyncio.to_thread(checkout_package, store, version.artifact_digest, staging, limits)
    else:  # pragma: no cover - only two runtimes exist
        raise Unavailable(f"unknown runtime {runtime!r}")
    package = Package(entrypoint=command, image=version.image_ref, code_dir=code_dir, train_entrypoint=train)
    return Runnable(runtime, package, version.version, notebook=version.artifact_kind == "notebook")


def _ensure_image(settings: Settings, runtime: DockerRuntime, ref: str) -> None:
    """A fresh worker may not have the image yet: fetch it from mlrepo's registry by its reference."""
    try:
        runtime.client.images.get(ref)
    except ImageNotFound:
        images = ImageService(
            settings.docker_host or runtime.base_url, settings.registry_url, settings.base_image
        )
        images.pull_from_registry(ref)
