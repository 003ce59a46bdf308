"""The test fixtures find the PostgreSQL server of whatever major version the distribution installed.

``scripts/test-services.sh`` installs the distribution's ``postgresql`` (16 on Ubuntu 24.04, 17 on
Debian 13); fixtures that looked only under ``/usr/lib/postgresql/15/bin`` skipped every PostgreSQL test
there, and failed them all under ``CI=true``, although a server was installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services import postgres_bin_dir


def install(root: Path, version: str, programs: tuple[str, ...] = ("initdb", "pg_ctl")) -> Path:
    bin_dir = root / version / "bin"
    bin_dir.mkdir(parents=True)
    for program in programs:
        (bin_dir / program).write_text("#!/bin/sh\n")
        (bin_dir / program).chmod(0o755)
    return bin_dir


@pytest.fixture(autouse=True)
def no_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLREPO_TEST_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))


def test_the_installed_version_is_found_whatever_it_is(tmp_path: Path) -> None:
    assert postgres_bin_dir(tmp_path) is None
    sixteen = install(tmp_path, "16")
    assert postgres_bin_dir(tmp_path) == sixteen


def test_the_newest_complete_server_wins(tmp_path: Path) -> None:
    install(tmp_path, "9.6")
    fifteen = install(tmp_path, "15")
    install(tmp_path, "17", programs=("pg_ctl",))  # only the client-side leftovers of a removed server
    assert postgres_bin_dir(tmp_path) == fifteen
    seventeen = install(tmp_path / "more", "17")
    assert postgres_bin_dir(tmp_path / "more") == seventeen


def test_a_server_on_path_is_found_and_an_explicit_directory_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = install(tmp_path / "usr", "local")
    monkeypatch.setenv("PATH", str(on_path))
    assert postgres_bin_dir(tmp_path / "no-debian-layout") == on_path
    monkeypatch.setenv("MLREPO_TEST_PG_BIN", "/opt/pg/bin")
    assert postgres_bin_dir(tmp_path / "no-debian-layout") == Path("/opt/pg/bin")
