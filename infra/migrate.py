"""Apply Alembic migrations programmatically (``mlrepo migrate`` and at ``serve`` start)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from infra.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Bring the database to ``revision``; safe to call at every start (a no-op when current)."""
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.resolved_database_url), revision)


async def upgrade_async(settings: Settings, revision: str = "head") -> None:
    """``upgrade`` from async code: Alembic's env runs its own event loop, so it needs its own thread."""
    await asyncio.to_thread(upgrade, settings, revision)
