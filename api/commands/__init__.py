"""Per-area CLI commands and the helpers they share.

Convention: ``api/commands/<area>.py`` exports ``register(app: typer.Typer) -> None`` that adds its
commands (``@app.command()``) or sub-groups (``app.add_typer(...)``) to the ``mlrepo`` app; add the module
name to ``api.cli.COMMAND_AREAS``. Inside a command, ``settings_of(ctx)`` gives the ``Settings`` after
the global ``--data-dir``/``--database-url`` options, ``open_catalog(settings, with_index=...)`` opens
the ``CatalogApp`` for the duration of an ``async with``, and ``run_async(coroutine)`` runs it and turns
an ``MlrepoError`` into a one-line message and exit code 2 (``fail``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from infra.db import is_unreachable
from infra.errors import MlrepoError
from infra.settings import Settings, get_settings

if TYPE_CHECKING:
    from catalog.app import CatalogApp

T = TypeVar("T")

EXIT_USAGE = 2  # the caller's mistake (bad input, unknown id, wrong credentials)
EXIT_FAILURE = 1  # the work itself failed (nothing valid imported, a service unavailable...)


def settings_of(ctx: typer.Context) -> Settings:
    """The Settings chosen by the global options (falls back to the environment)."""
    root = ctx.find_root()
    settings = root.obj if isinstance(root.obj, Settings) else None
    return settings or get_settings()


@asynccontextmanager
async def open_catalog(
    settings: Settings, *, with_index: bool = True, load_index: bool = True
) -> AsyncIterator[CatalogApp]:
    """The catalog for one command. Commands that only write (accounts, tokens, imports) pass
    ``with_index=False``: a running ``mlrepo serve`` holds the embedded index and picks their rows up
    from the database. ``load_index=False``: the command rebuilds the index itself (``reindex``).
    Migrations are applied first (a no-op when current), so that a command run on a new data dir answers
    like on an empty catalog instead of failing on a missing table."""
    from catalog.app import CatalogApp  # imported late: it pulls in the model and index libraries

    catalog = await CatalogApp.open(settings, with_index=with_index, load_index=load_index, migrate=True)
    try:
        yield catalog
    finally:
        await catalog.close()


def operator_log_level(ctx: typer.Context) -> int:
    """The level of what a long-running command (``serve``, ``worker``) tells its operator: INFO by
    default (its start, requests or jobs), WARNING with the global ``--quiet``."""
    return logging.WARNING if ctx.find_root().params.get("quiet") else logging.INFO


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def one_line_reason(exc: BaseException) -> str | None:
    """What an operator can act on, in one line: one of our errors (with its code), or a database that is
    down or restarting (the usual trouble, not a bug: said as ``migrate`` says it, not as the driver's
    traceback). None for anything else: a bug, whose traceback is the useful part."""
    if isinstance(exc, MlrepoError):
        return f"{exc.message} [{exc.code}]"
    if is_unreachable(exc):
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        return f"the database cannot be reached: {reason} [UNAVAILABLE]"
    return None


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coroutine)
    except Exception as exc:
        reason = one_line_reason(exc)
        if reason is None:
            raise
        mistake = isinstance(exc, MlrepoError) and exc.code != "UNAVAILABLE"
        fail(reason, EXIT_USAGE if mistake else EXIT_FAILURE)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")


def resources_given(cpu: float | None, memory_mb: int | None, gpu: int | None) -> dict[str, Any]:
    """The resource options a command was given (``--cpu``, ``--memory-mb``, ``--gpu``), by name."""
    return {k: v for k, v in (("cpu", cpu), ("memory_mb", memory_mb), ("gpu", gpu)) if v is not None}
