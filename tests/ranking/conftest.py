"""Ranking fixtures: one real encoder per session and a small synthetic catalog with its embeddings."""

from __future__ import annotations

import pytest

from search.embeddings import Encoder


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return Encoder(cache_size=64)
