"""Search: one backend interface (``search.types``), two implementations, and the embedding model.

- ``search.embeddings.Encoder``: MiniLM query/document vectors (LRU-cached queries).
- ``search.documents``: the text a listing is embedded as; keyword field boosts.
- ``search.embedded.EmbeddedBackend``: tantivy BM25 + in-memory vectors (exact, HNSW at scale).
- ``search.opensearch.OpenSearchBackend``: the same contract over OpenSearch.
- ``search.factory.open_backend``: the backend ``Settings.search_backend`` selects.

Modules import their heavy dependencies themselves, so importing this package stays cheap.
"""
