"""What a page of listings costs with their relations (reviews, rating, version history): SQL statements
and time, through the real GraphQL app in-process.

    python -m benchmarks.listing_relations [--listings 100] [--repeats 5] [--database-url URL]

Builds a small catalog in a temporary data dir (SQLite there, or the PostgreSQL database of
``--database-url``, which must be empty and migrated): ``--listings`` listings, each with ``REVIEWS``
reviews and a second version. Then asks ``listings(first: N)`` and ``search(limit: N)`` for N in
``PAGES``, selecting every field of a listing and its relations, through the ASGI app (httpx's ASGI
transport: the same view, context and resolvers uvicorn serves). Per page: the SQL statements the
request ran (a listener on SQLAlchemy's ``Engine``: every engine of the process, the SQLite reader's
too) and the best of ``--repeats`` requests (the machine is shared: slower ones measure the neighbours).

A page's statements should not grow with its size: relations are loaded for the whole page at once
(``api.loaders``). Prints a table and one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REVIEWS = 3
PAGES = (10, 47, 100)
LISTING_FIELDS = """
  id kind name category subcategories description documentation framework tags license inputFormat
  inputSchema outputFormat outputSchema resources { cpu memoryMb gpu } trainingResources { cpu memoryMb gpu }
  timeoutS accuracy { value metric dataset } latencyP50Ms latencyP95Ms sizeBytes storageLocation examples
  extra producer { id name } version visibility sharedWith verificationStatus status usageCount successRate
  relativeUsage createdAt updatedAt
  reviews(first: 5) { id author rating text createdAt } rating { average count }
  versions { id version artifactKind notes createdAt }
"""
LISTINGS = (
    "query($first: Int!) { listings(first: $first) { totalCount edges { node {" + LISTING_FIELDS + "} } } }"
)
SEARCH = (
    'query($limit: Int!) { search(input: {text: "text classifier", limit: $limit}) '
    "{ totalCount results { score listing {" + LISTING_FIELDS + "} } } }"
)


class StatementCounter:
    """Counts the SQL statements every engine of this process sends while it is on."""

    def __init__(self) -> None:
        self.count = 0
        self.on = False

    def __call__(self, *_: Any) -> None:
        if self.on:
            self.count += 1

    async def measure(self, request: Any) -> tuple[int, Any]:
        self.count, self.on = 0, True
        try:
            result = await request()
        finally:
            self.on = False
        return self.count, result


async def build(app: Any, listings: int) -> None:
    catalog = app.state.services.catalog
    owner_info = await catalog.accounts.create("bench-producer", "producer")
    owner = await catalog.accounts.authenticate((await catalog.accounts.create_token(owner_info.id)).secret)
    reviewers = []
    for i in range(REVIEWS):
        info = await catalog.accounts.create(f"bench-reviewer-{i}", "requester")
        reviewers.append(
            await catalog.accounts.authenticate((await catalog.accounts.create_token(info.id)).secret)
        )
    for i in range(listings):
        view = await catalog.listings.create(
            owner,
            {
                "name": f"text classifier {i}",
                "kind": "model",
                "category": "Natural Language Processing",
                "description": f"Classifies short texts into topics, variant {i}.",
                "input_format": "text",
                "output_format": "class-label",
            },
        )
        await catalog.listings.update(owner, view.id, {"license": "MIT", "version": "1.1.0"})
        for j, reviewer in enumerate(reviewers):
            await catalog.reviews.add(reviewer, view.id, 1 + (i + j) % 5, f"review {j} of {i}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from api.app import create_app
    from infra.settings import Settings

    with tempfile.TemporaryDirectory(prefix="mlrepo-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=args.database_url, redis_url=None)
        app = create_app(settings, migrate=True)
        counter = StatementCounter()
        event.listen(Engine, "before_cursor_execute", counter)
        try:
            async with app.router.lifespan_context(app):
                await build(app, args.listings)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
                    figures: dict[str, Any] = {}
                    for name, query, argument in (
                        ("listings", LISTINGS, "first"),
                        ("search", SEARCH, "limit"),
                    ):
                        for page in PAGES:
                            body = {"query": query, "variables": {argument: page}}

                            async def request(body: dict = body) -> Any:
                                response = await http.post("/graphql", json=body)
                                payload = response.json()
                                assert not payload.get("errors"), payload["errors"]
                                return payload

                            await request()  # warm: caches, statement compilation
                            statements, best = 0, float("inf")
                            for _ in range(args.repeats):
                                started = time.perf_counter()
                                statements, payload = await counter.measure(request)
                                best = min(best, time.perf_counter() - started)
                            rows = payload["data"][name]
                            shown = len(rows["edges"] if name == "listings" else rows["results"])
                            figures[f"{name}_{page}"] = {
                                "results": shown,
                                "statements": statements,
                                "ms": round(best * 1000, 1),
                            }
        finally:
            event.remove(Engine, "before_cursor_execute", counter)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database (default: SQLite)")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    print(f"{'request':<16}{'results':>8}{'statements':>12}{'best ms':>10}")
    for name, row in figures.items():
        print(f"{name:<16}{row['results']:>8}{row['statements']:>12}{row['ms']:>10}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
