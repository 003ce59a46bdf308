"""Seed the demo catalog (``make run`` does this) — idempotent: listings that already exist are skipped.

The demo listings (``catalog/data/demo_catalog.jsonl``) were written for this project: all five kinds,
with formats that chain (image → object detector → boxes-to-crops → crop classifier; text → tokenizer →
sentiment scorer) so a newcomer's first searches and pipelines have something sensible to find.
They belong to the system producer account ``mlrepo``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from catalog.app import CatalogApp
from catalog.importer import ImportReport, Progress


def demo_catalog_path() -> Path:
    return Path(str(resources.files("catalog") / "data" / "demo_catalog.jsonl"))


async def seed_demo(app: CatalogApp, progress: Progress | None = None) -> ImportReport:
    """Import the demo listings that are not there yet; returns what was created and skipped."""
    owner = await app.accounts.system_account()
    return await app.importer.import_file(demo_catalog_path(), owner_id=owner.id, progress=progress)
