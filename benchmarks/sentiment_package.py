"""A small sentiment model as a publishable code package, and its publication through the real service.

Shared by ``benchmarks.executor`` and ``benchmarks.publishing``: both measure a package that went through
the same publishing path (package → test → verify → publish → list) a producer's would.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from catalog.actors import Actor
from catalog.publishing.service import InProcessQueue, PublicationView, PublishingService


def sentiment_manifest(name: str, description: str, **fields: Any) -> dict[str, Any]:
    """The manifest of a text → class-label model whose entrypoint is ``predict.py``; ``fields`` add to
    or replace the defaults (timeout, resources, tests...)."""
    return {
        "name": name,
        "kind": "model",
        "category": "Natural Language Processing",
        "description": description,
        "entrypoint": ["python3", "predict.py"],
        "input": {"format": "text@1"},
        "output": {"format": "class-label@1"},
        **fields,
    }


def zip_package(manifest: dict[str, Any], predict_source: str) -> bytes:
    """A zip code package: ``mlrepo.json`` and ``predict.py`` at its root."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("mlrepo.json", json.dumps(manifest))
        zf.writestr("predict.py", predict_source)
    return buffer.getvalue()


async def wait_published(
    service: PublishingService, actor: Actor, submitted: PublicationView
) -> PublicationView:
    """Run the in-process publish job to its end; a publication that did not publish is an error."""
    assert isinstance(service.queue, InProcessQueue)
    await service.queue.drain()
    publication = await service.get(actor, submitted.id)
    if publication.status != "published" or publication.listing_id is None:
        raise RuntimeError(f"publication {publication.id} did not publish: {publication.error}")
    return publication
