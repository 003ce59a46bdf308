"""CPU time a text search's snapshot costs its writer: preparing the later candidates and packing the row.

    python -m benchmarks.snapshot_packing [--size 10000] [--queries 40] [--repeats 200] [--root var/bench]

At catalog scale the p95 of search is set by this work (``docs/latency-experiments.md``): each first page
with a next page hands its snapshot (``catalog.search_snapshots``) a function giving the candidates after
the page, and the writer's thread calls it and packs the row (``_first_chunks``). Here each query is
ranked once on the catalog ``benchmarks.search_latency`` builds and caches under ``--root``; then a fresh
snapshot of it is prepared and packed ``--repeats`` times, timed with ``time.process_time`` (CPU time of
this process: steadier than wall time on a shared machine; the benchmark runs one thread, so it is the
packing's own). For comparison, what the later pages pay: a whole second page (reading the stored
snapshot from SQLite and explaining its results), by process time too, once per query after a warm-up.
Prints per-search figures (mean over queries) and one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.search_latency import ensure_catalog, settings_for
from benchmarks.synthetic_catalog import queries

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WARMUP = 3
PAGE = 10


async def measure(data_dir: Path, count: int, repeats: int) -> dict[str, Any]:
    from catalog.actors import ANONYMOUS
    from catalog.app import CatalogApp
    from catalog.search_service import SearchRequest, build_filters
    from catalog.search_snapshots import Snapshot, _first_chunks
    from infra.migrate import upgrade_async
    from infra.tables import new_id, utcnow

    settings = settings_for(data_dir)
    await upgrade_async(settings)
    async with await CatalogApp.open(settings) as app:
        svc = app.search
        filters = build_filters(SearchRequest(), ANONYMOUS, None)
        texts = queries(count + WARMUP)
        for text in texts[:WARMUP]:
            await svc.search(ANONYMOUS, SearchRequest(text=text, limit=PAGE))
        pack_s: list[float] = []
        second_page_s: list[float] = []
        candidates: list[int] = []
        sizes: list[int] = []
        for text in texts[WARMUP:]:
            vector, keyword = await svc._encode_and_match(text, filters, svc._depth())
            interpretation, _, rest, total = svc._rank(text, vector, keyword, filters, "relevance", PAGE)
            assert rest is not None
            candidates.append(total)
            started = time.process_time()
            for _ in range(repeats):
                snapshot = Snapshot(
                    id=new_id(),
                    account_id=None,
                    fingerprint="f" * 16,
                    total=total,
                    entries=[],  # as ``SearchService.search`` keeps a relevance-ranked text search
                    expires_at=utcnow(),
                    interpretation=interpretation,
                    later=(rest, total),
                )
                (row,) = _first_chunks([snapshot])
            pack_s.append((time.process_time() - started) / repeats)
            sizes.append(len(row.entries))
            request = SearchRequest(text=text, limit=PAGE)
            first = await svc.search(ANONYMOUS, request)
            await svc.snapshots.flush()
            assert first.end_cursor is not None
            later = SearchRequest(text=text, limit=PAGE, after=first.end_cursor)
            await svc.search(ANONYMOUS, later)  # warm: the page's listings are cached after this
            started = time.process_time()
            await svc.search(ANONYMOUS, later)
            second_page_s.append(time.process_time() - started)
        return {
            "listings": len(app.backend),
            "queries": count,
            "repeats": repeats,
            "candidates_mean": round(statistics.mean(candidates), 1),
            "prepare_and_pack_cpu_ms": round(statistics.mean(pack_s) * 1000, 4),
            "second_page_cpu_ms": round(statistics.mean(second_page_s) * 1000, 3),
            "row_bytes_mean": int(statistics.mean(sizes)),
        }


def report(result: dict[str, Any]) -> None:
    print(
        f"{result['listings']} listings, {result['queries']} queries, "
        f"{result['candidates_mean']} candidates ranked per search (mean)"
    )
    print(f"  writer: prepare + pack one snapshot   {result['prepare_and_pack_cpu_ms']:>8.4f} ms CPU")
    print(f"  whole second page (reads the row)     {result['second_page_cpu_ms']:>8.3f} ms CPU")
    print(f"  stored row (entries)                  {result['row_bytes_mean']:>8d} B")
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--root", type=Path, default=Path("var/bench"))
    args = parser.parse_args(argv)
    report(asyncio.run(measure(ensure_catalog(args.root, args.size), args.queries, args.repeats)))


if __name__ == "__main__":
    main()
