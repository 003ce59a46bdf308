"""Resource allocation: what a job gets, from the listing's suggestion bounded by the requester's quota.

Pure functions. A requester may ask for specific resources; asking for more than the quota is an error
(they asked for something they cannot have). A listing suggesting more than the quota is clipped to it
(the requester still gets to try, on what they are allowed). The resource class decides the arq queue,
so that only workers with the right hardware take the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catalog.listing_input import MIN_MEMORY_MB, check_resource_amounts
from infra.errors import BadInput

DEFAULT_RESOURCES = {"cpu": 1.0, "memory_mb": 512, "gpu": 0}
CPU_CLASS, GPU_CLASS = "cpu", "gpu"  # resource classes: which workers may take a job
QUEUE_PREFIX = "mlrepo:jobs:"
# cpu jobs share arq's default queue with publishing, so one plain worker does both.
CPU_QUEUE = "arq:queue"


@dataclass(frozen=True)
class Quota:
    cpu: float
    memory_mb: int
    gpu: int


@dataclass(frozen=True)
class Allocation:
    cpu: float
    memory_mb: int
    gpu: int

    @property
    def resource_class(self) -> str:
        return GPU_CLASS if self.gpu > 0 else CPU_CLASS

    @property
    def queue_name(self) -> str:
        return queue_for(self.resource_class)

    def as_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb, "gpu": self.gpu}


def queue_for(resource_class: str) -> str:
    return CPU_QUEUE if resource_class == CPU_CLASS else QUEUE_PREFIX + resource_class


def allocate(suggested: dict[str, Any] | None, requested: dict[str, Any] | None, quota: Quota) -> Allocation:
    values = {**DEFAULT_RESOURCES, **_clean(suggested or {}, "suggested")}
    values["cpu"] = min(values["cpu"], quota.cpu)
    values["memory_mb"] = min(values["memory_mb"], quota.memory_mb)
    values["gpu"] = min(values["gpu"], quota.gpu)
    asked = _clean(requested or {}, "resources")
    limits = {"cpu": quota.cpu, "memory_mb": quota.memory_mb, "gpu": quota.gpu}
    for key, value in asked.items():
        if value > limits[key]:
            raise BadInput(
                f"resources.{key}={value:g} exceeds your quota of {limits[key]:g}", field=f"resources.{key}"
            )
        values[key] = value
    if quota.cpu <= 0:
        raise BadInput("your CPU quota is 0: no job can be allocated", field="resources.cpu")
    check_resource_amounts(asked, lambda key: f"resources.{key}")
    if values["cpu"] <= 0:  # a suggestion of 0 cpu (a row older than the rule), nothing asked
        raise BadInput("resources.cpu must be more than 0: a job needs some CPU", field="resources.cpu")
    return Allocation(
        cpu=float(values["cpu"]),
        # A suggestion clipped to a quota under the floor still gets the smallest sandbox.
        memory_mb=max(MIN_MEMORY_MB, int(values["memory_mb"])),
        gpu=int(values["gpu"]),
    )


def _clean(resources: dict[str, Any], where: str) -> dict[str, float]:
    clean: dict[str, float] = {}
    for key, value in resources.items():
        if value is None:
            continue
        if key not in DEFAULT_RESOURCES:
            raise BadInput(f"unknown resource {where}.{key}; use cpu, memory_mb, gpu", field=f"{where}.{key}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise BadInput(
                f"{where}.{key} must be a non-negative number; got {value!r}", field=f"{where}.{key}"
            )
        clean[key] = float(value)
    return clean
