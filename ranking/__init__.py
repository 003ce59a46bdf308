"""Ranking: query understanding, candidate fusion, quality signals and explanations.

The catalog's search service owns retrieval (keyword and vector candidates under the facet filters) and
calls ``ranking.ranker.Ranker.rank`` with them; the catalog-derived state of query understanding
(``ranking.query_understanding.QueryUnderstanding``) follows the index through ``rebuild``/``update``.
Every number lives in ``ranking.weights`` with the measurement that chose it
(``python -m benchmarks.relevance DIR --tune``).
"""
