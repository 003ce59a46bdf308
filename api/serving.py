"""``mlrepo serve``'s server: uvicorn on a socket bound first, and a start that fails said in one line.

The socket is bound before the database is migrated and the model loaded, so a port in use fails at once
and names the port (uvicorn binds only after the app started, then logged the error among its own lines).
A lifespan that fails (a backing service down, a setting missing) is recorded here: Starlette hands its
traceback to uvicorn, which logs it at ERROR; unless the operator asked for it (``-v``) that record is
dropped, and the command says the reason in one line instead.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from api.commands import one_line_reason
from infra.errors import Unavailable

# Where uvicorn logs its lifecycle, a failed lifespan's traceback included.
UVICORN_LOGGER = "uvicorn.error"


class StartupFailed(Exception):
    """The API did not start; ``str()`` is the reason in one line."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (as uvicorn binds one: IPv6 for a host with a colon, address
    reuse on), or ``Unavailable`` naming the address and why (in use, no such interface)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class _StartupWatch(logging.Filter):
    """Records why the app's lifespan failed to start, and then keeps uvicorn's ERROR records of it (the
    traceback, "Application startup failed") out of the log."""

    def __init__(self, app: Starlette) -> None:
        super().__init__()
        self.error: Exception | None = None
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def watched(app: Any) -> AsyncIterator[Any]:
            started = False
            try:
                async with inner(app) as state:
                    started = True
                    yield state
            except Exception as exc:
                if not started:
                    self.error = exc
                raise

        app.router.lifespan_context = watched

    def filter(self, record: logging.LogRecord) -> bool:
        return self.error is None or record.levelno < logging.ERROR


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets and not self.should_exit:  # uvicorn says where it runs only for the sockets it binds
            self._log_started_message(sockets)


def serve(app: Starlette, sock: socket.socket, *, log_level: str, verbose: bool) -> None:
    """Serve ``app`` on ``sock`` until stopped; ``StartupFailed`` when it could not start. ``verbose``: a
    failed start's traceback stays in the log."""
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level)  # configures uvicorn's logging
    watch = _StartupWatch(app)
    uvicorn_log = logging.getLogger(UVICORN_LOGGER)
    if not verbose:
        uvicorn_log.addFilter(watch)
    try:
        _Server(config).run(sockets=[sock])
    except SystemExit as exc:  # uvicorn's code 3: the lifespan failed
        if exc.code in (0, None):
            raise
        if watch.error is None:
            raise StartupFailed("its reason is logged above") from None
        reason = one_line_reason(watch.error)
        if reason is None:  # not one of ours: a bug, whose traceback is the useful part
            first = (str(watch.error).splitlines() or [""])[0]
            hint = "" if verbose else " (-v shows the traceback)"
            reason = f"{type(watch.error).__name__}: {first}{hint}"
        raise StartupFailed(reason) from None
    finally:
        uvicorn_log.removeFilter(watch)
        sock.close()
