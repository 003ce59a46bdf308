"""Who may see a model trained from another producer's algorithm.

A trained model is the algorithm's package with the learned weights beside it (``executor.training``):
whoever can run the model runs the algorithm's code. So the algorithm's producer decides whether models
trained from it by other accounts may leave their trainer's hands: the algorithm's manifest says
``"trained_models": "private"`` (the default: nothing is handed on that the producer did not allow) or
``"shareable"``. Training records the decision on the model's version (``REDISTRIBUTION_KEY``), as it
stood when the model was trained, like a licence granted then; an edit's version carries it on
(``catalog.listings.metadata_version``), and a new upload of the owner's own code replaces it.
A producer training their own algorithm is never restricted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from catalog.versions import latest_published_version
from infra.errors import Forbidden

TRAINED_MODELS_KEY = "trained_models"  # in an algorithm's manifest
REDISTRIBUTION_KEY = "redistribution"  # in a trained model's version manifest
PRIVATE_ONLY = "private"


def redistribution_of(algorithm_manifest: dict[str, Any] | None, algorithm_owner_id: str | None,
                      trainer_id: str) -> str | None:  # fmt: skip
    """What a model trained by ``trainer_id`` may carry: ``PRIVATE_ONLY``, or ``None`` for no limit."""
    if trainer_id == algorithm_owner_id:
        return None
    allowed = (algorithm_manifest or {}).get(TRAINED_MODELS_KEY, PRIVATE_ONLY)
    return None if allowed == "shareable" else PRIVATE_ONLY


async def refuse_redistribution(session: AsyncSession, listing_id: str) -> None:
    """Forbidden when the code the listing runs is a model that must stay with its trainer."""
    version = await latest_published_version(session, listing_id)
    manifest = version.manifest if version is not None else None
    if (manifest or {}).get(REDISTRIBUTION_KEY) == PRIVATE_ONLY:
        raise Forbidden(
            "visibility: this model was trained from another producer's algorithm "
            f"({manifest.get('trained_from')}), whose producer keeps models trained from it private "
            f"(its manifest's {TRAINED_MODELS_KEY!r}); it cannot be made public or shared",
            field="visibility",
        )
