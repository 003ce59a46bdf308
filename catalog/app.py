"""The catalog's service container: one per process, built from ``Settings``.

``await CatalogApp.open(settings)`` opens the database, the embedding encoder (loaded lazily, on first
encode), the search backend and the ranker, fills the index from the database (the rows carry their
embeddings, so startup does not re-encode), and wires the services the API, the CLI and the worker call:
``accounts``, ``listings``, ``reviews``, ``usage``, ``importer``, ``search``, ``demand``, ``pipelines``.

A process that must not hold the embedded index — the worker, or a CLI write while ``serve`` runs (tantivy
allows one writer per index directory) — opens with ``with_index=False``: its writes reach the database
only, and processes holding the index pick them up through ``ListingIndex.sync``.
"""

from __future__ import annotations

import logging
from types import TracebackType

from catalog.accounts import AccountService
from catalog.demand import DemandService
from catalog.importer import Importer
from catalog.indexing import ListingIndex
from catalog.listings import ListingService
from catalog.pipelines import PipelineService
from catalog.reviews import ReviewService
from catalog.search_service import SearchService
from catalog.search_snapshots import SnapshotStore
from catalog.snapshot_rows import snapshot_rows
from catalog.understanding_feed import UnderstandingFeed
from catalog.usage import UsageService
from infra.cursor_signing import CursorSigner
from infra.db import Database
from infra.settings import Settings
from ranking.query_understanding import QueryUnderstanding
from ranking.ranker import Ranker
from search.embeddings import Encoder
from search.factory import open_backend
from search.types import SearchBackend

logger = logging.getLogger("mlrepo.catalog")


class CatalogApp:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        encoder: Encoder,
        backend: SearchBackend | None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.encoder = encoder
        self.backend = backend
        self.index = ListingIndex(db, backend, encoder)
        self.accounts = AccountService(db)
        self.cursors = CursorSigner.from_settings(settings)  # signs listings', jobs' and outputs' cursors
        self.listings = ListingService(db, self.index, self.cursors)
        self.reviews = ReviewService(db)
        self.usage = UsageService(db, self.index, settings.usage_window_days)
        self.importer = Importer(self.listings, self.accounts)
        self.demand = DemandService(db, settings, encoder)
        self.pipelines = PipelineService(db, self.demand)
        self.ranker = Ranker(QueryUnderstanding(encoder.encode_documents))
        self.understanding = UnderstandingFeed(self.ranker.understanding)
        self.index.listeners.append(self.understanding)
        self.index.preparers.append(self.understanding.prepare)
        self.search = SearchService(
            settings,
            self.index,
            self.listings,
            self.demand,
            self.ranker,
            self.understanding,
            SnapshotStore(snapshot_rows(db, settings), settings),
            pipelines=self.pipelines,
        )

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        with_index: bool = True,
        migrate: bool = False,
        encoder: Encoder | None = None,
        load_index: bool = True,
    ) -> CatalogApp:
        """Open everything; ``migrate`` applies migrations first (``serve`` does, tests use templates).

        ``encoder`` lets tests and benchmarks share one loaded model across many apps. ``load_index=False``
        holds the index without filling it, for a caller that rebuilds it at once (``mlrepo reindex``):
        loading first would read and project every row twice.
        """
        if migrate:
            from infra.migrate import upgrade_async

            await upgrade_async(settings)
        db = Database.from_settings(settings)
        encoder = encoder or Encoder.from_settings(settings)
        backend = None
        try:
            if with_index:
                backend = open_backend(settings, encoder.dim)
            app = cls(settings, db, encoder, backend)
            if with_index and load_index:
                count = await app.index.load()
                logger.info("search index loaded with %d listings", count)
            return app
        except BaseException:
            if backend is not None:
                backend.close()
            await db.dispose()
            raise

    async def close(self) -> None:
        try:
            await self.search.flush()
            await self.search.snapshots.close()
            await self.demand.close()
            if self.backend is not None:
                self.backend.close()
        finally:
            await self.db.dispose()

    async def __aenter__(self) -> CatalogApp:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
