"""Load the per-area modules of the API (GraphQL fields, CLI commands) from explicit lists.

Each area (listings, jobs, publishing, ...) lives in its own module owned by its own team. The lists in
``api.schema`` and ``api.cli`` name them explicitly, so the schema never changes by accident; an area
whose module has not been written yet is skipped with a warning, while any error *inside* an existing
module is raised (a broken area must not silently vanish from the API).
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

logger = logging.getLogger("mlrepo.api")


def import_areas(package: str, names: tuple[str, ...]) -> list[ModuleType]:
    modules = []
    for name in names:
        qualified = f"{package}.{name}"
        try:
            modules.append(importlib.import_module(qualified))
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise
            logger.info("API area %s is not installed yet; skipping it", qualified)
    return modules
