"""Builders for real uploads: code packages (zip / tar.gz) of a tiny sentiment model with unit tests."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing.service import InProcessQueue, PublishingService
from executor.publish_sandbox import ExecutorSandbox
from infra.settings import Settings
from infra.tables import Listing, ListingVersion

REPO = Path(__file__).resolve().parents[2]


def make_service(settings: Settings, app: CatalogApp) -> PublishingService:
    """The real service over the test's catalog, running jobs in-process (``queue.drain()`` waits)."""
    service = PublishingService(settings, app.db, app.listings, ExecutorSandbox(settings))
    assert isinstance(service.queue, InProcessQueue)
    return service


PREDICT = textwrap.dedent(
    """
    import json, sys

    POSITIVE = {"love", "great", "good", "excellent", "wonderful"}

    for line in sys.stdin:
        record = json.loads(line)
        words = set(str(record["input"]).lower().replace("!", " ").split())
        label = "positive" if words & POSITIVE else "negative"
        print(json.dumps({"id": record["id"], "output": {"label": label, "confidence": 0.9}}), flush=True)
    """
)

TRAIN = "import sys\nprint('training is not needed for a word list', file=sys.stderr)\n"


def sentiment_manifest(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "tiny-sentiment",
        "kind": "model",
        "category": "Natural Language Processing",
        "subcategories": ["Sentiment Analysis"],
        "description": "Tells whether a short English review is positive or negative (word list model).",
        "tags": ["sentiment", "reviews", "english"],
        "entrypoint": ["python3", "predict.py"],
        "input": {"format": "text@1"},
        "output": {"format": "class-label@1"},
        "resources": {"cpu": 1, "memory_mb": 256, "gpu": 0},
        "timeout_s": 5,
        "tests": [
            {
                "name": "happy",
                "input": "I love this phone",
                "expected_output": {"label": "positive", "confidence": 0.9},
            },
            {
                "name": "sad",
                "input": "battery died in an hour",
                "expected_output": {"label": "negative", "confidence": 0.9},
            },
        ],
        "verify": True,
    }
    data.update(overrides)
    return data


def package_files(
    manifest: dict[str, Any] | None = None, predict: str = PREDICT, **extra: str
) -> dict[str, bytes]:
    files = {"predict.py": predict.encode()}
    if manifest is not None:
        files["mlrepo.json"] = json.dumps(manifest).encode()
    files.update({name: text.encode() for name, text in extra.items()})
    return files


def zip_bytes(files: dict[str, bytes], prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return buffer.getvalue()


def targz_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]], gz: bool = True) -> bytes:
    """A tar (gzip'd unless ``gz=False``) of files given as (name, bytes) or of raw TarInfo entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def files_outside(
    data_dir: Path, allowed: tuple[str, ...] = ("artifacts", "keys", "index", "sandbox")
) -> list[str]:
    """Files a publication left in the data dir outside the artifact store (the database excepted)."""
    left = []
    for dirpath, _dirs, files in os.walk(data_dir):
        rel = Path(dirpath).relative_to(data_dir)
        if rel.parts and rel.parts[0] in allowed:
            continue
        left += [str(rel / f) for f in files if not f.startswith("mlrepo.db")]
    return sorted(left)


def artifact_blobs(data_dir: Path) -> list[Path]:
    root = data_dir / "artifacts" / "blobs"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


class Unqueued:
    """A queue that runs nothing: the test runs each publication where it wants it run."""

    async def enqueue(self, publication_id: str, delivery: int = 0, on_gpu: bool = False) -> None:
        return None

    async def gpu_workers_alive(self) -> bool:
        return False


async def versions_of(app: CatalogApp, owner: Actor) -> list[str]:
    """Every version of the owner's listings."""
    async with app.db.session() as session:
        rows = await session.scalars(
            select(ListingVersion.version)
            .join(Listing, Listing.id == ListingVersion.listing_id)
            .where(Listing.owner_id == owner.account_id)
        )
        return sorted(rows.all())


# A worker process that runs one publication and is killed (SIGKILL: no cleanup, no outcome recorded) the
# moment the workflow's method argv[2] has returned (``_list``: the listing step committed the version).
DIE_AFTER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from catalog.app import CatalogApp
    from catalog.publishing.service import PublishingService
    from executor.publish_sandbox import ExecutorSandbox
    from infra.settings import Settings

    async def main(publication_id, method):
        settings = Settings()
        app = await CatalogApp.open(settings, with_index=False)
        service = PublishingService(settings, app.db, app.listings, ExecutorSandbox(settings))
        original = getattr(service.workflow, method)

        async def then_die(*args):
            result = await original(*args)
            os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(service.workflow, method, then_die)
        await service.run(publication_id)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def kill_worker_after(settings: Settings, publication_id: str, method: str) -> None:
    """Run the publication in a worker process of its own (``settings``' data dir, database, runtime and
    engine), killed once ``method`` of its workflow returned: it leaves what a crashed worker leaves."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MLREPO_DATA_DIR": str(settings.data_dir),
        "MLREPO_DATABASE_URL": settings.resolved_database_url,
        "MLREPO_RUNTIME": settings.runtime,
    }
    engine = {"MLREPO_DOCKER_HOST": settings.docker_host, "MLREPO_REGISTRY_URL": settings.registry_url}
    env.update({name: value for name, value in engine.items() if value})
    env.pop("MLREPO_REDIS_URL", None)
    done = subprocess.run([sys.executable, "-c", DIE_AFTER, publication_id, method], env=env, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.returncode
