"""Settings read from the environment the way ``make run`` and ``mlrepo`` read them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.settings import Settings


def test_relative_directories_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``make run`` serves with the default data dir ``var``, a relative path. The Docker engine reads a
    relative bind source as a volume name, so every job with data (training, a dataset) failed in Docker
    with "includes invalid characters for a local volume name"; and a path resolved later would move with
    the process's directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLREPO_SANDBOX_WORK_DIR", "sandboxes")
    settings = Settings(artifact_key_dir=Path("keys"))
    assert settings.data_dir == tmp_path / "var"
    assert settings.sandbox_work_dir == tmp_path / "sandboxes"
    assert settings.artifact_key_dir == tmp_path / "keys"
    assert Settings(data_dir=Path("~/mlrepo")).data_dir == Path(os.path.expanduser("~/mlrepo"))
    monkeypatch.chdir("/")
    assert settings.data_dir == tmp_path / "var"  # fixed when read, not when used
    assert Settings(sandbox_work_dir=None).sandbox_work_dir is None
