"""Where a request spent its time inside the serving process, for the ``Server-Timing`` response header.

Why in the server and not re-enacted elsewhere: a search measured in another process sees another
machine state. Inside ``mlrepo serve`` at 100k listings the query encode took ~30% longer than the
same encodes back to back, and the work after it ran slower again (CPU caches refilled after the
model's forward pass), so only timings taken in the serving process, under the real request sequence,
say where a served search's time goes. ``benchmarks.search_latency`` reads them from the header.

The HTTP layer opens one collection per request (``collecting``); code anywhere below marks a
``stage``. Outside a collection a stage costs one context-variable read and records nothing, so the
same code runs unchanged in workers, the CLI and tests. Stage names must be HTTP tokens (letters,
digits, ``_`` or ``-``); a stage entered twice adds up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_current: ContextVar[dict[str, float] | None] = ContextVar("mlrepo_stage_seconds", default=None)


@contextmanager
def collecting() -> Iterator[dict[str, float]]:
    """Collect the stages run inside this block (and in tasks started from it): name -> seconds."""
    seconds: dict[str, float] = {}
    token = _current.set(seconds)
    try:
        yield seconds
    finally:
        _current.reset(token)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as ``name`` in the current collection, if there is one."""
    seconds = _current.get()
    if seconds is None:
        yield
        return
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"a stage name must be an HTTP token; got {name!r}")
    started = perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + perf_counter() - started


def server_timing(seconds: Mapping[str, float]) -> str:
    """The ``Server-Timing`` header value (W3C Server Timing): ``name;dur=<milliseconds>`` per stage."""
    return ", ".join(f"{name};dur={1000 * value:.3f}" for name, value in seconds.items())


def parse_server_timing(header: str) -> dict[str, float]:
    """Milliseconds per stage from a ``Server-Timing`` value (what ``server_timing`` writes); metrics
    without a duration are left out."""
    parsed: dict[str, float] = {}
    for metric in header.split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip() == "dur":
                parsed[name] = float(value.strip().strip('"'))
    return parsed
