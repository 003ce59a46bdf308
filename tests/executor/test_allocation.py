"""Allocation as pure rules: the listing's suggestion bounded by the quota, the requester's ask checked."""

from __future__ import annotations

import pytest

from executor.allocation import Quota, allocate
from infra.errors import BadInput

QUOTA = Quota(cpu=2.0, memory_mb=1024, gpu=0)


def test_asking_for_no_cpu_is_refused_for_what_it_is() -> None:
    """Asking for cpu 0 was answered "your CPU quota is 0", blaming a quota of 2."""
    with pytest.raises(BadInput, match=r"resources.cpu must be more than 0") as refused:
        allocate({"cpu": 1}, {"cpu": 0}, QUOTA)
    assert refused.value.details["field"] == "resources.cpu"
    with pytest.raises(BadInput, match="your CPU quota is 0"):
        allocate({"cpu": 1}, None, Quota(cpu=0.0, memory_mb=1024, gpu=0))


@pytest.mark.parametrize("memory_mb", [0, 32])
def test_asking_for_less_memory_than_a_sandbox_needs_is_refused(memory_mb: int) -> None:
    """``memory_mb: 0`` was silently raised to 64 while ``cpu: 0`` was refused: one rule now, the floor
    named, as listings and manifests refuse a suggestion under it."""
    with pytest.raises(BadInput, match=r"resources.memory_mb must be at least 64 \(MiB\)") as refused:
        allocate({"cpu": 1}, {"memory_mb": memory_mb}, QUOTA)
    assert refused.value.details["field"] == "resources.memory_mb"
    assert allocate({"cpu": 1}, {"memory_mb": 64}, QUOTA).memory_mb == 64
    # A suggestion clipped to a quota under the floor is ours to round up, not the requester's mistake.
    assert allocate({"memory_mb": 512}, None, Quota(cpu=1.0, memory_mb=32, gpu=0)).memory_mb == 64
