"""Run numpy's matrix products single-threaded where search computes them.

Why: OpenBLAS splits even one matrix-vector product across its threads and waits for all of them. On a
server whose cores are busy (the encoder, tantivy, other requests, other processes) a descheduled BLAS
thread stalls the product for a whole scheduler slice: a 3000 x 384 product measured 15 ms instead of
0.2 ms here, and 100k x 384 took 52 ms multi-threaded against 24 ms single-threaded. A server gets its
parallelism from concurrent requests, not from splitting one product. Only numpy's own BLAS is limited
(torch's thread pool, used by the encoder, is left alone), and only for the duration of the block.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import numpy as np


@functools.cache
def _numpy_blas():  # -> threadpoolctl.ThreadpoolController | None
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    numpy_root = os.path.dirname(os.path.dirname(os.path.realpath(np.__file__)))
    controller = ThreadpoolController()
    mine = [
        lib
        for lib in controller.lib_controllers
        if lib.user_api == "blas"
        and os.path.basename(os.path.dirname(lib.filepath)).startswith("numpy")
        and os.path.realpath(lib.filepath).startswith(numpy_root)
    ]
    if not mine:
        return None
    controller.lib_controllers = mine
    return controller


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    controller = _numpy_blas()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield
