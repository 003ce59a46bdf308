"""Helpers shared by the catalog tests (imported by module name: tests/ is not a package)."""

from __future__ import annotations

from catalog.accounts import AccountInfo
from catalog.actors import Actor
from catalog.app import CatalogApp


async def make_actor(app: CatalogApp, name: str, role: str = "producer") -> Actor:
    account: AccountInfo = await app.accounts.create(name, role)
    return account.as_actor()


def listing_data(name: str = "sentiment-model", **overrides: object) -> dict:
    data = {
        "name": name,
        "kind": "model",
        "category": "Natural Language Processing",
        "subcategory": "Text Classification",
        "description": "Classifies the sentiment of short English texts as positive or negative.",
        "tags": ["sentiment", "reviews"],
        "accuracy": 0.91,
        "accuracy_metric": "accuracy",
        "accuracy_dataset": "sst2",
        "latency_ms": 12,
        "input_format": "text",
        "output_format": "class-label",
        "resources": {"cpu": 1, "memory_mb": 512, "gpu": 0},
    }
    data.update(overrides)
    return data
