"""Pipelines tests run on a real migrated database (SQLite and PostgreSQL) with real listing rows.

Listings are written as the catalog writes them — formats normalised and schemas checked by
``catalog.formats.validate_listing_io`` — so the conditioning lookup sees what production sees.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from catalog.accounts import AccountService
from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.demand import DemandService
from catalog.formats import FORMATS, validate_listing_io
from catalog.pipelines import ConnectionStatus, PipelineService
from infra.db import Database
from infra.settings import Settings
from infra.tables import Listing, ListingVersion

IMAGE = FORMATS["image@1"].schema
BOXES = FORMATS["bounding-boxes@1"].schema["properties"]["boxes"]
# A detector that passes the image along with its boxes, and a cropper that needs both.
BOXES_WITH_IMAGE = {
    "type": "object",
    "required": ["boxes", "image"],
    "properties": {"boxes": BOXES, "image": IMAGE},
}

MakeListing = Callable[..., Awaitable[Listing]]
PACKAGES = Path(__file__).parent / "packages"
PACKAGE_COMMAND = ("python3", "model.py")  # what every package under packages/ runs


@pytest.fixture
def demand(db: Database, settings: Settings) -> DemandService:
    return DemandService(db, settings)


@pytest.fixture
def service(db: Database, demand: DemandService) -> PipelineService:
    return PipelineService(db, demand)


async def _account(db: Database, name: str, role: str) -> Actor:
    return (await AccountService(db).create(name, role)).as_actor()


@pytest.fixture
async def producer(db: Database) -> Actor:
    return await _account(db, "producer", "producer")


@pytest.fixture
async def requester(db: Database) -> Actor:
    return await _account(db, "requester", "requester")


@pytest.fixture
async def stranger(db: Database) -> Actor:
    return await _account(db, "stranger", "requester")


async def add_code_version(
    db: Database, listing_id: str, package: str, version: str = "1.0.0", **manifest: Any
) -> None:
    """A newest version of the listing recording the command of ``packages/<package>`` as publishing
    records it: the listing now has code to run (the sandbox tests run that package for it).
    ``manifest``: more of what publishing or training records (a trained model's provenance)."""
    assert (PACKAGES / package / "model.py").is_file(), package
    async with db.session() as session:
        session.add(
            ListingVersion(
                listing_id=listing_id,
                version=version,
                artifact_kind="package",
                manifest={"command": list(PACKAGE_COMMAND), **manifest},
                notes=f"tests/pipelines/packages/{package}",
            )
        )


@pytest.fixture
def make_listing(db: Database, producer: Actor) -> MakeListing:
    async def make(
        name: str, kind: str = "model", owner: Actor | None = None, package: str | None = None, **fields: Any
    ) -> Listing:
        """A listing row; with ``package`` (a directory under ``packages/``) also a version recording that
        package's command as publishing does, so the listing has code to run (the sandbox tests run
        that package for it). Without one it is a catalog entry: described, nothing to run."""
        fields.setdefault("category", "Computer Vision")
        io = validate_listing_io(
            fields.pop("input_format", None),
            fields.pop("input_schema", None),
            fields.pop("output_format", None),
            fields.pop("output_schema", None),
        )
        async with db.session() as session:
            row = Listing(
                name=name,
                kind=kind,
                owner_id=(owner or producer).account_id,
                input_format=io[0],
                input_schema=io[1],
                output_format=io[2],
                output_schema=io[3],
                **fields,
            )
            session.add(row)
            await session.flush()
        if package is not None:
            await add_code_version(db, row.id, package)
        return row

    return make


@pytest.fixture
async def vision(make_listing: MakeListing) -> dict[str, Listing]:
    """The demo chain's parts: image → detector → (boxes to crops) → crop classifier, each with the
    code of ``packages/<part>`` to run."""
    return {
        "detector": await make_listing(
            "street-object-detector",
            package="detector",
            input_format="image@1",
            output_format="bounding-boxes@1",
            output_schema=BOXES_WITH_IMAGE,
            resources={"cpu": 2, "memory_mb": 2048, "gpu": 1},
            latency_p50_ms=40.0,
        ),
        "cropper": await make_listing(
            "boxes-to-crops",
            kind="algorithm",
            package="cropper",
            input_format="bounding-boxes@1",
            input_schema=BOXES_WITH_IMAGE,
            output_format="image-crops@1",
            resources={"cpu": 1, "memory_mb": 256},
            verification_status="verified",
        ),
        "classifier": await make_listing(
            "crop-classifier",
            package="classifier",
            input_format="image-crops@1",
            output_format="predictions@1",
            resources={"cpu": 1, "memory_mb": 1024},
            accuracy=0.9,
            latency_p50_ms=15.0,
        ),
    }


@pytest.fixture
def catalog(catalog_app: CatalogApp) -> CatalogApp:
    """The real catalog (database + embedded search index) that the API and publishing go through."""
    return catalog_app


async def crop_trainer(make_listing: MakeListing, memory_mb: int = 2048) -> Listing:
    """A crop-classifier *algorithm*: it must learn from labelled crops (``labelled_crops``)."""
    return await make_listing(
        "crop-classifier-trainer",
        kind="algorithm",
        input_format="image-crops",
        output_format="predictions",
        training_resources={"cpu": 2, "memory_mb": memory_mb},
    )


async def labelled_crops(make_listing: MakeListing, name: str = "labelled-crops") -> Listing:
    """A dataset ``crop_trainer`` learns from."""
    return await make_listing(name, kind="dataset", input_format="image-crops", output_format="predictions")


@pytest.fixture
async def pre_training(
    service: PipelineService, requester: Actor, make_listing: MakeListing, vision: dict[str, Listing]
) -> tuple[str, Listing]:
    """detector → (boxes-to-crops) → a crop-classifier *algorithm* that must learn from labelled crops."""
    trainer = await crop_trainer(make_listing, memory_mb=4096)
    pipeline = await service.create(requester, "street scenes")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    change = await service.add_step(requester, pipeline.id, trainer.id)
    assert [c.status for c in change.pipeline.connections] == [ConnectionStatus.CONDITIONED]
    return pipeline.id, trainer
