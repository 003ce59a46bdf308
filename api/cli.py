"""The ``mlrepo`` command line: serve the API, manage the database, import and search the catalog.

Core commands live here; other areas add theirs from ``api/commands/<area>.py`` (see
``api.commands`` for the convention) listed in ``COMMAND_AREAS``. Exit codes: 0 success, 1 the work
failed (e.g. nothing valid to import, a service unavailable), 2 the caller's mistake (bad input, unknown
id, wrong credentials).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError

from api.areas import import_areas
from api.commands import (
    EXIT_FAILURE,
    fail,
    open_catalog,
    operator_log_level,
    print_json,
    run_async,
    settings_of,
)
from catalog.enums import Role
from infra.errors import MlrepoError
from infra.settings import Settings, describe_settings_error

if TYPE_CHECKING:
    from catalog.search_service import SearchResponse

COMMAND_AREAS: tuple[str, ...] = ("jobs", "publishing", "maintenance")

app = typer.Typer(
    name="mlrepo",
    help="mlrepo: publish, find, compose and run machine-learning listings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
account_app = typer.Typer(help="Manage accounts.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
app.add_typer(account_app, name="account")
app.add_typer(token_app, name="token")


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Data directory (database, index, artifacts); env MLREPO_DATA_DIR."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", help="SQLAlchemy async URL; env MLREPO_DATABASE_URL (default: SQLite)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level, libraries included."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="serve and worker log only problems (no access log, no job lines)."
    ),
) -> None:
    """Global options apply to every command."""
    if verbose and quiet:
        fail("give --verbose or --quiet, not both")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = {
        key: value
        for key, value in (("data_dir", data_dir), ("database_url", database_url))
        if value is not None
    }
    try:
        ctx.obj = Settings(**overrides)
    except ValidationError as exc:  # a bad MLREPO_ value: say which, before any command runs
        fail(f"invalid configuration: {describe_settings_error(exc)}")


# ---------------------------------------------------------------------------- server and database


def _migrate(settings: Settings) -> None:
    from infra.migrate import upgrade

    try:
        upgrade(settings)
    except Exception as exc:  # a database that cannot be reached is the usual cause
        fail(f"migration failed: {exc}", EXIT_FAILURE)


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Apply database migrations (safe to repeat: a no-op when current)."""
    settings = settings_of(ctx)
    _migrate(settings)
    typer.echo(f"database at head: {settings.resolved_database_url.split('@')[-1]}")


@app.command()
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(
        None, "--host", help="Interface to bind (default MLREPO_HOST, 127.0.0.1)."
    ),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="Port (default MLREPO_PORT, 8000)."
    ),
) -> None:
    """Migrate, then serve GraphQL on http://HOST:PORT/graphql (websocket subscriptions too). A start
    that fails (port in use, a service down, a setting missing) is one line, its traceback only with -v."""
    from api.app import create_app
    from api.serving import StartupFailed, listening_socket
    from api.serving import serve as serve_app

    settings = settings_of(ctx)
    try:  # first, so that a port in use fails before the migration and the model
        sock = listening_socket(host or settings.host, port or settings.port)
    except MlrepoError as exc:
        fail(f"the API did not start: {exc.message} [{exc.code}]", EXIT_FAILURE)
    _migrate(settings)
    try:
        serve_app(
            create_app(settings, migrate=False),
            sock,
            log_level=logging.getLevelName(operator_log_level(ctx)).lower(),
            verbose=bool(ctx.find_root().params.get("verbose")),
        )
    except StartupFailed as exc:
        fail(f"the API did not start: {exc}", EXIT_FAILURE)


# ---------------------------------------------------------------------------- catalog


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="JSON Lines file: one listing object per line."),
    owner: str | None = typer.Option(None, "--owner", help="Account name owning lines that name none."),
    update: bool = typer.Option(False, "--update", help="Update listings whose name the owner already has."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Lines encoded and written together."),
) -> None:
    """Bulk-import listings. Every bad line is printed with its number and reason; valid lines are
    imported. Exits 1 only when the file had lines but none could be imported."""
    from tqdm import tqdm

    settings = settings_of(ctx)
    _migrate(settings)

    async def run():
        async with open_catalog(settings, with_index=False) as catalog:
            owner_id = (await catalog.accounts.resolve(owner)).id if owner else None
            with tqdm(total=0, unit="line", desc="import", disable=None) as bar:

                def progress(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                return await catalog.importer.import_file(
                    file,
                    owner_id=owner_id,
                    progress=progress,
                    batch_size=batch_size,
                    on_existing="update" if update else "skip",
                )

    report = run_async(run())
    for problem in report.errors:
        typer.secho(f"{file}:{problem}", fg=typer.colors.RED, err=True)
    for problem in report.warnings:
        typer.secho(f"{file}:{problem}", fg=typer.colors.YELLOW, err=True)
    typer.echo(report.summary())
    if report.errors and report.imported == 0 and report.skipped == 0:
        raise typer.Exit(EXIT_FAILURE)


@app.command()
def reindex(ctx: typer.Context) -> None:
    """Rebuild the search index from the database (the index is only a projection of it)."""
    from tqdm import tqdm

    settings = settings_of(ctx)

    async def run() -> int:
        async with open_catalog(settings, load_index=False) as catalog:
            with tqdm(total=0, unit="listing", desc="reindex", disable=None) as bar:

                def progress(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                return await catalog.listings.reindex(progress)

    typer.echo(f"reindexed {run_async(run())} listings")


@app.command()
def gc(
    ctx: typer.Context,
    delete: bool = typer.Option(False, "--delete", help="Remove the garbage (default: only report it)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (with the digests)."),
) -> None:
    """Report (or with --delete remove) artifacts no row references, older than MLREPO_GC_GRACE_S, after
    dropping job outputs past MLREPO_JOB_OUTPUT_RETENTION_DAYS."""
    from catalog.artifact_gc import collect_garbage

    settings = settings_of(ctx)

    async def run():
        async with open_catalog(settings, with_index=False) as catalog:
            return await collect_garbage(settings, catalog.db, delete=delete)

    report = run_async(run())
    if as_json:
        print_json(report.as_dict())
        return
    s = report.store
    verb = "deleted" if delete else "would delete (dry run; --delete to act)"
    if report.retention_days:
        expired = "dropped" if delete else "would drop"
        typer.echo(
            f"job outputs past {report.retention_days} days: {expired} those of {report.expired_outputs} "
            "jobs (their blobs are counted below)"
        )
    typer.echo(f"referenced: {s.referenced.files} blobs, {s.referenced.bytes} bytes")
    young = f"{s.young.files} blobs, {s.young.bytes} bytes"
    typer.echo(f"unreferenced but younger than {report.grace_s} s: {young}")
    typer.echo(
        f"{verb}: {s.garbage.files} blobs, {s.keys.files} keys, {s.partial.files} partial writes, "
        f"{report.directories.files} upload/staging directories, {report.staging_images} staging image "
        f"tags, {report.registry_images} registry images nothing names; {report.freed_bytes} bytes"
    )
    if s.kept_racing:
        typer.echo(f"kept {s.kept_racing} files a writer reused during the collection")


@app.command()
def seed(ctx: typer.Context) -> None:
    """Load the demo catalog (idempotent: listings that exist are left alone)."""
    settings = settings_of(ctx)
    _migrate(settings)

    async def run():
        from catalog.seed import seed_demo

        async with open_catalog(settings, with_index=False) as catalog:
            return await seed_demo(catalog)

    report = run_async(run())
    typer.echo(f"demo catalog: {report.summary()}")


def search_json(response: SearchResponse) -> dict:
    """The ``--json`` shape: what Query.search returns, in the catalog's snake_case names."""
    return {
        "search_id": response.search_id,
        "total_count": response.total_count,
        "notes": list(response.notes),
        "results": [
            {
                "id": result.listing.id,
                "name": result.listing.name,
                "kind": result.listing.kind,
                "category": result.listing.category,
                "score": round(result.score, 6),
                "explanation": result.explanation,
                "parts": [
                    {"name": p.name, "value": round(p.value, 6), "detail": p.detail} for p in result.parts
                ],
            }
            for result in response.results
        ],
    }


@app.command()
def search(
    ctx: typer.Context,
    text: str = typer.Argument(..., help="What you need, in your own words."),
    as_json: bool = typer.Option(False, "--json", help="Print results (with explanations) as JSON."),
    limit: int = typer.Option(10, "--limit", "-n", help="How many results (1..max_page_size)."),
    category: str | None = typer.Option(None, "--category", help="Only this category."),
    kind: list[str] = typer.Option([], "--kind", help="Only these kinds (repeatable)."),
    token: str | None = typer.Option(None, "--token", envvar="MLREPO_TOKEN", help="Search as this account."),
) -> None:
    """Search the catalog the same way Query.search does (public listings unless --token is given)."""
    from catalog.actors import ANONYMOUS
    from catalog.search_service import SearchRequest

    settings = settings_of(ctx)

    async def run() -> SearchResponse:
        async with open_catalog(settings) as catalog:
            actor = await catalog.accounts.authenticate(token) if token else ANONYMOUS
            request = SearchRequest(text=text, category=category, kinds=tuple(kind) or None, limit=limit)
            return await catalog.search.search(actor, request)

    response = run_async(run())
    if as_json:
        print_json(search_json(response))
        return
    for note in response.notes:
        typer.secho(note, dim=True)
    if not response.results:
        typer.echo("no results")
        return
    for position, result in enumerate(response.results, start=1):
        listing = result.listing
        typer.echo(
            f"{position:2}. {listing.name}  [{listing.kind}, {listing.category}]  score {result.score:.3f}"
        )
        typer.echo(f"    id {listing.id}; {result.explanation}")


# ---------------------------------------------------------------------------- accounts and tokens


@account_app.command("create")
def account_create(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., help="Account name (ASCII letters, digits, '_', '.', '-'), unique whatever its case."
    ),
    role: Role = typer.Option(
        Role.REQUESTER, "--role", case_sensitive=False, help="producer, requester or admin."
    ),
    email: str | None = typer.Option(
        None, "--email", help="Contact address (optional; its syntax is checked)."
    ),
    with_token: bool = typer.Option(False, "--token", help="Also issue an API token and print it once."),
) -> None:
    """Create an account (as the operator: no token needed)."""
    settings = settings_of(ctx)
    _migrate(settings)

    async def run():
        async with open_catalog(settings, with_index=False) as catalog:
            account = await catalog.accounts.create(name, role.value, email)
            token = await catalog.accounts.create_token(account.id) if with_token else None
            return account, token

    account, token = run_async(run())
    typer.echo(f"account {account.name} ({account.role}) id {account.id}")
    if token is not None:
        typer.echo(f"token (shown once): {token.secret}")


@account_app.command("quota")
def account_quota(
    ctx: typer.Context,
    account: str = typer.Argument(..., help="Account name or id."),
    cpu: float | None = typer.Option(None, "--cpu", help="Cores one job may use."),
    memory_mb: int | None = typer.Option(None, "--memory-mb", help="MiB one job may use, at least 64."),
    gpu: int | None = typer.Option(None, "--gpu", help="GPUs one job may use (the default is 0)."),
) -> None:
    """Show an account's job quota, or change the values given (as the operator: no token needed)."""
    settings = settings_of(ctx)
    _migrate(settings)

    async def run():
        async with open_catalog(settings, with_index=False) as catalog:
            if cpu is None and memory_mb is None and gpu is None:
                return await catalog.accounts.resolve(account)
            return await catalog.accounts.set_quota(account, cpu=cpu, memory_mb=memory_mb, gpu=gpu)

    info = run_async(run())
    typer.echo(
        f"account {info.name} quota: cpu {info.quota_cpu:g}, memory {info.quota_memory_mb} MiB, "
        f"gpu {info.quota_gpu}"
    )


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    account: str = typer.Argument(..., help="Account name or id."),
    name: str = typer.Option("default", "--name", help="A label to recognise the token by."),
) -> None:
    """Issue an API token for an account and print it once (only its hash is stored)."""
    settings = settings_of(ctx)

    async def run():
        async with open_catalog(settings, with_index=False) as catalog:
            info = await catalog.accounts.resolve(account)
            return await catalog.accounts.create_token(info.id, name)

    token = run_async(run())
    typer.echo(token.secret)


@token_app.command("list")
def token_list(ctx: typer.Context, account: str = typer.Argument(..., help="Account name or id.")) -> None:
    """List an account's tokens, newest first: id, name, created, last used, revoked (never secrets)."""
    settings = settings_of(ctx)

    async def run():
        async with open_catalog(settings, with_index=False) as catalog:
            return await catalog.accounts.tokens(None, account)

    for token in run_async(run()):
        used = token.last_used_at.isoformat(timespec="seconds") if token.last_used_at else "never used"
        state = "revoked" if token.revoked else "active"
        typer.echo(f"{token.id}  {token.name}  created {token.created_at:%Y-%m-%d %H:%M}  {used}  {state}")


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: str = typer.Argument(..., help="The token's id.")) -> None:
    """Revoke a token at once (as the operator: no token needed); requests with it are refused."""
    settings = settings_of(ctx)

    async def run():
        async with open_catalog(settings, with_index=False) as catalog:
            return await catalog.accounts.revoke_token(None, token_id)

    token = run_async(run())
    typer.echo(f"revoked token {token.id} ({token.name}) of account {token.account_id}")


@token_app.command("revoke-all")
def token_revoke_all(
    ctx: typer.Context,
    account: str = typer.Argument(..., help="Account name or id."),
    name: str | None = typer.Option(None, "--name", help="Only the tokens with this label (default: all)."),
) -> None:
    """Revoke all of an account's tokens, or those with one label (as the operator): requests carrying
    them fail with UNAUTHENTICATED."""
    settings = settings_of(ctx)

    async def run() -> int:
        async with open_catalog(settings, with_index=False) as catalog:
            return await catalog.accounts.revoke_tokens(account, name)

    count = run_async(run())
    typer.echo(f"revoked {count} token{'s' if count != 1 else ''} of {account}")


def _register_areas() -> None:
    for module in import_areas("api.commands", COMMAND_AREAS):
        module.register(app)


_register_areas()

__all__ = ["app"]
