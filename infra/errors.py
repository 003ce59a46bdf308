"""Errors every layer may raise; the API maps ``code`` to GraphQL ``extensions.code``.

They live in infra (the bottom layer) so that search, ranking, catalog and executor can all raise them
without importing upward.
"""

from __future__ import annotations

from typing import Any


class MlrepoError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadInput(MlrepoError):
    code = "BAD_INPUT"


class CursorExpired(BadInput):
    """A paging cursor whose search snapshot has expired. Its own code because, unlike other bad input,
    the client did nothing wrong and has one fix: search again from the first page."""

    code = "CURSOR_EXPIRED"


class NotFound(MlrepoError):
    code = "NOT_FOUND"


class Forbidden(MlrepoError):
    code = "FORBIDDEN"


class Unauthenticated(MlrepoError):
    code = "UNAUTHENTICATED"


class Conflict(MlrepoError):
    code = "CONFLICT"


class Gone(MlrepoError):
    """Something that existed and was removed on purpose, for good (a finished job's outputs past their
    retention). Its own code because, unlike NOT_FOUND, the id is right and retrying or another id will
    not help: the client has to run it again."""

    code = "GONE"


class Unavailable(MlrepoError):
    code = "UNAVAILABLE"
