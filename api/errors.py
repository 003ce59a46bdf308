"""How failures reach a GraphQL client: every error carries ``extensions.code``, none leaks internals.

Layers below the API raise ``infra.errors.MlrepoError`` subclasses whose ``code`` the client should see
(BAD_INPUT, NOT_FOUND, ...). Everything else is a bug: it is logged here with its traceback under a short
reference, and the client only gets ``INTERNAL`` plus that reference. The rewriting happens in a schema
extension (a ``MaskErrors`` subclass) so that HTTP, websocket queries and subscription events are all
covered by one code path.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from graphql.error import GraphQLError
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from strawberry.exceptions import StrawberryGraphQLError
from strawberry.extensions import MaskErrors
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from infra.db import is_unreachable
from infra.errors import MlrepoError, Unavailable

logger = logging.getLogger("mlrepo.api")

BAD_INPUT = "BAD_INPUT"
DATABASE_UNREACHABLE = "the database cannot be reached right now; retry later"
INTERNAL = "INTERNAL"

# graphql-core errors raised while parsing, validating or coercing the request have no original
# exception (or one of these); they describe the client's document, so they are the client's to fix.
_CLIENT_DOCUMENT_ERRORS = (GraphQLError, CannotGetOperationTypeError, InvalidOperationTypeError)
_JSON_SCALARS = (str, int, float, bool, type(None))
MAX_MESSAGE_CHARS = 500
# PostgreSQL's character_not_in_repertoire: a NUL in a text value, which it cannot store (SQLite can).
# Only a client's input carries one, so it is that input's fault, not an incident.
UNSTORABLE_TEXT_SQLSTATE = "22021"


def _root_cause(error: GraphQLError) -> BaseException | None:
    """graphql-core may wrap a resolver's exception in further GraphQLErrors; find the real one."""
    cause: BaseException | None = error.original_error
    while isinstance(cause, GraphQLError) and cause.original_error is not None:
        cause = cause.original_error
    return cause


def _public_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Only plain JSON values from an error's details reach the client (never objects or paths)."""
    public: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, _JSON_SCALARS):
            public[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(item, _JSON_SCALARS) for item in value):
            public[key] = list(value)
    return public


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line, field-by-field summary of a pydantic error (no input values echoed back)."""
    parts = []
    for item in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item.get("loc", ())) or "input"
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid input"


def _clipped(message: str) -> str:
    """Messages may quote the caller's input; a megabyte-long id need not come back in full."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def _rebuilt(error: GraphQLError, message: str, extensions: dict[str, Any]) -> GraphQLError:
    return GraphQLError(
        message=_clipped(message),
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


def coded_error(error: GraphQLError) -> GraphQLError:
    """Return ``error`` as the client should see it: a clear message and ``extensions.code``."""
    if error.extensions and "code" in error.extensions and error.original_error is None:
        return error  # already formatted (idempotent: streams may pass a result twice)
    cause = _root_cause(error)
    if isinstance(cause, MlrepoError):
        if cause.code == INTERNAL:
            return _internal(error, cause)
        extensions = {"code": cause.code, **_public_details(cause.details)}
        return _rebuilt(error, cause.message, extensions)
    if isinstance(cause, DBAPIError) and getattr(cause.orig, "sqlstate", None) == UNSTORABLE_TEXT_SQLSTATE:
        return _rebuilt(error, "text values must not contain NUL characters", {"code": BAD_INPUT})
    if isinstance(cause, ValidationError):
        return _rebuilt(error, describe_validation_error(cause), {"code": BAD_INPUT})
    if cause is not None and is_unreachable(cause):
        # The database is down or restarting: every request fails alike until it is back, which the
        # client should retry, and which is no bug (one line each, not a traceback per request).
        logger.warning("database unreachable in GraphQL operation at path %s: %r", error.path, cause)
        return _rebuilt(error, DATABASE_UNREACHABLE, {"code": Unavailable.code})
    if isinstance(cause, StrawberryGraphQLError):
        return _rebuilt(error, error.message, {"code": BAD_INPUT, **(cause.extensions or {})})
    if cause is None or isinstance(cause, _CLIENT_DOCUMENT_ERRORS):
        # Syntax errors, unknown fields, wrong argument types, bad enum values, missing variables
        # (graphql-core reports those as GraphQLErrors, sometimes wrapped in another one).
        return _rebuilt(error, error.message, {"code": BAD_INPUT})
    return _internal(error, cause)


def _internal(error: GraphQLError, cause: BaseException) -> GraphQLError:
    reference = uuid.uuid4().hex[:12]
    logger.error(
        "unexpected error in GraphQL operation (reference %s) at path %s",
        reference,
        error.path,
        exc_info=(type(cause), cause, cause.__traceback__),
    )
    return _rebuilt(error, f"Internal error (reference {reference}); it has been logged.", {"code": INTERNAL})


class ErrorCodes(MaskErrors):
    """Schema extension: rewrite every error of a result (including streamed ones) with ``coded_error``.

    ``MaskErrors`` already knows where errors appear in plain, streamed and subscription results; only
    the per-error rewrite differs.
    """

    def __init__(self) -> None:
        super().__init__(should_mask_error=lambda _error: True)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return coded_error(error)


def http_error_body(message: str, code: str = BAD_INPUT) -> dict[str, Any]:
    """The GraphQL-shaped body for failures before execution (unparseable JSON, no query, ...)."""
    return {"data": None, "errors": [{"message": message, "extensions": {"code": code}}]}
