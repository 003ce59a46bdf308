"""Search fixtures: a fresh embedded backend per test (the real session `encoder` is tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from search_support import DIM

from search.embedded import EmbeddedBackend


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


@pytest.fixture
def backend(index_dir: Path) -> Iterator[EmbeddedBackend]:
    with EmbeddedBackend(index_dir, DIM, ann_threshold=1_000_000) as opened:
        yield opened
