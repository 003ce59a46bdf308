"""Search restricted to a pipeline slot: facets from the neighbours, exact schemas as a post-filter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from catalog.actors import Actor
from catalog.pipelines import PipelineService
from catalog.pipelines.search_context import slot_misfits
from infra.errors import BadInput, NotFound
from infra.tables import Listing
from search.types import SearchFilters

MakeListing = Callable[..., Awaitable[Listing]]


async def test_slot_between_steps_restricts_both_formats(
    service: PipelineService,
    requester: Actor,
    stranger: Actor,
    make_listing: MakeListing,
    vision: dict[str, Listing],
) -> None:
    bare = await make_listing(
        "bare-cropper", kind="algorithm", input_format="bounding-boxes", output_format="image-crops"
    )
    pipeline = await service.create(requester, "slots")
    first = await service.add_step(requester, pipeline.id, vision["detector"].id)
    await service.add_step(requester, pipeline.id, vision["classifier"].id, auto_condition=False)

    filters, slot = await service.narrow_search(requester, pipeline.id, 1, SearchFilters(category="Vision"))
    assert (filters.input_format, filters.output_format) == ("bounding-boxes@1", "image-crops@1")
    assert filters.kinds == ("algorithm", "model", "pipeline") and filters.category == "Vision"
    assert slot.after_step_id == first.step_id
    assert slot_misfits(slot, vision["cropper"]) == []
    assert slot_misfits(slot, bare) == []  # its input is the plain format: the detector's output fits it
    assert slot_misfits(slot, vision["detector"]) != []

    start, _ = await service.narrow_search(
        requester, pipeline.id, 0, SearchFilters(kinds=("model", "dataset"))
    )
    assert (start.input_format, start.output_format, start.kinds) == (None, "image@1", ("model",))
    end, end_slot = await service.narrow_search(requester, pipeline.id, 2, SearchFilters())
    assert (end.input_format, end.output_format) == ("predictions@1", None)
    assert end_slot.after_step_id is not None and end_slot.next is None


async def test_slot_errors(
    service: PipelineService, requester: Actor, stranger: Actor, vision: dict[str, Listing]
) -> None:
    pipeline = await service.create(requester, "slots")
    await service.add_step(requester, pipeline.id, vision["detector"].id)
    with pytest.raises(BadInput, match="position must be between 0 and 1"):
        await service.narrow_search(requester, pipeline.id, 5, SearchFilters())
    with pytest.raises(BadInput, match="contradicts the pipeline slot"):
        await service.narrow_search(requester, pipeline.id, 1, SearchFilters(input_format="text"))
    with pytest.raises(BadInput, match="pipeline steps are"):
        await service.narrow_search(requester, pipeline.id, 1, SearchFilters(kinds=("dataset",)))
    with pytest.raises(NotFound):
        await service.narrow_search(stranger, pipeline.id, 0, SearchFilters())
