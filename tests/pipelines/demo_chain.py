"""The demo chain of issue 5 as published packages: image → detector → (boxes to crops) → a classifier
*algorithm* that learns its brightness threshold, and a labelled dataset of crops to train it on.

Published through the real publishing workflow (sandbox-probed, stored content-addressed), as a producer
would; shared by the end-to-end tests of the API, the CLI and the arq worker.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.pipelines import PipelineService
from catalog.publishing.service import PublishingService
from executor.publish_sandbox import ExecutorSandbox

from .conftest import BOXES_WITH_IMAGE

PACKAGES = Path(__file__).parent / "packages"
RESOURCES = {"cpu": 1, "memory_mb": 256, "gpu": 0}


def manifest(name: str, kind: str, inp: dict[str, Any], out: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "category": "Computer Vision",
        "description": f"demo {name}",
        "entrypoint": ["python3", "model.py"],
        "input": inp,
        "output": out,
        "resources": RESOURCES,
        "timeout_s": 10,
        **extra,
    }


def trainable_manifest(name: str, input_format: str, output_format: str) -> dict[str, Any]:
    """An algorithm pipelines train before it runs (``model.py train``)."""
    return manifest(
        name,
        "algorithm",
        {"format": input_format},
        {"format": output_format},
        train_entrypoint=["python3", "model.py", "train"],
        training_resources=RESOURCES,
    )


PARTS = {
    "detector": manifest(
        "street-object-detector",
        "model",
        {"format": "image@1"},
        {"format": "bounding-boxes@1", "schema": BOXES_WITH_IMAGE},
    ),
    "cropper": manifest(
        "boxes-to-crops",
        "model",
        {"format": "bounding-boxes@1", "schema": BOXES_WITH_IMAGE},
        {"format": "image-crops@1"},
    ),
    "classifier": manifest(
        "crop-classifier", "model", {"format": "image-crops@1"}, {"format": "predictions@1"}
    ),
    "trainable_classifier": trainable_manifest("brightness-classifier", "image-crops@1", "predictions@1"),
}


def gray(width: int, height: int, bright: set[tuple[int, int]], level: int = 255) -> dict[str, Any]:
    pixels = bytes(level if (x, y) in bright else 10 for y in range(height) for x in range(width))
    return {
        "data": base64.b64encode(pixels).decode(),
        "media_type": "image/x-raw-gray",
        "width": width,
        "height": height,
    }


def example(level: int, label: str) -> dict[str, Any]:
    """One crop of uniform brightness and the prediction the classifier should learn to give it."""
    box = {"x": 0, "y": 0, "width": 2, "height": 2}
    return {
        "input": {"crops": [{"image": gray(2, 2, {(0, 0), (1, 0), (0, 1), (1, 1)}, level), "box": box}]},
        "target": {"predictions": [{"value": label, "location": box, "confidence": round(level / 255, 3)}]},
    }


TRAINING_DATA = [example(level, "lamp") for level in (230, 240, 250)] + [
    example(level, "sign") for level in (60, 90, 120)
]


TRAINABLE_CHAIN = ("detector", "cropper", "trainable_classifier")


async def publish_parts(
    catalog: CatalogApp,
    producer: Actor,
    parts: tuple[str, ...] = TRAINABLE_CHAIN,
    *,
    with_dataset: bool = True,
) -> dict[str, str]:
    """Demo listings (and the training data), published through the real publishing workflow."""
    publishing = publishing_of(catalog)
    ids = {part: await publish_part(publishing, producer, part, PARTS[part]) for part in parts}
    if with_dataset:
        ids["dataset"] = await publish_crops(catalog, producer, "street-crops-labelled", TRAINING_DATA)
    return ids


async def publish_part(
    publishing: PublishingService, producer: Actor, part: str, data: dict[str, Any]
) -> str:
    """``packages/<part>/model.py`` published with the manifest ``data``; returns the listing id."""
    upload = io.BytesIO()
    with zipfile.ZipFile(upload, "w") as zf:
        zf.writestr("model.py", (PACKAGES / part / "model.py").read_text())
        zf.writestr("mlrepo.json", json.dumps(data))
    upload.seek(0)
    return await published(publishing, producer, await publishing.submit_package(producer, upload))


async def publish_crops(
    catalog: CatalogApp, producer: Actor, name: str, examples: list[dict[str, Any]]
) -> str:
    """A dataset of labelled crops (JSON lines of {input, target}), the classifier's training data."""
    described = {
        "category": "Computer Vision",
        "description": "crops of street lamps and signs with their labels",
    }
    return await publish_examples(
        catalog, producer, name, examples, "image-crops@1", "predictions@1", described
    )


async def publish_examples(
    catalog: CatalogApp,
    producer: Actor,
    name: str,
    examples: list[dict[str, Any]],
    input_format: str,
    output_format: str,
    described: dict[str, str],
) -> str:
    """A dataset of labelled examples (JSON lines of {input, target}) declaring its formats."""
    publishing = publishing_of(catalog)
    lines = "".join(json.dumps(line) + "\n" for line in examples).encode()
    dataset = {
        "name": name,
        "kind": "dataset",
        **described,
        "input": {"format": input_format},
        "output": {"format": output_format},
    }
    return await published(
        publishing, producer, await publishing.submit_dataset(producer, io.BytesIO(lines), dataset)
    )


def publishing_of(catalog: CatalogApp) -> PublishingService:
    return PublishingService(
        catalog.settings, catalog.db, catalog.listings, ExecutorSandbox(catalog.settings)
    )


async def published(publishing: PublishingService, producer: Actor, publication: Any) -> str:
    await publishing.queue.drain()
    view = await publishing.get(producer, publication.id)
    assert view.status == "published", (view.status, view.error)
    return view.listing_id


async def build_trainable_chain(pipelines: PipelineService, requester: Actor, ids: dict[str, str]) -> str:
    """detector → classifier algorithm (trained on the dataset); the service inserts the cropper."""
    pipeline = await pipelines.create(requester, "street scenes")
    await pipelines.add_step(requester, pipeline.id, ids["detector"])
    change = await pipelines.add_step(
        requester, pipeline.id, ids["trainable_classifier"], training_data_listing_id=ids["dataset"]
    )
    assert len(change.inserted_conditioning_step_ids) == 1
    return pipeline.id


LAMP_AND_SIGN = [gray(4, 3, {(1, 1), (2, 1)}), gray(5, 2, {(0, 0)}, level=150)]
LAMP_AND_SIGN_PREDICTED = [
    {
        "output": {
            "predictions": [
                {"value": "lamp", "location": {"x": 1, "y": 1, "width": 2, "height": 1}, "confidence": 1.0}
            ]
        }
    },
    {
        "output": {
            "predictions": [
                {"value": "sign", "location": {"x": 0, "y": 0, "width": 1, "height": 1}, "confidence": 0.588}
            ]
        }
    },
]
