"""Constants and helpers shared by the executor tests and their conftest (importable as a plain module)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalog.actors import Actor
from executor.job_views import JobView
from executor.jobs import JobService
from executor.runtimes import DockerRuntime
from infra.settings import Settings
from infra.tables import Listing, ListingVersion

if TYPE_CHECKING:
    from catalog.app import CatalogApp

BASE_IMAGE = Settings().base_image
TEST_IMAGE_REPO = "mlrepo-test/pkg"

# This session's sandboxes get uids and labels of their own, so checks for leftovers never see the
# sandboxes of other test suites running at the same time.
TEST_UID_BASE = 260_000 + (os.getpid() % 100) * 1000
TEST_UID_COUNT = 1000
RUN_ID = f"{os.getpid()}-{os.urandom(4).hex()}"


def build_image(runtime: DockerRuntime, code_dir: Path) -> str:
    """A real image FROM the base image with the package at /app, tagged by its content hash."""
    files = sorted(p for p in code_dir.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(code_dir)).encode() + b"\0" + path.read_bytes())
    tag = f"{TEST_IMAGE_REPO}:{digest.hexdigest()[:16]}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        dockerfile = f"FROM {BASE_IMAGE}\nCOPY app /app\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add(code_dir, arcname="app")
    buffer.seek(0)
    runtime.client.images.build(fileobj=buffer, custom_context=True, tag=tag, rm=True)
    return tag


@dataclass
class Published:
    listing_id: str
    code_dir: Path
    digest: str


async def publish_model(
    settings: Settings,
    catalog: CatalogApp,
    owner: Actor,
    source: str,
    *,
    docker: DockerRuntime | None = None,
    timeout_s: float = 5.0,
    output_schema: dict | None = None,
    name: str = "tiny-sentiment",
    kind: str = "model",
    trainable: bool = False,
    encrypt: bool = False,
    manifest: dict | None = None,
) -> Published:
    """What publishing leaves behind, made with the real artifact store (and a real image for docker):
    a listing, and a version pointing at the stored package and its image."""
    from catalog.publishing.packaging import normalize_package
    from infra.artifacts import ArtifactStore

    root = settings.data_dir / "src" / name
    root.mkdir(parents=True)
    (root / "model.py").write_text(textwrap.dedent(source))
    tarball = normalize_package(root, settings.data_dir / f"{name}.tar.gz")
    stored = ArtifactStore.from_settings(settings).put_file(tarball, encrypt=encrypt)
    image = build_image(docker, root) if docker is not None else None
    async with catalog.db.session() as session:
        listing = Listing(
            kind=kind,
            name=name,
            category="nlp",
            description="test model",
            output_format="class-label@1",
            output_schema=output_schema,
            resources={"cpu": 1, "memory_mb": 256, "gpu": 0},
            timeout_s=timeout_s,
            owner_id=owner.account_id,
            visibility="public",
        )
        session.add(listing)
        await session.flush()
        session.add(
            ListingVersion(
                listing_id=listing.id,
                version="1.0.0",
                artifact_kind="package",
                artifact_digest=stored.digest,
                encrypted=stored.encrypted,
                image_ref=image,
                manifest={
                    "command": ["python3", "model.py"],
                    "entrypoint": ["python3", "model.py"],
                    **({"train_entrypoint": ["python3", "model.py", "train"]} if trainable else {}),
                    **(manifest or {}),
                },
            )
        )
    return Published(listing.id, root, stored.digest)


async def publish_dataset(
    settings: Settings, catalog: CatalogApp, owner: Actor, lines: list[dict], name: str
) -> str:
    """A dataset listing whose version points at a JSON-lines file in the real artifact store."""
    import json

    from infra.artifacts import ArtifactStore

    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    stored = ArtifactStore.from_settings(settings).put_bytes(data)
    async with catalog.db.session() as session:
        listing = Listing(
            kind="dataset", name=name, category="nlp", owner_id=owner.account_id, visibility="public"
        )
        session.add(listing)
        await session.flush()
        session.add(
            ListingVersion(
                listing_id=listing.id, version="1.0.0", artifact_kind="dataset", artifact_digest=stored.digest
            )
        )
    return listing.id


class DroppingQueue:
    """A queue that only counts: the test looks at the rows, or runs a job itself with ``run``."""

    def __init__(self) -> None:
        self.enqueued = 0

    async def enqueue(self, job_id: str, resource_class: str, attempt: int) -> None:
        self.enqueued += 1

    async def close(self) -> None:
        return None


@asynccontextmanager
async def job_service(settings: Settings, catalog: CatalogApp, **overrides: Any) -> AsyncIterator[JobService]:
    """A real ``JobService`` on ``settings`` with ``overrides`` (e.g. ``runtime``), its queue closed after."""
    service = JobService(settings.model_copy(update=overrides), catalog)
    try:
        yield service
    finally:
        await service.queue.close()


async def watch_all(jobs: JobService, actor: Actor, job_id: str) -> list[JobView]:
    """Every view the job's status stream sends until the job is final (the last one is the outcome)."""
    return [view async for view in jobs.watch(actor, job_id)]


async def outcome(jobs: JobService, actor: Actor, job_id: str) -> JobView:
    """The job's final view, once it has one."""
    return (await watch_all(jobs, actor, job_id))[-1]
