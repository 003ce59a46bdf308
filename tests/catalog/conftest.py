"""Catalog fixtures: a real ``CatalogApp`` (database, embedded index, MiniLM encoder) per test.

``catalog_app``, ``encoder``, ``alice`` (producer) and ``bob`` (requester) come from tests/conftest.py:
every test gets its own migrated database (SQLite and PostgreSQL) and its own index directory; the
encoder is loaded once per session.
"""

from __future__ import annotations

import pytest
from catalog_helpers import make_actor

from catalog.actors import Actor
from catalog.app import CatalogApp


@pytest.fixture
def app(catalog_app: CatalogApp) -> CatalogApp:
    """The catalog under test, by the name these tests use."""
    return catalog_app


@pytest.fixture
async def admin(app: CatalogApp) -> Actor:
    return await make_actor(app, "root", "admin")
