"""The one GraphQL schema, merged from per-area modules.

Convention: ``api/graphql/<area>.py`` exports strawberry types named ``Query`` and/or ``Mutation`` and,
optionally, ``Subscription``; their fields become fields of the root types (a field name claimed by two
areas is an error at import). An area that needs long-lived services may also export
``lifespan(services) -> AsyncContextManager`` (entered once at app start, after the catalog is open; it
may put its services into ``services.extras``). To add an area, add its module name to ``AREAS``.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import ModuleType
from typing import Any

import strawberry
from graphql import DocumentNode, parse
from graphql.error import GraphQLError
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types import ExecutionContext

from api.areas import import_areas
from api.errors import ErrorCodes
from api.operation_limits import CostlyFieldsLimiter
from catalog.clock import as_utc

AREAS: tuple[str, ...] = ("listings", "search", "jobs", "publishing", "pipelines", "demand", "accounts")

# Abuse limits on the document itself (not on data): far above anything a real client sends.
MAX_DEPTH = 12
MAX_ALIASES = 50
MAX_TOKENS = 5000
# Parsed and validated documents kept (shared LRU caches): clients send the same few queries.
CACHED_DOCUMENTS = 512


@functools.lru_cache(maxsize=CACHED_DOCUMENTS)
def _parsed(query: str, options: tuple[tuple[str, Any], ...]) -> DocumentNode:
    return parse(query, **dict(options))


class ParsedDocumentCache(SchemaExtension):
    """Each document text parsed once (~0.15 ms for a small search query, more for larger ones).

    Not strawberry's ``ParserCache``: a syntax error raised there escapes the extensions, so it would
    reach the client without a code. Here only documents that parse are cached; one that does not is
    left to strawberry's own parse, whose error takes the usual coded path. The parse options (the token
    limit) are part of the key."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            with contextlib.suppress(GraphQLError):
                options = tuple(sorted(context.parse_options.items()))
                context.graphql_document = _parsed(context.query, options)
        yield


def _per_operation(extension: SchemaExtension) -> Callable[[], SchemaExtension]:
    """Per-operation copies of ``extension`` sharing its validation rule classes. A limiter built anew
    for each operation made new rule classes, part of the ValidationCache key, so every request missed
    the cache and was validated again (~2 ms of each search over HTTP)."""
    return lambda: copy.copy(extension)


def _root_parts(modules: list[ModuleType], root: str) -> tuple[type, ...]:
    return tuple(getattr(module, root) for module in modules if hasattr(module, root))


def merge_root(name: str, parts: tuple[type, ...]) -> type | None:
    """One root type with the fields of every part; two areas defining one field is a bug, not a warning."""
    if not parts:
        return None
    names = Counter(field.name for part in parts for field in part.__strawberry_definition__.fields)
    clashes = sorted(field for field, count in names.items() if count > 1)
    if clashes:
        raise TypeError(f"GraphQL {name} fields defined by more than one area: {', '.join(clashes)}")
    return strawberry.type(type(name, parts, {}))


def _utc_isoformat(moment: datetime) -> str:
    """A DateTime as ISO 8601 with its offset. SQLite hands back naive datetimes (written in UTC) where
    PostgreSQL gives aware ones: without this, which fields carried ``+00:00`` depended on the engine and
    on the resolver, and a client read an offset-less one as its own local time."""
    return as_utc(moment).isoformat()


# strawberry's DateTime (same name, description and parsing of inputs), serialized in UTC.
UTC_DATETIME = strawberry.scalar(
    name=DateTimeDefinition.name,
    description=DateTimeDefinition.description,
    serialize=_utc_isoformat,
    parse_value=DateTimeDefinition.parse_value,
)


class MlrepoSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Do not log here: ``ErrorCodes`` logs the unexpected errors (with a reference) and only those;
        a client's typo or a NOT_FOUND is not an incident."""


def build_schema(area_names: tuple[str, ...] = AREAS) -> MlrepoSchema:
    modules = import_areas("api.graphql", area_names)
    query = merge_root("Query", _root_parts(modules, "Query"))
    if query is None:
        raise TypeError("no API area defines a Query")
    return MlrepoSchema(
        query=query,
        mutation=merge_root("Mutation", _root_parts(modules, "Mutation")),
        subscription=merge_root("Subscription", _root_parts(modules, "Subscription")),
        config=StrawberryConfig(scalar_map={datetime: UTC_DATETIME}),
        # Factories, not instances: strawberry gives each operation its own extension objects.
        extensions=[
            ErrorCodes,
            ParsedDocumentCache,
            lambda: ValidationCache(maxsize=CACHED_DOCUMENTS),
            _per_operation(QueryDepthLimiter(max_depth=MAX_DEPTH)),
            _per_operation(MaxAliasesLimiter(max_alias_count=MAX_ALIASES)),
            _per_operation(MaxTokensLimiter(max_token_count=MAX_TOKENS)),
            _per_operation(CostlyFieldsLimiter()),
        ],
    )


def area_lifespans(area_names: tuple[str, ...] = AREAS) -> list[Callable[[Any], AbstractAsyncContextManager]]:
    return [
        module.lifespan for module in import_areas("api.graphql", area_names) if hasattr(module, "lifespan")
    ]


schema = build_schema()
