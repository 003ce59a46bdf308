"""Bulk import throughput versus raw batched encoding of the same listings (issue 6: import ≥ 80% of it).

    python -m benchmarks.import_throughput [--count N] [--rounds R] [--database-url URL]

Encoding is the bound: an import that keeps up with the model is as fast as it can be. Each round encodes
the listings' texts with the same encoder and batch size the importer uses, then imports the same lines
into a fresh data dir (SQLite by default) with the index on; rounds alternate so both see the same machine
load. Prints one JSON line last: listings/s for each and their ratio (medians over the rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.synthetic_catalog import write_listings


def listing_texts(path: Path) -> list[str]:
    from catalog.listing_input import parse_listing
    from search.documents import listing_text

    texts = []
    for line in path.read_text().splitlines():
        listing = parse_listing(json.loads(line))
        subcategories = listing.merged_subcategories() or []
        texts.append(
            listing_text(
                listing.name, listing.category, subcategories, listing.tags or [], listing.description or ""
            )
        )
    return texts


async def one_import(source: Path, encoder: object, database_url: str | None) -> float:
    from catalog.app import CatalogApp
    from infra.migrate import upgrade_async
    from infra.settings import Settings

    with tempfile.TemporaryDirectory(prefix="mlrepo-import-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=database_url)
        await upgrade_async(settings)
        async with await CatalogApp.open(settings, encoder=encoder) as app:  # type: ignore[arg-type]
            started = time.perf_counter()
            report = await app.importer.import_file(source)
            elapsed = time.perf_counter() - started
        if report.errors or report.created != len(source.read_text().splitlines()):
            raise SystemExit(f"import was not clean: {report.summary()} {report.errors[:3]}")
        return report.created / elapsed


async def main(count: int, rounds: int, database_url: str | None) -> dict[str, float]:
    from catalog.indexing import ENCODE_BATCH
    from search.embeddings import Encoder

    encoder = Encoder()
    encoder.encode_documents(["warm the model up"])
    with tempfile.TemporaryDirectory(prefix="mlrepo-import-src-") as tmp:
        source = write_listings(Path(tmp) / "listings.jsonl", count)
        texts = listing_texts(source)
        encode_rates, import_rates = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            encoder.encode_documents(texts, batch_size=ENCODE_BATCH)
            encode_rates.append(len(texts) / (time.perf_counter() - started))
            import_rates.append(await one_import(source, encoder, database_url))
            print(f"round: encode {encode_rates[-1]:.0f}/s  import {import_rates[-1]:.0f}/s", flush=True)
    encode, imported = statistics.median(encode_rates), statistics.median(import_rates)
    return {
        "listings": count,
        "encode_per_s": round(encode, 1),
        "import_per_s": round(imported, 1),
        "ratio": round(imported / encode, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp data dir")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.count, args.rounds, args.database_url))))
