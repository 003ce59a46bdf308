"""``mlrepo publish`` and ``mlrepo verify --all`` as a person runs them (typer runner, real services)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from notebook_support import word_stats_manifest, word_stats_notebook
from publishing_support import package_files, sentiment_manifest, zip_bytes
from typer.testing import CliRunner

from api.cli import app
from infra.settings import Settings


def mlrepo(settings: Settings, *args: str):
    options = ["--data-dir", str(settings.data_dir), "--database-url", settings.database_url or ""]
    return CliRunner().invoke(app, [*options, *args], catch_exceptions=False)


@pytest.fixture
def producer_token(sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch, bwrap_ok: bool) -> str:
    monkeypatch.setenv("MLREPO_RUNTIME", "bwrap")
    created = mlrepo(sqlite_settings, "account", "create", "alice", "--role", "producer", "--token")
    assert created.exit_code == 0, created.output
    return created.stdout.split("token (shown once):")[1].strip()


def test_publish_then_verify_all(sqlite_settings: Settings, producer_token: str, tmp_path: Path) -> None:
    package = tmp_path / "tiny.zip"
    package.write_bytes(zip_bytes(package_files(sentiment_manifest())))
    result = mlrepo(sqlite_settings, "publish", str(package), "--token", producer_token, "--timeout", "4")
    assert result.exit_code == 0, result.output
    publication = json.loads(result.stdout)
    assert publication["status"] == "published" and publication["version"] == "1.0.0"
    assert [s["status"] for s in publication["steps"]] == ["succeeded"] * 5

    verified = mlrepo(sqlite_settings, "verify", "--all")
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout) == [
        {"listing_id": publication["listing_id"], "outcome": "verified", "problems": []}
    ]


def test_failed_publication_exits_1_with_the_reason(
    sqlite_settings: Settings, producer_token: str, tmp_path: Path
) -> None:
    manifest = sentiment_manifest()
    del manifest["entrypoint"]
    package = tmp_path / "broken.zip"
    package.write_bytes(zip_bytes(package_files(manifest)))
    result = mlrepo(sqlite_settings, "publish", str(package), "--token", producer_token)
    assert result.exit_code == 1
    assert "entrypoint: required" in json.loads(result.stdout)["error"]
    # The step's code, as Query.publication shows it: the CLI's steps left it out.
    [failed] = [s for s in json.loads(result.stdout)["steps"] if s["status"] == "failed"]
    assert (failed["name"], failed["error_code"]) == ("package", "BAD_INPUT")
    # --image says the kind: it was taken for a package, "give the package file to publish".
    image_only = mlrepo(sqlite_settings, "publish", "--image", "127.0.0.1:5000/alice/x:1", "--token", "t")
    assert image_only.exit_code == 2 and "--manifest is required for kind image" in image_only.stderr
    unauthenticated = mlrepo(sqlite_settings, "publish", str(package), "--token", "nope")
    assert unauthenticated.exit_code == 2 and "UNAUTHENTICATED" in unauthenticated.stderr


def test_no_wait_without_redis_still_publishes(
    sqlite_settings: Settings, producer_token: str, tmp_path: Path
) -> None:
    """Without Redis the publication runs in this process: ``--no-wait`` used to exit before it began,
    leaving it QUEUED with nothing to ever run it."""
    package = tmp_path / "tiny.zip"
    package.write_bytes(zip_bytes(package_files(sentiment_manifest())))
    result = mlrepo(sqlite_settings, "publish", str(package), "--no-wait", "--token", producer_token)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "published"


def test_a_manifest_that_is_not_json_is_a_clear_error(
    sqlite_settings: Settings, producer_token: str, tmp_path: Path
) -> None:
    """A malformed --manifest ended the command with a JSONDecodeError traceback."""
    data = tmp_path / "data.jsonl"
    data.write_text('{"input": "x"}\n')
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{not json")
    result = mlrepo(
        sqlite_settings,
        "publish",
        str(data),
        "--kind",
        "dataset",
        "--manifest",
        str(manifest),
        "--token",
        producer_token,
    )
    assert result.exit_code == 2 and "manifest.json" in result.stderr and "not valid JSON" in result.stderr


def test_publish_a_notebook_as_it_is(sqlite_settings: Settings, producer_token: str, tmp_path: Path) -> None:
    notebook = tmp_path / "word-stats.ipynb"
    notebook.write_bytes(word_stats_notebook())
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(word_stats_manifest()))
    args = ("publish", str(notebook), "--kind", "notebook", "--token", producer_token)
    result = mlrepo(sqlite_settings, *args, "--manifest", str(manifest))
    assert result.exit_code == 0, result.output
    publication = json.loads(result.stdout)
    assert publication["status"] == "published" and publication["source_kind"] == "notebook"
    assert [s["status"] for s in publication["steps"]] == ["succeeded"] * 5
    # Without --manifest the notebook's own metadata.mlrepo is its manifest; here it has none.
    bare = mlrepo(sqlite_settings, *args)
    assert bare.exit_code == 1
    assert "name: Field required" in json.loads(bare.stdout)["error"]
    # A .ipynb is a notebook without --kind: it was sent as a code package, "not a zip, tar or tar.gz".
    manifest.write_text(json.dumps({**word_stats_manifest(), "version": "1.0.1"}))
    unsaid = mlrepo(
        sqlite_settings, "publish", str(notebook), "--token", producer_token, "--manifest", str(manifest)
    )
    assert unsaid.exit_code == 0, unsaid.output
    assert json.loads(unsaid.stdout)["source_kind"] == "notebook"


async def test_publish_and_verify_beside_a_running_server(
    sqlite_settings: Settings, producer_token: str, tmp_path: Path
) -> None:
    """``mlrepo serve`` holds the embedded index (one writer per directory): ``publish`` and ``verify``
    opened it too and stopped with CONFLICT "in use by another process" whenever the server ran. Like
    ``import`` and the worker, they write the database only; the server picks the listing up."""
    from catalog.actors import ANONYMOUS
    from catalog.app import CatalogApp
    from catalog.search_service import SearchRequest

    package = tmp_path / "tiny.zip"
    package.write_bytes(zip_bytes(package_files(sentiment_manifest())))
    server = await CatalogApp.open(sqlite_settings)  # holds the index, as `mlrepo serve` does
    try:
        published = await asyncio.to_thread(
            mlrepo, sqlite_settings, "publish", str(package), "--token", producer_token
        )
        assert published.exit_code == 0, published.output
        listing_id = json.loads(published.stdout)["listing_id"]
        verified = await asyncio.to_thread(mlrepo, sqlite_settings, "verify", listing_id)
        assert verified.exit_code == 0, verified.output
        await server.index.sync(force=True)
        found = await server.search.search(ANONYMOUS, SearchRequest(text="positive or negative review"))
        assert listing_id in [result.listing.id for result in found.results]
    finally:
        await server.close()
