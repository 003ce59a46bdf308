"""Bulk import: bad lines reported by number and reason, valid lines imported, re-import idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from catalog_helpers import listing_data, make_actor

from catalog.actors import ANONYMOUS
from catalog.app import CatalogApp
from catalog.importer import ImportReport
from catalog.listings import ListingFilter
from infra.errors import BadInput
from tests.services import require_service

HF_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "relevance" / "hf-dev" / "listings.jsonl"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def test_bad_lines_are_reported_and_valid_lines_imported(app: CatalogApp, tmp_path: Path) -> None:
    await make_actor(app, "ada", "producer")
    lines = [
        json.dumps(listing_data("good-one")),
        "{not json",
        json.dumps(listing_data("bad-accuracy", accuracy=3)),
        "",
        json.dumps(["a", "list"]),
        json.dumps(
            listing_data("good-two", kind="dataset", input_format=None, output_format=None, owner="ada")
        ),
        json.dumps(listing_data("good-one")),
        json.dumps(listing_data("unknown-owner", owner="nobody")),
        json.dumps(listing_data("bad-format", input_format="hologram")),
        json.dumps(listing_data("with-extra", source_url="https://example.org/model")),
    ]
    progress: list[tuple[int, int]] = []
    report = await app.importer.import_file(
        write_lines(tmp_path / "in.jsonl", lines), progress=lambda d, t: progress.append((d, t)), batch_size=3
    )
    assert report.lines == 10 and report.created == 3
    bad = {p.line: p.reason for p in report.errors}
    assert set(bad) == {2, 3, 5, 7, 8, 9}
    assert "not valid JSON" in bad[2]
    assert "accuracy" in bad[3]
    assert "JSON object" in bad[5]
    assert "repeats line 1" in bad[7]
    assert "nobody" in bad[8]
    assert "input_format" in bad[9]
    assert any(w.line == 10 and "source_url" in w.reason for w in report.warnings)
    assert progress[-1] == (10, 10)

    page = await app.listings.list(ANONYMOUS, first=10)
    assert sorted(i.name for i in page.items) == ["good-one", "good-two", "with-extra"]
    owners = {i.name: i.owner_id for i in page.items}
    system = await app.accounts.system_account()
    ada = await app.accounts.find_by_name("ada")
    assert owners["good-one"] == system.id and owners["good-two"] == ada.id
    extra = next(i for i in page.items if i.name == "with-extra").extra
    assert extra == {"source_url": "https://example.org/model"}
    assert len(app.backend) == 3  # the index holds exactly the imported listings


async def test_reimport_skips_or_updates_existing(app: CatalogApp, tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "in.jsonl", [json.dumps(listing_data("one")), json.dumps(listing_data("two"))]
    )
    assert (await app.importer.import_file(path)).created == 2
    again = await app.importer.import_file(path)
    assert (again.created, again.skipped, again.errors) == (0, 2, [])
    write_lines(path, [json.dumps(listing_data("one", latency_ms=99))])
    updated = await app.importer.import_file(path, on_existing="update")
    assert updated.updated == 1
    page = await app.listings.list(ANONYMOUS, ListingFilter())
    assert {i.name: i.latency_p50_ms for i in page.items} == {"one": 99, "two": 12}


async def test_missing_file_is_bad_input(app: CatalogApp, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        await app.importer.import_file(tmp_path / "absent.jsonl")


async def test_hf_dev_catalog_imports_every_line(sqlite_settings, encoder) -> None:
    # CI lays ../shared beside the clone: there the data set must be present, not silently skipped.
    require_service("the shared relevance data set", HF_DEV.exists(), f"{HF_DEV} is missing")
    async with await CatalogApp.open(sqlite_settings, encoder=encoder) as app:
        report = await app.importer.import_file(HF_DEV)
        assert report.errors == []
        assert report.created == sum(1 for line in HF_DEV.read_text().splitlines() if line.strip()) == 936
        assert len(app.backend) == 936


def test_the_summary_counts_one_line_in_the_singular() -> None:
    """``mlrepo import`` of a one-line file said "1 lines"."""
    assert ImportReport(lines=1, created=1).summary().startswith("1 line: 1 created, ")
    assert ImportReport(lines=2, created=2).summary().startswith("2 lines: 2 created, ")
    assert ImportReport().summary().startswith("0 lines: ")
