"""The ``mlrepo`` command line on a temporary data dir (SQLite and PostgreSQL), through typer's runner.

Each invocation is a full command: it migrates, opens the real catalog, and loads the model when it must
encode, exactly as a person running it would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import COMMAND_AREAS, app
from infra.artifacts import ArtifactStore
from infra.settings import Settings
from tests.services import free_port

MLREPO = str(Path(sys.executable).parent / "mlrepo")

GOOD_1 = {
    "name": "review-sentiment",
    "kind": "model",
    "category": "Natural Language Processing",
    "description": "Classifies the sentiment of product reviews as positive or negative.",
    "tags": ["sentiment"],
    "accuracy": 0.9,
}
GOOD_2 = {
    "name": "street-detector",
    "kind": "model",
    "category": "Computer Vision",
    "description": "Finds cars and pedestrians in street photos.",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def mlrepo(runner: CliRunner, settings: Settings, *args: str):
    """Run ``mlrepo --data-dir D --database-url U ARGS`` and return the result."""
    options = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        options += ["--database-url", settings.database_url]
    return runner.invoke(app, [*options, *args], catch_exceptions=False)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_import_reports_bad_lines_and_imports_the_rest(runner, settings, tmp_path) -> None:
    source = write_lines(
        tmp_path / "listings.jsonl",
        [
            json.dumps(GOOD_1),
            '{"name": "half", "kind": "model"',
            json.dumps({**GOOD_2, "accuracy": 7}),
            json.dumps(GOOD_2),
        ],
    )
    result = mlrepo(runner, settings, "import", str(source))
    assert result.exit_code == 0, result.output
    assert f"{source}:line 2:" in result.stderr and "JSON" in result.stderr
    assert f"{source}:line 3:" in result.stderr and "accuracy" in result.stderr
    assert "line 1:" not in result.stderr and "line 4:" not in result.stderr
    assert "2 created" in result.stdout

    again = mlrepo(runner, settings, "import", str(source))  # idempotent: existing names are skipped
    assert again.exit_code == 0 and "0 created" in again.stdout and "2 skipped" in again.stdout

    found = mlrepo(runner, settings, "search", "sentiment of customer reviews", "--json", "--limit", "1")
    assert found.exit_code == 0, found.output
    body = json.loads(found.stdout)
    assert body["results"][0]["name"] == "review-sentiment"
    assert body["results"][0]["parts"] and body["search_id"]


def test_import_with_nothing_valid_fails(runner, sqlite_settings, tmp_path) -> None:
    source = write_lines(tmp_path / "bad.jsonl", ["[1, 2]", '{"kind": "model"}'])
    result = mlrepo(runner, sqlite_settings, "import", str(source))
    assert result.exit_code == 1
    assert "line 1:" in result.stderr and "line 2:" in result.stderr and "name" in result.stderr


def test_import_missing_file_is_usage_error(runner, sqlite_settings, tmp_path) -> None:
    result = mlrepo(runner, sqlite_settings, "import", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_accounts_tokens_and_authenticated_search(runner, sqlite_settings, tmp_path) -> None:
    created = mlrepo(runner, sqlite_settings, "account", "create", "alice", "--role", "producer", "--token")
    assert created.exit_code == 0, created.output
    assert "account alice (producer)" in created.stdout
    token = created.stdout.split("token (shown once): ")[1].strip()

    duplicate = mlrepo(runner, sqlite_settings, "account", "create", "alice")
    assert duplicate.exit_code == 2 and "CONFLICT" in duplicate.stderr
    bad_role = mlrepo(runner, sqlite_settings, "account", "create", "bob", "--role", "wizard")
    assert bad_role.exit_code == 2

    second = mlrepo(runner, sqlite_settings, "token", "create", "alice", "--name", "laptop")
    assert (
        second.exit_code == 0 and second.stdout.strip().startswith("mlr_") and second.stdout.strip() != token
    )
    unknown = mlrepo(runner, sqlite_settings, "token", "create", "nobody")
    assert unknown.exit_code == 2 and "NOT_FOUND" in unknown.stderr

    source = write_lines(
        tmp_path / "private.jsonl", [json.dumps({**GOOD_1, "visibility": "private", "owner": "alice"})]
    )
    assert mlrepo(runner, sqlite_settings, "import", str(source)).exit_code == 0
    anonymous = json.loads(mlrepo(runner, sqlite_settings, "search", "sentiment", "--json").stdout)
    assert anonymous["results"] == []
    owner = json.loads(
        mlrepo(runner, sqlite_settings, "search", "sentiment", "--json", "--token", token).stdout
    )
    assert [r["name"] for r in owner["results"]] == ["review-sentiment"]
    wrong = mlrepo(runner, sqlite_settings, "search", "sentiment", "--token", "mlr_wrong")
    assert wrong.exit_code == 2 and "UNAUTHENTICATED" in wrong.stderr

    # A leaked token is revoked by the operator at once (there was no way to, short of the database).
    listed = mlrepo(runner, sqlite_settings, "token", "list", "alice")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["laptop", "default"] and token not in listed.stdout
    assert "active" in lines[1] and "never used" not in lines[1]  # the search above used it
    revoked = mlrepo(runner, sqlite_settings, "token", "revoke", lines[1].split()[0])
    assert revoked.exit_code == 0 and "revoked token" in revoked.stdout
    refused = mlrepo(runner, sqlite_settings, "search", "sentiment", "--token", token)
    assert refused.exit_code == 2 and "revoked" in refused.stderr
    assert "revoked" in mlrepo(runner, sqlite_settings, "token", "list", "alice").stdout.splitlines()[1]
    missing = mlrepo(runner, sqlite_settings, "token", "revoke", "nope")
    assert missing.exit_code == 2 and "NOT_FOUND" in missing.stderr


def test_the_operator_shows_and_sets_quotas(runner, sqlite_settings) -> None:
    assert mlrepo(runner, sqlite_settings, "account", "create", "carol").exit_code == 0
    shown = mlrepo(runner, sqlite_settings, "account", "quota", "carol")
    assert shown.exit_code == 0
    assert shown.stdout.strip() == "account carol quota: cpu 4, memory 8192 MiB, gpu 0"
    granted = mlrepo(runner, sqlite_settings, "account", "quota", "carol", "--gpu", "1", "--cpu", "2.5")
    assert granted.stdout.strip() == "account carol quota: cpu 2.5, memory 8192 MiB, gpu 1"
    refused = mlrepo(runner, sqlite_settings, "account", "quota", "carol", "--gpu", "100")
    assert refused.exit_code == 2 and "quota gpu must be a whole number from 0 to 64" in refused.stderr
    unknown = mlrepo(runner, sqlite_settings, "account", "quota", "nobody", "--gpu", "1")
    assert unknown.exit_code == 2 and "NOT_FOUND" in unknown.stderr
    assert "gpu 1" in mlrepo(runner, sqlite_settings, "account", "quota", "carol").stdout


def test_search_facets_and_bad_input(runner, sqlite_settings, tmp_path) -> None:
    source = write_lines(tmp_path / "two.jsonl", [json.dumps(GOOD_1), json.dumps(GOOD_2)])
    assert mlrepo(runner, sqlite_settings, "import", str(source)).exit_code == 0
    vision = json.loads(
        mlrepo(runner, sqlite_settings, "search", "model", "--json", "--category", "Computer Vision").stdout
    )
    assert [r["name"] for r in vision["results"]] == ["street-detector"]
    text = mlrepo(runner, sqlite_settings, "search", "cars in photos", "--kind", "model", "--limit", "1")
    assert text.exit_code == 0 and "street-detector" in text.stdout and "score" in text.stdout
    assert mlrepo(runner, sqlite_settings, "search", "x", "--kind", "spaceship").exit_code == 2
    assert mlrepo(runner, sqlite_settings, "search", "x", "--limit", "0").exit_code == 2
    assert mlrepo(runner, sqlite_settings, "search", "x" * 5000).exit_code == 2


def test_migrate_and_reindex(runner, sqlite_settings, tmp_path) -> None:
    fresh = Settings(data_dir=tmp_path / "fresh")
    migrated = mlrepo(runner, fresh, "migrate")
    assert migrated.exit_code == 0 and "database at head" in migrated.stdout
    assert (tmp_path / "fresh" / "mlrepo.db").exists()
    assert mlrepo(runner, fresh, "migrate").exit_code == 0  # repeatable

    source = write_lines(tmp_path / "two.jsonl", [json.dumps(GOOD_1), json.dumps(GOOD_2)])
    assert mlrepo(runner, sqlite_settings, "import", str(source)).exit_code == 0
    reindexed = mlrepo(runner, sqlite_settings, "reindex")
    assert reindexed.exit_code == 0 and "reindexed 2 listings" in reindexed.stdout


def test_a_first_command_on_a_new_data_dir_answers_without_a_traceback(runner, tmp_path) -> None:
    """Only migrate, serve, import, seed and account commands set the database up; token create, search,
    run, publish and verify on a new data dir used to end in a "no such table" traceback."""
    fresh = Settings(data_dir=tmp_path / "fresh")
    token = mlrepo(runner, fresh, "token", "create", "bob")
    assert token.exit_code == 2 and "no account named 'bob'" in token.stderr
    assert mlrepo(runner, fresh, "verify", "--all").exit_code == 0


def test_unreachable_database_fails_cleanly(runner, tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none")
    result = mlrepo(runner, settings, "migrate")
    assert result.exit_code == 1 and "migration failed" in result.stderr
    # The commands that open the catalog themselves used to end in asyncpg's traceback instead.
    for args in (["token", "list", "alice"], ["gc"], ["verify", "--all"], ["reindex"]):
        result = mlrepo(runner, settings, *args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: the database cannot be reached: "), (args, result.stderr)
        assert result.stderr.rstrip().endswith("[UNAVAILABLE]") and "Traceback" not in result.output


def test_a_bad_setting_stops_every_command_naming_the_variable(runner, tmp_path) -> None:
    """A malformed MLREPO_ value used to end any command, ``--help`` included, in a pydantic traceback
    naming only the field; a zero port or an unknown worker class was accepted. Now: one line, exit 2."""
    env = {"MLREPO_PORT": "http", "MLREPO_DATA_DIR": str(tmp_path)}
    for args in (["migrate"], ["serve", "--help"]):
        result = runner.invoke(app, args, env=env, catch_exceptions=False)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: invalid configuration: MLREPO_PORT='http' is refused:")
        assert "Traceback" not in result.output and not (tmp_path / "mlrepo.db").exists()
    worker = runner.invoke(
        app, ["worker", "--resource-class", "tpu", "--burst"], env={"MLREPO_REDIS_URL": ""}
    )
    assert worker.exit_code == 2 and "--resource-class must be cpu or gpu; got 'tpu'" in worker.stderr
    for port in ("0", "99999"):  # 0 fell back to 8000; uvicorn announced 99999 and bound 99999 % 65536
        serve = runner.invoke(app, ["serve", "--port", port], env={"MLREPO_DATA_DIR": str(tmp_path)})
        assert serve.exit_code == 2 and "Invalid value for '--port'" in serve.output, serve.output


def serve_process(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``mlrepo [ARGS...]`` in a process of its own (uvicorn's logging is its own), on a SQLite data dir."""
    environment = {**os.environ, "MLREPO_DATA_DIR": str(tmp_path), **env}
    environment.pop("MLREPO_DATABASE_URL", None)
    return subprocess.run([MLREPO, *args], env=environment, capture_output=True, text=True, timeout=180)


def test_serve_that_cannot_start_says_why_in_one_line(tmp_path) -> None:
    """A backing service missing at startup (here OpenSearch, configured without its URL) ended ``serve``
    with uvicorn's exit code 3 (the README's codes say 1), then with Starlette's traceback above "its
    reason is logged above". Now the reason is the one line; -v shows the traceback too."""
    env = {"MLREPO_SEARCH_BACKEND": "opensearch", "MLREPO_OPENSEARCH_URL": ""}
    reason = "search_backend is 'opensearch' but MLREPO_OPENSEARCH_URL is not set [UNAVAILABLE]"
    result = serve_process(tmp_path, "serve", "--port", str(free_port()), **env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.endswith(f"\nerror: the API did not start: {reason}\n"), result.stderr
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    verbose = serve_process(tmp_path, "-v", "serve", "--port", str(free_port()), **env)
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.endswith(f"\nerror: the API did not start: {reason}\n"), verbose.stderr


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path) -> None:
    """uvicorn binds only after the app started (migration, index, model), then logged the bind error
    among its own lines and the app's shutdown. Now the port is bound first, and that is all it says."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve_process(tmp_path, "serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1, result.stderr
    expected = f"error: the API did not start: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert result.stderr == f"{expected} [UNAVAILABLE]\n" and result.stdout == "", result
    assert not (tmp_path / "mlrepo.db").exists()  # refused before it migrated anything


def test_a_quiet_server_keeps_no_access_log(tmp_path) -> None:
    """``-q``: serve logs only problems; by default each request has its access line."""
    port = free_port()
    environment = {**os.environ, "MLREPO_DATA_DIR": str(tmp_path)}
    environment.pop("MLREPO_DATABASE_URL", None)
    server = subprocess.Popen(
        [MLREPO, "-q", "serve", "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("serve did not answer /healthz")
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    finally:
        server.kill()
        server.wait()
    assert out == "" and err == "", (out, err)  # (stopped by the signal: 130, as any serve)


def test_verbose_and_quiet_exclude_each_other(runner, tmp_path) -> None:
    result = runner.invoke(app, ["-v", "-q", "migrate"], env={"MLREPO_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2 and "give --verbose or --quiet, not both" in result.stderr


def test_seed_is_idempotent_and_finds_the_demo_sentiment_model(runner, sqlite_settings) -> None:
    first = mlrepo(runner, sqlite_settings, "seed")
    assert first.exit_code == 0, first.output
    assert "0 bad" in first.stdout and " 0 created" not in first.stdout
    again = mlrepo(runner, sqlite_settings, "seed")
    assert again.exit_code == 0 and " 0 created" in again.stdout

    found = mlrepo(runner, sqlite_settings, "search", "classify the sentiment of product reviews", "--json")
    results = json.loads(found.stdout)["results"]
    assert any("sentiment" in r["name"].lower() and r["kind"] == "model" for r in results[:3]), results[:3]
    assert all(r["explanation"] for r in results[:3])


def test_the_operator_revokes_tokens(runner, sqlite_settings) -> None:
    """The README promises that a revoked token fails the request, but nothing let anyone revoke one:
    a leaked token stayed valid for good."""
    created = mlrepo(runner, sqlite_settings, "account", "create", "alice", "--token")
    token = created.stdout.split("token (shown once): ")[1].strip()
    laptop = mlrepo(runner, sqlite_settings, "token", "create", "alice", "--name", "laptop").stdout.strip()

    revoked = mlrepo(runner, sqlite_settings, "token", "revoke-all", "alice", "--name", "laptop")
    assert revoked.exit_code == 0 and "revoked 1 token" in revoked.stdout, revoked.output
    refused = mlrepo(runner, sqlite_settings, "search", "x", "--token", laptop)
    assert refused.exit_code == 2 and "revoked" in refused.stderr and "UNAUTHENTICATED" in refused.stderr
    assert mlrepo(runner, sqlite_settings, "search", "x", "--token", token).exit_code == 0

    again = mlrepo(runner, sqlite_settings, "token", "revoke-all", "alice", "--name", "laptop")
    assert (
        again.exit_code == 2
        and "no live token named 'laptop'" in again.stderr
        and "NOT_FOUND" in again.stderr
    )
    everything = mlrepo(runner, sqlite_settings, "token", "revoke-all", "alice")
    assert everything.exit_code == 0 and "revoked 1 token" in everything.stdout
    assert mlrepo(runner, sqlite_settings, "search", "x", "--token", token).exit_code == 2
    unknown = mlrepo(runner, sqlite_settings, "token", "revoke-all", "nobody")
    assert unknown.exit_code == 2 and "NOT_FOUND" in unknown.stderr


def test_gc_reports_by_default_and_deletes_with_delete(runner, settings) -> None:
    store = ArtifactStore.from_settings(settings)
    old, young = store.put_bytes(b"abandoned"), store.put_bytes(b"being written")
    then = time.time() - 2 * settings.gc_grace_s
    os.utime(old.path, (then, then))

    dry = mlrepo(runner, settings, "gc")
    assert dry.exit_code == 0, dry.output
    assert "would delete (dry run; --delete to act): 1 blobs" in dry.output
    assert "younger than 86400 s: 1 blobs" in dry.output
    assert "job outputs past 30 days: would drop those of 0 jobs" in dry.output
    assert store.exists(old.digest)

    done = mlrepo(runner, settings, "gc", "--delete", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["deleted"] is True and report["garbage_digests"] == [old.digest]
    assert (report["retention_days"], report["expired_outputs"]) == (30, 0)
    assert report["garbage"] == {"files": 1, "bytes": len(b"abandoned")}
    assert not store.exists(old.digest) and store.exists(young.digest)


def test_duplicate_accounts_reports_names_stored_before_the_case_rule(runner, sqlite_settings) -> None:
    for name in ("alice", "bob"):
        assert mlrepo(runner, sqlite_settings, "account", "create", name).exit_code == 0
    refused = mlrepo(runner, sqlite_settings, "account", "create", "ALICE")
    assert refused.exit_code == 2 and "'alice' already exists" in refused.stderr
    assert mlrepo(runner, sqlite_settings, "duplicate-accounts").stdout.endswith("more than one account: 0\n")
    database = sqlite_settings.resolved_database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as connection:  # as an older deployment stored them: no shared key
        connection.execute(
            "INSERT INTO accounts (id, name, name_key, role, quota_cpu, quota_memory_mb, quota_gpu,"
            " created_at) VALUES ('x1', 'ALICE', 'legacy', 'producer', 4, 8192, 0, '2026-01-01 00:00:00')"
        )
    found = mlrepo(runner, sqlite_settings, "duplicate-accounts")
    assert found.exit_code == 0, found.output
    assert "alice: ALICE (x1, 0 listings), alice (" in found.stdout
    assert found.stdout.endswith("more than one account: 1\n")
    groups = json.loads(mlrepo(runner, sqlite_settings, "duplicate-accounts", "--json").stdout)
    assert [[a["name"] for a in g["accounts"]] for g in groups] == [["ALICE", "alice"]]


def test_fix_versions_reports_then_renumbers_versions_from_before_the_rule(
    runner, sqlite_settings, tmp_path
) -> None:
    source = write_lines(tmp_path / "listings.jsonl", [json.dumps(GOOD_1)])
    assert mlrepo(runner, sqlite_settings, "import", str(source)).exit_code == 0
    database = sqlite_settings.resolved_database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(database) as connection:  # as an older deployment stored them
        connection.execute("UPDATE listings SET version = 'v2'")
        connection.execute("UPDATE listing_versions SET version = 'v2'")

    dry = mlrepo(runner, sqlite_settings, "fix-versions")
    assert dry.exit_code == 0, dry.output
    assert "version 'v2' -> '2.0.0'" in dry.stdout and dry.stdout.endswith("(dry run; --apply to act): 2\n")
    applied = mlrepo(runner, sqlite_settings, "fix-versions", "--apply", "--json")
    assert [(c["old"], c["new"], c["what"]) for c in json.loads(applied.stdout)] == [
        ("v2", "2.0.0", "version"),
        ("v2", "2.0.0", "listing"),
    ]
    again = mlrepo(runner, sqlite_settings, "fix-versions", "--apply")
    assert again.stdout == "renumbered: 0\n"
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT version FROM listings").fetchall() == [("2.0.0",)]


def test_every_listed_command_area_has_its_module() -> None:
    """``COMMAND_AREAS`` named ``pipelines`` and ``demand``, which have no CLI module: ``import_areas``
    skips a missing area quietly, so the list claimed commands that do not exist."""
    missing = [name for name in COMMAND_AREAS if importlib.util.find_spec(f"api.commands.{name}") is None]
    assert not missing, missing
