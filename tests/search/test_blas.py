"""Vector products run with numpy's BLAS limited to one thread, and the limit is lifted afterwards."""

from __future__ import annotations

import pytest

from search.blas import _numpy_blas, single_threaded_blas


def test_numpy_blas_is_single_threaded_only_inside_the_block() -> None:
    controller = _numpy_blas()
    if controller is None:
        pytest.fail("numpy's BLAS should be visible to threadpoolctl on this platform")
    before = [lib["num_threads"] for lib in controller.info()]
    with single_threaded_blas():
        assert [lib["num_threads"] for lib in controller.info()] == [1] * len(before)
    assert [lib["num_threads"] for lib in controller.info()] == before
