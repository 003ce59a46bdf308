"""Jupyter notebooks published as they are: checked, described from their markdown, packaged with their
runner, run once in the real bubblewrap sandbox, stored and listed (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from notebook_support import code, md, notebook_bytes, word_stats_manifest, word_stats_notebook
from publishing_support import files_outside, make_service, package_files, sentiment_manifest, zip_bytes
from sqlalchemy import select

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing.notebook import (
    NOTEBOOK_FILE,
    RUNNER_FILE,
    NotebookError,
    derive_text,
    notebook_manifest,
    parse_notebook,
)
from catalog.publishing.packaging import checkout_package
from catalog.publishing.service import InProcessQueue, PublicationView, PublishingService
from catalog.search_service import SearchRequest
from infra.errors import BadInput
from infra.settings import Settings
from infra.tables import Listing, ListingVersion

RUNNER = Path(__file__).resolve().parents[2] / "catalog" / "publishing" / "notebook_runner.py"


async def publish(
    service: PublishingService, actor: Actor, raw: bytes, manifest=None, **kw
) -> PublicationView:
    pub = await service.submit_notebook(actor, io.BytesIO(raw), manifest, **kw)
    assert pub.source_kind == "notebook"
    assert isinstance(service.queue, InProcessQueue)
    await service.queue.drain()
    return await service.get(actor, pub.id)


def step(pub: PublicationView, name: str):
    return next(s for s in pub.steps if s.name == name)


# ----------------------------------------------------------------------------- the notebook checks


def test_a_notebook_is_checked_cell_by_cell() -> None:
    with pytest.raises(NotebookError, match="not a JSON notebook"):
        parse_notebook(b"print('a script, not a notebook')")
    with pytest.raises(NotebookError, match="nbformat: must be 4"):
        parse_notebook(json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "cells": []}).encode())
    bad = notebook_bytes([md("# Title"), {"cell_type": "widget", "source": ""}, code("x = 1")])
    with pytest.raises(NotebookError, match=r"cells\[1\]\.cell_type"):
        parse_notebook(bad)
    magic = notebook_bytes([code("x = 1"), code("%matplotlib inline\nimport math")])
    with pytest.raises(NotebookError, match=r"cells\[1\]: not valid Python at line 1.*IPython magics") as err:
        parse_notebook(magic)
    assert err.value.code == "BAD_INPUT"
    with pytest.raises(NotebookError, match="no code to run"):
        parse_notebook(notebook_bytes([md("# Only prose")]))
    twice = notebook_bytes([code("a = 1", "parameters"), code("b = 2", "parameters")])
    with pytest.raises(NotebookError, match="only one cell may be tagged 'parameters'"):
        parse_notebook(twice)


def test_description_and_documentation_come_from_the_markdown() -> None:
    notebook = parse_notebook(word_stats_notebook())
    description, documentation = derive_text(notebook)
    assert description == "Counts the words of an English text and finds its longest word."
    assert documentation.startswith("# Word statistics\n\nCounts the words")
    assert "## Parameters" in documentation and "quick brown fox" not in documentation
    only_heading = parse_notebook(notebook_bytes([md("# Just a title"), code("output = 1")]))
    assert derive_text(only_heading)[0] == "Just a title"

    given = notebook_manifest(notebook, {"name": "n", "category": "c", "description": "Mine."})
    assert given["description"] == "Mine." and given["documentation"] == documentation
    assert given["kind"] == "notebook"
    assert given["entrypoint"] == ["python3", RUNNER_FILE, NOTEBOOK_FILE, "output"]
    with pytest.raises(BadInput, match="entrypoint: a notebook runs its cells"):
        notebook_manifest(notebook, {"entrypoint": ["python3", "x.py"]})
    with pytest.raises(BadInput, match="output_variable: must be a Python variable name"):
        notebook_manifest(notebook, {"output_variable": "not a name"})


def run_runner(tmp_path: Path, raw: bytes, records: list[dict], variable: str = "output") -> list[dict]:
    """The runner as the sandbox runs it (a plain python3, stdlib only, stdin/stdout)."""
    (tmp_path / NOTEBOOK_FILE).write_bytes(raw)
    stdin = "".join(json.dumps(r) + "\n" for r in records)
    done = subprocess.run(
        [sys.executable, "-I", str(RUNNER), NOTEBOOK_FILE, variable],
        input=stdin.encode(),
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_runner_overrides_parameters_and_reads_the_output_variable(tmp_path: Path) -> None:
    raw = notebook_bytes(
        [
            *[c for c in json.loads(word_stats_notebook())["cells"]],
            code("import os\nos.system('echo from a child process')\nratio = 1 / top\n"),
        ]
    )
    replies = run_runner(
        tmp_path,
        raw,
        [
            {"id": "defaults", "input": None},
            {"id": "given", "input": {"text": "a bb ccc", "top": 2}},
            {"id": "zero", "input": {"top": 0}},
            {"id": "typo", "input": {"txet": "x"}},
            {"id": "list", "input": ["x"]},
        ],
    )
    by_id = {r["id"]: r for r in replies}
    assert set(by_id) == {"defaults", "given", "zero", "typo", "list"}  # prints never reach the replies
    assert by_id["defaults"]["output"] == {"words": 4, "longest": ["quick"]}
    assert by_id["given"]["output"] == {"words": 3, "longest": ["ccc", "bb"]}
    assert by_id["zero"]["error"] == "cell 5: ZeroDivisionError: division by zero"
    assert "unknown parameter(s) txet" in by_id["typo"]["error"] and "text, top" in by_id["typo"]["error"]
    assert "must be a JSON object of parameter values" in by_id["list"]["error"]

    executed = by_id["given"]["notebook"]
    assert executed["nbformat"] == 4
    cells = executed["cells"]
    assert cells[3]["metadata"]["tags"] == ["injected-parameters"]
    assert "".join(cells[3]["source"]) == "text = 'a bb ccc'\ntop = 2\n"
    counting = cells[4]
    printed = {"output_type": "stream", "name": "stdout", "text": "reading 8 characters\n"}
    assert counting["outputs"][0] == printed
    assert counting["outputs"][1]["output_type"] == "execute_result"
    assert counting["outputs"][1]["data"] == {"text/plain": "3"}
    failed = by_id["zero"]["notebook"]["cells"][-1]
    assert failed["outputs"][-1]["output_type"] == "error"
    assert failed["outputs"][-1]["ename"] == "ZeroDivisionError"
    assert all("notebook_runner" not in line for line in failed["outputs"][-1]["traceback"])


def test_the_runner_refuses_what_json_cannot_carry(tmp_path: Path) -> None:
    raw = notebook_bytes([code("output = object()")])
    (reply,) = run_runner(tmp_path, raw, [{"id": 1, "input": None}])
    assert "'output' is not JSON" in reply["error"]
    (reply,) = run_runner(tmp_path, notebook_bytes([code("x = 1")]), [{"id": 1, "input": None}])
    assert reply["error"] == "the notebook did not set 'output'"
    (reply,) = run_runner(tmp_path, notebook_bytes([code("result = [1, 2]")]), [{"id": 1}], "result")
    assert reply["output"] == [1, 2]


# ----------------------------------------------------------------------------- through the publish job


async def test_a_notebook_is_published_verified_stored_and_searchable(
    publishing: PublishingService, app: CatalogApp, alice: Actor, bob: Actor
) -> None:
    raw = word_stats_notebook()
    pub = await publish(publishing, alice, raw, word_stats_manifest())
    assert pub.status == "published", (pub.error, [(s.name, s.log) for s in pub.steps])
    assert any("nbformat 4, 5 cells (3 code)" in line for line in step(pub, "package").log)
    assert any("contract probe answered with output" in line for line in step(pub, "test").log)
    assert any("1 unit tests passed" in line for line in step(pub, "verify").log)

    listing = await app.listings.get(bob, pub.listing_id)
    assert listing.kind == "notebook" and listing.verification_status == "verified"
    assert listing.description == "Counts the words of an English text and finds its longest word."
    assert listing.documentation.startswith("# Word statistics")
    found = await app.search.search(bob, SearchRequest(text="count the words of a text"))
    assert pub.listing_id in [hit.listing.id for hit in found.results]

    async with app.db.session() as session:
        version = await session.scalar(
            select(ListingVersion).where(ListingVersion.listing_id == pub.listing_id)
        )
    assert version.artifact_kind == "notebook" and version.artifact_digest == pub.artifact_digest
    assert version.manifest["entrypoint"] == ["python3", RUNNER_FILE, NOTEBOOK_FILE, "output"]
    data_dir = publishing.settings.data_dir
    checkout = checkout_package(publishing.store, version.artifact_digest, data_dir / "co")
    assert (checkout / NOTEBOOK_FILE).read_bytes() == raw  # stored exactly as uploaded
    assert sorted(p.name for p in checkout.iterdir()) == [RUNNER_FILE, NOTEBOOK_FILE]
    assert files_outside(publishing.settings.data_dir, ("artifacts", "keys", "index", "sandbox", "co")) == []

    result = await publishing.verify_listing(pub.listing_id)
    assert result.outcome == "verified", result.problems


async def test_a_notebook_carries_its_own_manifest(publishing: PublishingService, alice: Actor) -> None:
    raw = word_stats_notebook(mlrepo=word_stats_manifest(name="self-described", verify=False, tests=[]))
    pub = await publish(publishing, alice, raw)
    assert pub.status == "published", pub.error
    again = await publish(publishing, alice, raw, {"name": "self-described", "kind": "model"})
    assert again.status == "failed"
    assert "kind: a notebook upload must have kind 'notebook', not 'model'" in again.error


async def test_a_notebook_failing_on_its_defaults_is_refused_with_the_cell(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    raw = notebook_bytes([md("# Broken"), code("n = 0", "parameters"), code("output = 10 / n")])
    pub = await publish(publishing, alice, raw, {"name": "broken", "category": "Other"})
    assert pub.status == "failed"
    test = step(pub, "test")
    assert test.status == "failed" and test.error_code == "BAD_INPUT"
    assert "the run on its default parameters failed: cell 2: ZeroDivisionError" in test.error
    async with app.db.session() as session:
        assert (await session.scalars(select(Listing))).all() == []

    magic = notebook_bytes([code("!pip install pandas\nimport pandas")])
    refused = await publish(publishing, alice, magic, {"name": "magic", "category": "Other"})
    assert refused.status == "failed" and step(refused, "package").status == "failed"
    assert "cells[0]: not valid Python" in refused.error


async def test_a_code_package_of_kind_notebook_is_refused(
    publishing: PublishingService, app: CatalogApp, alice: Actor
) -> None:
    """A zip of kind notebook with an entrypoint was published as a notebook listing that ran that
    entrypoint, while publishNotebook refuses one: notebook listings come only from notebooks."""
    upload = zip_bytes(package_files(sentiment_manifest(kind="notebook")))
    pub = await publishing.submit_package(alice, io.BytesIO(upload))
    await publishing.queue.drain()
    pub = await publishing.get(alice, pub.id)
    assert pub.status == "failed" and step(pub, "package").error_code == "BAD_INPUT"
    assert "kind: publish notebooks with publishNotebook" in pub.error
    async with app.db.session() as session:
        assert (await session.scalars(select(Listing))).all() == []


async def test_a_notebook_version_keeps_the_listing_kind(publishing: PublishingService, alice: Actor) -> None:
    model = await publishing.submit_package(
        alice, io.BytesIO(zip_bytes(package_files(sentiment_manifest(name="word-stats"))))
    )
    await publishing.queue.drain()
    model = await publishing.get(alice, model.id)
    assert model.status == "published", model.error
    pub = await publish(publishing, alice, word_stats_notebook(), word_stats_manifest())
    assert pub.status == "failed" and "you already have a model listing named 'word-stats'" in pub.error


async def test_a_notebook_over_its_size_limit_is_refused_before_it_is_parsed(
    settings: Settings, app: CatalogApp, alice: Actor, bwrap_ok: bool
) -> None:
    limited = settings.model_copy(update={"runtime": "bwrap", "publish_max_notebook_bytes": 100})
    pub = await publish(make_service(limited, app), alice, word_stats_notebook(), word_stats_manifest())
    assert pub.status == "failed" and step(pub, "package").error_code == "BAD_INPUT"
    assert "larger than the limit of 100 bytes for notebooks" in pub.error


def test_the_runner_keeps_replies_within_the_contracts_line_limit(tmp_path: Path) -> None:
    """Cells printing a lot: each output text is capped, and past 512 KiB only the error outputs stay
    (publish-time replies are refused beyond 1 MiB a line)."""
    cells = [code(f"print('x' * 20000)  # {i}") for i in range(60)]
    raw = notebook_bytes([*cells, code("display([1, 2])\noutput = 'done'")])
    (reply,) = run_runner(tmp_path, raw, [{"id": 1, "input": None}])
    assert reply["output"] == "done"
    assert len(json.dumps(reply)) < 1 << 20
    assert all(c["outputs"] == [] for c in reply["notebook"]["cells"])

    small = notebook_bytes([code("print('x' * 20000)"), code("display([1, 2])\noutput = 1")])
    (reply,) = run_runner(tmp_path, small, [{"id": 1, "input": None}])
    printed, shown = (c["outputs"][0] for c in reply["notebook"]["cells"])
    assert printed["text"].endswith("... (truncated)") and len(printed["text"]) < 10_100
    assert shown == {"output_type": "display_data", "data": {"text/plain": "[1, 2]"}, "metadata": {}}
    own = notebook_bytes([code("def display(x):\n    return 'mine'\noutput = display(1)")])
    assert run_runner(tmp_path, own, [{"id": 1, "input": None}])[0]["output"] == "mine"
    (typo,) = run_runner(tmp_path, small, [{"id": 1, "input": {"x": 1}}])
    assert "no cell tagged 'parameters'" in typo["error"] and "notebook" not in typo
