"""What point-in-time paging adds to a search's first page, measured in-process on a synthetic catalog.

    python -m benchmarks.search_paging [--size 10000] [--queries 60] [--root var/bench]

The catalog is the one ``benchmarks.search_latency`` builds and caches under ``--root``. A first page that
has a next page now (``catalog.search_snapshots``):

1. queues its snapshot (``SnapshotStore.keep_soon``): timed alone. The ranking is unchanged: it explains
   the page only, and hands the snapshot a function giving every candidate unexplained when written;
2. without text, reads a chunk (``search_snapshot_chunk``) of the order instead of one page:
   ``_browse`` timed for both.

Off the request path, on the snapshot writer (one batch every ``search_snapshot_batch_s``): gathering the
candidates unexplained (``ranking.pending``), packing them, and the whole write per snapshot; the stored
size (``benchmarks.snapshot_packing`` times the writer's CPU alone, more precisely). For
comparison: the ranking, and whole first and second pages (the second reads the snapshot).
Each step is the fastest of ``REPEATS`` calls (the machine is shared), then the median over queries.
Prints a table and one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.search_latency import ensure_catalog, settings_for
from benchmarks.synthetic_catalog import queries

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WARMUP = 5
REPEATS = 5
PAGE = 10


def p50_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """The fastest of ``REPEATS`` calls (the machine is shared: slower ones measure the neighbours)."""
    best, result = float("inf"), None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - started)
    return best, result


async def measure(data_dir: Path, count: int) -> dict[str, Any]:
    from catalog.actors import ANONYMOUS
    from catalog.app import CatalogApp
    from catalog.search_service import SearchRequest, build_filters
    from catalog.search_snapshots import pack_entries
    from infra.migrate import upgrade_async

    settings = settings_for(data_dir)
    await upgrade_async(settings)
    async with await CatalogApp.open(settings) as app:
        svc = app.search
        texts = queries(count + WARMUP)
        for text in texts[:WARMUP]:
            await svc.search(ANONYMOUS, SearchRequest(text=text, limit=PAGE))
        filters = build_filters(SearchRequest(), ANONYMOUS, None)
        chunk = max(settings.search_snapshot_chunk, PAGE)
        figures: dict[str, list[float]] = {
            k: []
            for k in (
                "rank_page",
                "gather_rest",
                "keep",
                "pack",
                "browse_page",
                "browse_chunk",
                "first_page",
                "second_page",
            )
        }
        sizes: list[int] = []
        for text in texts[WARMUP:]:
            vector, keyword = await svc._encode_and_match(text, filters, svc._depth())
            elapsed, ranked_with = timed(svc._rank, text, vector, keyword, filters, "relevance", PAGE)
            figures["rank_page"].append(elapsed)
            _, _, rest, total = ranked_with
            assert rest is not None
            elapsed, others = timed(rest)
            figures["gather_rest"].append(elapsed)
            keep = svc.snapshots.keep_soon
            elapsed, _ = timed(keep, None, "f" * 16, [], total, later=(rest, total))
            figures["keep"].append(elapsed)
            elapsed, blob = timed(pack_entries, [], others)
            figures["pack"].append(elapsed)
            sizes.append(len(blob))
            for name, limit in (("browse_page", PAGE), ("browse_chunk", chunk)):
                elapsed, _ = timed(svc._browse, filters, "usage", 0, limit)
                figures[name].append(elapsed)
            started = time.perf_counter()
            first = await svc.search(ANONYMOUS, SearchRequest(text=f"{text} ", limit=PAGE))
            figures["first_page"].append(time.perf_counter() - started)
            await svc.snapshots.flush()
            assert first.end_cursor is not None
            started = time.perf_counter()
            await svc.search(ANONYMOUS, SearchRequest(text=f"{text} ", limit=PAGE, after=first.end_cursor))
            figures["second_page"].append(time.perf_counter() - started)
        await svc.snapshots.flush()
        kept = [svc.snapshots.keep_soon(None, "f" * 16, [], total, later=(rest, total)) for _ in range(count)]
        started = time.perf_counter()
        await svc.snapshots.flush()  # one batch: packed on a thread, then one insert
        write_per_snapshot = (time.perf_counter() - started) / len(kept)
        browse_blob = pack_entries(svc._browse(filters, "usage", 0, chunk)[0])
        result = {name: p50_ms(values) for name, values in figures.items()}
        result.update(
            listings=len(app.backend),
            queries=count,
            added_text_ms=result["keep"],
            added_browse_ms=round(result["browse_chunk"] - result["browse_page"], 3),
            write_per_snapshot_ms=round(write_per_snapshot * 1000, 3),
            text_snapshot_bytes=int(statistics.median(sizes)),
            browse_snapshot_bytes=len(browse_blob),
        )
        return result


def report(result: dict[str, Any]) -> None:
    rows = [
        ("rank (page explained), unchanged", "rank_page"),
        ("ADDED to a text first page: queue", "added_text_ms"),
        ("browse one page", "browse_page"),
        ("browse one chunk", "browse_chunk"),
        ("ADDED to a facet-only first page", "added_browse_ms"),
        ("writer: gather the candidates", "gather_rest"),
        ("writer: pack, one snapshot", "pack"),
        ("writer: pack + insert, per snapshot", "write_per_snapshot_ms"),
        ("whole first page", "first_page"),
        ("whole second page (snapshot)", "second_page"),
    ]
    print(f"{result['listings']} listings, {result['queries']} queries, p50 ms")
    for label, key in rows:
        print(f"  {label:<40} {result[key]:>8.3f}")
    text_bytes, browse_bytes = result["text_snapshot_bytes"], result["browse_snapshot_bytes"]
    print(f"  stored: text snapshot {text_bytes} B, facet-only chunk {browse_bytes} B")
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--root", type=Path, default=Path("var/bench"))
    args = parser.parse_args(argv)
    report(asyncio.run(measure(ensure_catalog(args.root, args.size), args.queries)))


if __name__ == "__main__":
    main()
