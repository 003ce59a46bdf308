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
