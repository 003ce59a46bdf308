"""Choose the search backend ``Settings.search_backend`` names.

Backends import their heavy dependencies (tantivy, opensearch-py) only when chosen; the OpenSearch one also
loads tantivy's analyzer (no index) to read query words as the embedded backend does. The returned backend
is empty until the catalog calls ``load(docs)`` with every listing projection from the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.settings import Settings
    from search.embedded import EmbeddedBackend
    from search.opensearch import OpenSearchBackend


def open_backend(settings: Settings, encoder_dim: int) -> EmbeddedBackend | OpenSearchBackend:
    """The embedded backend (``embedded``, default) or the OpenSearch one (``opensearch``).

    Raises ``Conflict`` when another process holds the embedded index, and ``Unavailable`` when
    OpenSearch is selected without ``MLREPO_OPENSEARCH_URL``.
    """
    if settings.search_backend == "opensearch":
        from search.opensearch import OpenSearchBackend

        return OpenSearchBackend.from_settings(settings, encoder_dim)
    from search.embedded import EmbeddedBackend

    return EmbeddedBackend.from_settings(settings, encoder_dim)


make_backend = open_backend
