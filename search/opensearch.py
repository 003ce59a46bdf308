"""The OpenSearch backend: the same ``SearchBackend`` contract over a shared OpenSearch cluster.

Request bodies come from ``search.opensearch_queries`` (pure, unit-tested); this class only talks to the
server. Listings live in a physical index ``{alias}-v{mapping}-{stamp}`` reached through the alias
``Settings.opensearch_index``; a full rebuild loads a new physical index and swaps the alias atomically,
so searches never see a half-built index (zero-downtime reindex), then deletes the old one.

Startup (``load``): unlike the embedded backend, the cluster is shared by every api/worker process and
outlives them, so ``load`` trusts the live index when it was created with the current settings and
mappings (a digest of them in the mapping's ``_meta``, like the embedded backend's schema marker), as many
documents as the database and the same sum of document fingerprints (one aggregation request; a document
that reached the index from a transaction that never committed changes the sum), and otherwise rebuilds
it behind the alias. ``reindex`` always rebuilds, and so does ``mlrepo reindex``
(``load(docs, rebuild=True)``): the operator's repair trusts nothing.

Leftovers: a rebuild that fails before its swap deletes its half-built index (the alias never left the
old one, so searches see no change); one whose process dies, or whose delete or swap request fails, leaves
an index no alias points to, and so does a swap whose old index could not be deleted. Every ``ensure``
(each load and rebuild) deletes such indices of this alias once their builder's heartbeat — in the
mapping's ``_meta``, set at creation and renewed every ``HEARTBEAT_S`` while loading — is older than
``ABANDONED_AFTER_S``, so a rebuild running in another process right now is left alone.

Writes: bulk requests retry throttling (429) with exponential backoff; index/delete actions are idempotent
by ``_id``, so a caller may safely repeat a write that raised. OpenSearch bulk writes are not atomic
across documents: a partly failed batch raises ``Unavailable`` naming the failed ids, and the database,
which stays the truth, lets ``mlrepo reindex`` repair the projection. Writes refresh before returning so
the next search sees them, like the embedded backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.errors import Unavailable
from search import opensearch_queries as q
from search.filters import validate_filters
from search.types import Hit, IndexedListing, SearchFilters, WordWeights
from search.validation import check_page, check_sort, checked_batch, unit_query

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from infra.settings import Settings

log = logging.getLogger(__name__)

BULK_CHUNK = 500
BULK_RETRIES = 5
REQUEST_TIMEOUT_S = 30
HEARTBEAT_S = 60
# Far above a heartbeat interval plus the longest bulk retry (5 backoffs of at most 30 s).
ABANDONED_AFTER_S = 15 * 60


class OpenSearchBackend:
    def __init__(self, client: OpenSearch, alias: str, dim: int) -> None:
        self.client = client
        self.alias = alias
        self.dim = dim

    @classmethod
    def connect(cls, url: str, alias: str, dim: int) -> OpenSearchBackend:
        from opensearchpy import OpenSearch

        client = OpenSearch(
            hosts=[url], timeout=REQUEST_TIMEOUT_S, max_retries=3, retry_on_timeout=True, http_compress=True
        )
        return cls(client, alias, dim)

    @classmethod
    def from_settings(cls, settings: Settings, dim: int) -> OpenSearchBackend:
        if not settings.opensearch_url:
            raise Unavailable("search_backend is 'opensearch' but MLREPO_OPENSEARCH_URL is not set")
        return cls.connect(settings.opensearch_url, settings.opensearch_index, dim)

    # ------------------------------------------------------------------ plumbing
    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        """Send one request, turning transport and server errors into ``Unavailable``."""
        from opensearchpy.exceptions import OpenSearchException

        try:
            return fn(**kwargs)
        except OpenSearchException as exc:
            raise Unavailable(f"OpenSearch {what} failed: {exc}") from exc

    def _bulk(self, actions: Iterator[dict[str, Any]], *, visible: bool = True) -> None:
        """Send ``actions``; with ``visible`` each chunk returns once searches see it. A rebuild's index
        serves nobody until its swap and is refreshed once before it: waiting for a refresh after each of
        its chunks waited up to the refresh interval (1 s) per ``BULK_CHUNK`` listings."""
        from opensearchpy import helpers
        from opensearchpy.exceptions import OpenSearchException

        failed: list[str] = []
        try:
            for ok, item in helpers.streaming_bulk(
                self.client,
                actions,
                chunk_size=BULK_CHUNK,
                max_retries=BULK_RETRIES,
                initial_backoff=1,
                max_backoff=30,
                raise_on_error=False,
                refresh="wait_for" if visible else "false",
            ):
                if not ok:
                    result = next(iter(item.values()))
                    if not (result.get("status") == 404 and "delete" in item):  # deleting twice is fine
                        failed.append(str(result.get("_id")))
        except OpenSearchException as exc:
            raise Unavailable(f"OpenSearch bulk write failed: {exc}") from exc
        if failed:
            raise Unavailable(f"OpenSearch did not index {len(failed)} listings: {', '.join(failed[:10])}")

    def _physical_indices(self) -> list[str]:
        """The indices behind the alias (normally one; two only mid-swap)."""
        from opensearchpy.exceptions import NotFoundError

        try:
            return sorted(self._call("alias lookup", self.client.indices.get_alias, name=self.alias))
        except Unavailable as exc:
            if isinstance(exc.__cause__, NotFoundError):
                return []
            raise

    def ensure(self) -> None:
        """Install the index template and, on a fresh cluster, an empty index behind the alias."""
        self._call(
            "template",
            self.client.indices.put_index_template,
            name=self.alias,
            body=q.index_template(self.alias, self.dim),
        )
        self._delete_abandoned()
        if not self._physical_indices():
            self._swap_to(self._create_index())

    def _delete_abandoned(self) -> None:
        """Delete what crashed rebuilds left behind (see the module docstring)."""
        pattern = f"{self.alias}-v*"
        indices = self._call("index listing", self.client.indices.get, index=pattern, allow_no_indices=True)
        for name in q.abandoned_indices(self.alias, indices, time.time(), ABANDONED_AFTER_S):
            # Another process may be deleting it too: already gone is fine.
            self._call("delete abandoned index", self.client.indices.delete, index=name, ignore=[404])

    def _create_index(self) -> str:
        name = q.physical_index_name(
            self.alias, time.strftime("%Y%m%d%H%M%S") + f"{time.time_ns() % 10**6:06d}"
        )
        mappings = {**q.index_mappings(self.dim), "_meta": q.index_meta(self.dim, heartbeat=time.time())}
        body = {"settings": q.index_settings(), "mappings": mappings}
        self._call("create index", self.client.indices.create, index=name, body=body)
        return name

    def _heartbeating(self, index: str, actions: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Pass ``actions`` through, renewing ``index``'s heartbeat every ``HEARTBEAT_S`` meanwhile."""
        last = time.monotonic()
        for action in actions:
            if time.monotonic() - last >= HEARTBEAT_S:
                body = {"_meta": q.index_meta(self.dim, heartbeat=time.time())}
                self._call("heartbeat", self.client.indices.put_mapping, index=index, body=body)
                last = time.monotonic()
            yield action

    def _mapping_digest(self, index: str) -> str | None:
        """The ``mapping_digest`` ``index`` was created with (see ``load``)."""
        response = self._call("mapping lookup", self.client.indices.get_mapping, index=index)
        return q.mapping_digest_from_response(response, index)

    def _swap_to(self, new_index: str) -> None:
        old = [name for name in self._physical_indices() if name != new_index]
        self._call(
            "alias swap",
            self.client.indices.update_aliases,
            body=q.alias_swap_actions(self.alias, new_index, old),
        )
        for name in old:
            self._delete_leftover(name, "old index")

    # ------------------------------------------------------------------ lifecycle
    def load(self, docs: Iterable[IndexedListing], *, rebuild: bool = False) -> bool:
        """Make the alias serve ``docs``; True if it had to be rebuilt (see the module docstring).

        ``rebuild`` (``mlrepo reindex``) always rebuilds: the digest cannot see a damaged index."""
        docs = checked_batch(docs, self.dim)
        self.ensure()
        indices = self._physical_indices()
        current = len(indices) == 1 and self._mapping_digest(indices[0]) == q.mapping_digest(self.dim)
        if not rebuild and current and self._digest() == (len(docs), sum(map(q.fingerprint, docs))):
            return False
        self.reindex(docs)
        return True

    def reindex(self, docs: Iterable[IndexedListing]) -> None:
        """Build a new physical index from ``docs``, then atomically point the alias at it."""
        docs = checked_batch(docs, self.dim)
        self.ensure()
        new_index = self._create_index()
        try:
            self._bulk(self._heartbeating(new_index, q.index_actions(new_index, docs)), visible=False)
            self._call("refresh", self.client.indices.refresh, index=new_index)
        except Exception:
            self._delete_leftover(new_index, "half-built index")
            raise
        # A failed swap keeps the new index: the request may have been applied before the connection
        # dropped, and deleting it would leave the alias serving nothing. Its heartbeat goes stale.
        self._swap_to(new_index)

    def _delete_leftover(self, index: str, what: str) -> None:
        """Delete an index nothing serves. A failure is logged, not raised: the caller's own outcome (the
        error that stopped a rebuild, or a swap that succeeded) matters more, and ``_delete_abandoned``
        deletes the index once its heartbeat is stale."""
        try:
            self._call(f"delete {what}", self.client.indices.delete, index=index, ignore=[404])
        except Unavailable as exc:
            log.warning("%s; the next start deletes %s once it is abandoned", exc, index)

    def clear(self) -> None:
        self.reindex([])

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ writes
    def upsert(self, docs: Sequence[IndexedListing]) -> None:
        docs = checked_batch(docs, self.dim)
        if docs:
            self._bulk(q.index_actions(self.alias, docs))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._bulk(q.delete_actions(self.alias, dict.fromkeys(ids)))

    # ------------------------------------------------------------------ reads
    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("search", self.client.search, index=self.alias, body=body)

    def keyword(
        self, text: str, filters: SearchFilters, limit: int, word_weights: WordWeights | None = None
    ) -> list[Hit]:
        check_page(limit)
        validate_filters(filters)
        body = q.keyword_query(text, filters, limit, word_weights) if limit else None
        if body is None:  # nothing asked, or no searchable word
            return []
        return q.hits_from_response(self._search(body))

    def vector(self, vector: np.ndarray, filters: SearchFilters, limit: int) -> list[Hit]:
        check_page(limit)
        validate_filters(filters)
        query = unit_query(vector, self.dim)
        if limit == 0:
            return []
        hits = q.hits_from_response(self._search(q.knn_query(query, filters, limit)))
        return [Hit(h.id, q.cosine_from_score(h.score), h.rank) for h in hits]

    def filtered(self, filters: SearchFilters, sort: str, limit: int, offset: int = 0) -> list[Hit]:
        check_page(limit, offset)
        sort = check_sort(sort, q.SORTS)
        validate_filters(filters)
        if q.window(limit, offset) == 0:  # nothing asked, or a page past what OpenSearch can return
            return []
        return q.sorted_hits_from_response(self._search(q.sorted_query(filters, sort, limit, offset)), offset)

    def _digest(self) -> tuple[int, int]:
        """``(documents, sum of their fingerprints)`` of the served index."""
        return q.digest_from_response(self._search(q.digest_query()))

    def count(self, filters: SearchFilters) -> int:
        validate_filters(filters)
        response = self._call("count", self.client.count, index=self.alias, body=q.count_query(filters))
        return int(response["count"])

    def get(self, ids: Sequence[str], *, with_embeddings: bool = True) -> dict[str, IndexedListing]:
        if not ids:
            return {}
        params = q.mget_params(with_embeddings)
        response = self._call("mget", self.client.mget, index=self.alias, body=q.mget_body(ids), **params)
        return q.docs_from_mget(response)
