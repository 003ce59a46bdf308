"""Search fixtures: one real encoder per session (it costs ~1-2 s to load) and a fresh backend per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from search_support import DIM

from search.embedded import EmbeddedBackend
from search.embeddings import Encoder


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return Encoder(cache_size=16)


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


@pytest.fixture
def backend(index_dir: Path) -> Iterator[EmbeddedBackend]:
    with EmbeddedBackend(index_dir, DIM, ann_threshold=1_000_000) as opened:
        yield opened
