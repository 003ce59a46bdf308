"""What callers receive about a pipeline: its steps in order and the verdict on every connection.

A pipeline is a chain of *chosen* steps (role ``step``); between two chosen steps the service may place
*conditioning* steps (role ``conditioning``) that convert one format into the other. A connection is
judged between consecutive chosen steps, so a requester sees "detector → classifier: conditioned by
boxes-to-crops" rather than two unrelated links.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

UNAVAILABLE_LISTING_NAME = "(unavailable listing)"
DELETED_LISTING_NAME = "(deleted listing)"


def unavailable_reason(position: int) -> str:
    """Why a step whose listing the viewer may no longer see blocks the pipeline.

    No listing id or name: a stranger running a published pipeline reads this too."""
    return (
        f"the listing of step {position + 1} is no longer available to you "
        "(its owner made it private or it was suspended); the pipeline runs again once its owner removes "
        "or replaces that step"
    )


def deleted_reason(position: int) -> str:
    """Why a step whose listing its owner deleted blocks the pipeline (``store``: the step is kept so
    the chain does not silently shrink). No name: the listing may have been private before it went."""
    return (
        f"the listing of step {position + 1} was deleted by its owner; the pipeline runs again once its "
        "owner removes or replaces that step"
    )


def trained_unavailable_reason(position: int) -> str:
    """Why a step whose trained model the viewer may not use blocks the pipeline (e.g. a published
    pipeline whose trained model its publisher kept private)."""
    return f"the model trained for step {position + 1} is not available to you"


def trained_deleted_reason(position: int) -> str:
    """Why a step whose trained model its owner deleted blocks the pipeline: the step still points at
    the model, so without this it read as trained (and a stranger was told the model was hidden)."""
    return (
        f"the model trained for step {position + 1} was deleted; the pipeline runs again once its owner "
        "trains that step again (train the pipeline)"
    )


def step_label(position: int, name: str) -> str:
    return f"step {position + 1} {name!r}"


class StepRole(StrEnum):
    STEP = "step"
    CONDITIONING = "conditioning"


class ConnectionStatus(StrEnum):
    OK = "ok"  # the output fits the next input directly
    CONDITIONED = "conditioned"  # fits through the conditioning step(s) placed between them
    OPEN = "open"  # does not fit and nothing is placed: the pipeline cannot run yet


@dataclass(frozen=True, slots=True)
class Alternative:
    """A listing that could bridge an open or conditioned connection."""

    listing_id: str
    name: str
    kind: str
    verified: bool
    accuracy: float | None
    latency_p50_ms: float | None


@dataclass(frozen=True, slots=True)
class StepView:
    id: str
    position: int
    role: str
    listing_id: str
    listing_name: str
    kind: str
    input_format: str | None
    output_format: str | None
    resources: dict[str, Any] | None
    needs_training: bool
    training_data_listing_id: str | None
    trained_listing_id: str | None
    # False once the step's listing is no longer visible to the viewer (made private, shared with
    # others only, suspended): the step then shows nothing of the listing but its id.
    available: bool = True
    # True when the step's listing was deleted: the step is kept (and ``available`` is False) so the
    # pipeline's owner sees what the chain lost instead of a shorter chain.
    listing_deleted: bool = False
    # Why the listing that runs at this step cannot score records although it is visible and trained:
    # no published code (a catalog entry), a nested pipeline listing that cannot run, a trained model the
    # viewer may not use. Set by ``evaluation.build_view`` (``runnability``), the rule ``runJob`` applies.
    code_problem: str | None = None

    @property
    def awaits_training(self) -> bool:
        return self.needs_training and self.trained_listing_id is None

    @property
    def not_runnable_reason(self) -> str | None:
        """Why a run of the pipeline would be refused because of this step; None when it can run."""
        if not self.available:
            return self.unavailable_reason
        if self.awaits_training:
            return (
                f"{self.listing_name!r} must be trained first "
                "(choose its training data and train the pipeline)"
            )
        return self.code_problem

    @property
    def runnable(self) -> bool:
        return self.not_runnable_reason is None

    @property
    def unavailable_reason(self) -> str:
        return (deleted_reason if self.listing_deleted else unavailable_reason)(self.position)


@dataclass(frozen=True, slots=True)
class ConnectionView:
    from_step_id: str
    to_step_id: str
    status: str
    output_format: str | None
    input_format: str | None
    conditioning_step_ids: tuple[str, ...]
    reason: str
    alternatives: tuple[Alternative, ...] = ()


@dataclass(frozen=True, slots=True)
class PipelineView:
    id: str
    owner_id: str
    name: str
    description: str
    listing_id: str | None
    steps: tuple[StepView, ...]
    connections: tuple[ConnectionView, ...]
    created_at: datetime
    updated_at: datetime
    # For its owner: why some of those the pipeline's listing is published to cannot run it (a step
    # made private or a trained model deleted since publication); None when all can or it is unpublished.
    # ``is_runnable`` is the viewer's own verdict, which a step only its owner may see does not change.
    listing_problem: str | None = None

    @property
    def input_format(self) -> str | None:
        return self.steps[0].input_format if self.steps else None

    @property
    def output_format(self) -> str | None:
        return self.steps[-1].output_format if self.steps else None

    @property
    def open_connections(self) -> tuple[ConnectionView, ...]:
        return tuple(c for c in self.connections if c.status == ConnectionStatus.OPEN)

    @property
    def is_complete(self) -> bool:
        """Every connection fits (directly or conditioned) and there is at least one step."""
        return bool(self.steps) and not self.open_connections

    @property
    def is_trained(self) -> bool:
        """No step waits for training (a step the viewer can no longer see counts as not trained)."""
        return all(step.available and not step.awaits_training for step in self.steps)

    @property
    def is_runnable(self) -> bool:
        """What ``runJob`` decides too (``PipelineService.plan_run`` refuses exactly these)."""
        return self.is_complete and all(step.runnable for step in self.steps)


@dataclass(frozen=True, slots=True)
class StepChange:
    """The answer to adding or removing a step: the pipeline now, and what the service did about it."""

    pipeline: PipelineView
    step_id: str | None
    inserted_conditioning_step_ids: tuple[str, ...]
    opened: tuple[ConnectionView, ...]  # every connection still open after the change
