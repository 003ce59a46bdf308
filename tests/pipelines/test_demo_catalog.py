"""The issue's "done when" chains, built from the demo catalog as `make run` seeds it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

import catalog.seed as catalog_seed
from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.pipelines import ConnectionStatus, PipelineService, StepRole
from infra.errors import BadInput
from infra.tables import Listing

DEMO_CATALOG = Path(catalog_seed.__file__).parent / "data" / "demo_catalog.jsonl"


async def demo_ids(catalog: CatalogApp) -> dict[str, str]:
    # ``seed_demo`` finds the file through importlib.resources, which pytest's sys.path (tests/ first,
    # where tests/catalog is a namespace package) points at the wrong folder; import the same file.
    owner = await catalog.accounts.system_account()
    report = await catalog.importer.import_file(DEMO_CATALOG, owner_id=owner.id)
    assert report.ok, report.summary()
    async with catalog.db.session() as session:
        return {name: id_ for id_, name in (await session.execute(select(Listing.id, Listing.name))).all()}


async def test_demo_vision_chain_gets_its_conditioning_step(
    catalog: CatalogApp, service: PipelineService, requester: Actor
) -> None:
    ids = await demo_ids(catalog)
    pipeline = await service.create(requester, "vehicles in street scenes")
    await service.add_step(requester, pipeline.id, ids["street-object-detector"])
    change = await service.add_step(requester, pipeline.id, ids["vehicle-crop-classifier"])

    view = change.pipeline
    assert [(s.listing_name, s.role) for s in view.steps] == [
        ("street-object-detector", StepRole.STEP),
        ("boxes-to-crops", StepRole.CONDITIONING),
        ("vehicle-crop-classifier", StepRole.STEP),
    ]
    assert [c.status for c in view.connections] == [ConnectionStatus.CONDITIONED] and view.is_complete
    # The demo catalog describes models without publishing code: the chain fits but cannot run, and
    # says so before runJob refuses it.
    assert not view.is_runnable
    assert [s.not_runnable_reason for s in view.steps] == [
        f"step {i} {name!r} cannot be run: it has no published code (a catalog entry only)"
        for i, name in enumerate(("street-object-detector", "boxes-to-crops", "vehicle-crop-classifier"), 1)
    ]
    with pytest.raises(BadInput, match="step 1 'street-object-detector' cannot be run: it has no published"):
        await service.plan_run(requester, pipeline.id)


async def test_demo_text_chain_fits_and_its_trainable_step_asks_for_data(
    catalog: CatalogApp, service: PipelineService, requester: Actor
) -> None:
    ids = await demo_ids(catalog)
    pipeline = await service.create(requester, "review triage")
    await service.add_step(requester, pipeline.id, ids["text-tokenizer"])
    change = await service.add_step(requester, pipeline.id, ids["token-sentiment-scorer"])
    assert [c.status for c in change.pipeline.connections] == [ConnectionStatus.OK]

    trainer = await service.create(requester, "custom classifier")
    step = await service.add_step(
        requester,
        trainer.id,
        ids["text-classifier-trainer"],
        training_data_listing_id=ids["product-reviews-en"],
    )
    (only,) = step.pipeline.steps
    assert only.needs_training and only.training_data_listing_id == ids["product-reviews-en"]
