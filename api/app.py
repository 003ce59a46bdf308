"""The ASGI application: GraphQL at ``/graphql`` (HTTP POST/GET and websockets), ``/healthz``.

The app's lifespan migrates the database, opens the ``CatalogApp`` (database, search index, embedding
model) once per process, lets area modules open their own long-lived services, and closes everything in
reverse order at shutdown. uvicorn serves it (``mlrepo serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import StartMessage
from strawberry.types import ExecutionResult

from api.context import Context, Services, authorization_from_params, build_context, resolve_actor
from api.errors import INTERNAL, coded_error, http_error_body
from api.schema import area_lifespans, schema
from catalog.app import CatalogApp
from infra.errors import MlrepoError, Unavailable
from infra.migrate import upgrade_async
from infra.settings import Settings, get_settings
from infra.timing import collecting, server_timing, stage
from search.embeddings import Encoder

logger = logging.getLogger("mlrepo.api")

GRAPHQL_PATH = "/graphql"
# The whole request in the view (body, parsing, execution, JSON) in the ``Server-Timing`` header; the
# stages the services mark inside it (``infra.timing``: encode, keyword, vector, rank, hydrate...) are
# parts of it.
GRAPHQL_STAGE = "graphql"
# Room for the GraphQL document and variables next to the largest allowed upload.
FORM_OVERHEAD_BYTES = 1 << 20
# Plain JSON requests carry no files: far below the upload limit, so a huge `variables` value cannot make
# the server parse hundreds of megabytes (the longest listing field, documentation, is 200k characters).
MAX_JSON_BODY_BYTES = 8 << 20
# A body refused before it was read whole (too slow, too large): the connection is closed after the
# answer, or a client still trickling bytes kept it open (each byte re-arms the keep-alive timer).
BODY_REFUSALS = (408, 413)


def limited_body(scope: Scope, receive: Receive, limit: int, timeout_s: float, *, whole: bool) -> Receive:
    """``receive`` that refuses bodies over ``limit`` bytes (declared or streamed) with a 413, so an
    oversized upload is never spooled to disk in full, and bodies that stall with a 408: nothing for
    ``timeout_s``, or (``whole``) not complete ``timeout_s`` after the first read. A client that sent
    most of an 8 MiB JSON body and stopped held the connection and those bytes for as long as it liked
    (40 such clients: +290 MB of server memory)."""
    declared = dict(scope.get("headers") or []).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body larger than {limit} bytes")
    received = 0
    deadline: float | None = None
    complete = False

    async def receive_limited() -> Message:
        nonlocal received, deadline, complete
        if complete:  # what follows the body (a disconnect) is not the body's to time
            return await receive()
        now = time.monotonic()
        if deadline is None and whole:
            deadline = now + timeout_s
        wait = timeout_s if deadline is None else min(timeout_s, deadline - now)
        try:
            async with asyncio.timeout(max(wait, 0)):
                message = await receive()
        except TimeoutError:
            raise HTTPException(408, f"the request body did not arrive within {timeout_s:g} s") from None
        received += len(message.get("body", b""))
        if received > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
        complete = not message.get("more_body", False)
        return message

    return receive_limited


async def credentials_hold(context: Context) -> bool:
    """Whether a socket's credentials still check out. They were checked once, at connection_init (or
    the upgrade's header); a token revoked since kept serving every new operation on the open socket,
    though revokeToken revokes at once. A backing service that cannot tell now does not close it."""
    if context.authorization is None:
        return True
    try:
        context.actor = await resolve_actor(context.services, context.authorization)
    except Unavailable:
        return True
    except MlrepoError:
        return False
    return True


async def closed_if_revoked(handler: BaseGraphQLTransportWSHandler | BaseGraphQLWSHandler) -> bool:
    """Close an acknowledged socket with 4403 once its credentials no longer hold; whether it did."""
    if handler.connection_acknowledged and not await credentials_hold(handler.context):
        await handler.websocket.close(code=4403, reason="Forbidden")
        return True
    return False


@asynccontextmanager
async def credentials_watched(
    handler: BaseGraphQLTransportWSHandler | BaseGraphQLWSHandler,
) -> AsyncIterator[None]:
    """While the block runs, check the socket's credentials every ``websocket_auth_recheck_s`` and close
    it once they no longer hold. Checked only at each new operation, a revoked token kept every stream
    already running, and a demandAlerts stream never ends: the holder of a leaked token, revoked, went on
    reading the account's alerts (others' searches) for as long as the socket stayed open."""
    every_s = handler.context.services.settings.websocket_auth_recheck_s

    async def watch() -> None:
        while True:
            await asyncio.sleep(every_s)
            if await closed_if_revoked(handler):
                return

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


class RecheckedTransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws: each ``subscribe`` runs only while the socket's token holds (else 4403), and
    the socket is closed within ``websocket_auth_recheck_s`` once it does not."""

    async def handle(self) -> None:
        async with credentials_watched(self):
            await super().handle()

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not await closed_if_revoked(self):
            await super().handle_subscribe(message)


class RecheckedLegacyWS(BaseGraphQLWSHandler[Context, None]):
    """The legacy graphql-ws: each ``start`` runs only while the socket's token holds (else 4403), and
    the socket is closed within ``websocket_auth_recheck_s`` once it does not."""

    async def handle(self) -> None:
        async with credentials_watched(self):
            await super().handle()

    async def handle_start(self, message: StartMessage) -> None:
        if not await closed_if_revoked(self):
            await super().handle_start(message)


class MlrepoGraphQL(GraphQL):
    """strawberry's ASGI view with our context, credential check and JSON-shaped transport errors."""

    graphql_transport_ws_handler_class = RecheckedTransportWS
    graphql_ws_handler_class = RecheckedLegacyWS

    def __init__(self, services_of: Callable[[], Services]) -> None:
        super().__init__(
            schema,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
            # GraphQL multipart requests: producers upload packages, images and datasets (publishing).
            multipart_uploads_enabled=True,
        )
        self._services_of = services_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        limit, upload = self._body_limit(scope)
        timeout_s = self._services_of().settings.request_body_timeout_s
        with collecting() as seconds:
            try:
                with stage(GRAPHQL_STAGE):
                    body = limited_body(scope, receive, limit, timeout_s, whole=not upload)
                    response = await self.run(Request(scope=scope, receive=body))
            except HTTPException as exc:
                # Unparseable JSON, no query, wrong method...: the client's mistake, in GraphQL's shape.
                # strawberry rewords a JSONDecodeError as "Unable to parse…": ours says what is wrong.
                reason = exc.__cause__.reason if isinstance(exc.__cause__, UnusableJson) else exc.reason
                response = JSONResponse(http_error_body(reason), status_code=exc.status_code)
                if exc.status_code in BODY_REFUSALS:  # what the client still sends is not read: hang up
                    response.headers["connection"] = "close"
            except Exception:
                logger.exception("GraphQL transport failed")
                response = JSONResponse(http_error_body("internal error; it has been logged", INTERNAL), 500)
        response.headers["Server-Timing"] = server_timing(seconds)
        await response(scope, receive, send)

    def _body_limit(self, scope: Scope) -> tuple[int, bool]:
        """The most bytes the request's body may hold, and whether it is an upload (multipart)."""
        content_type = dict(scope.get("headers") or []).get(b"content-type", b"")
        if content_type.startswith(b"multipart/"):
            return self._services_of().settings.publish_max_upload_bytes + FORM_OVERHEAD_BYTES, True
        return MAX_JSON_BODY_BYTES, False

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        return await build_context(
            self._services_of(), request.headers.get("authorization"), request, response
        )

    async def on_ws_connect(self, context: Context) -> Any:
        """Websocket clients may authenticate in ``connection_init``; bad credentials close the socket."""
        if context.auth_error is not None:
            raise ConnectionRejectionError({"message": context.auth_error.message})
        try:
            authorization = authorization_from_params(context.connection_params)
            if authorization is not None:
                context.actor = await resolve_actor(context.services, authorization)
                context.authorization = authorization
        except MlrepoError as exc:
            raise ConnectionRejectionError({"message": exc.message}) from exc
        return await super().on_ws_connect(context)

    async def execute_operation(self, **kwargs: Any) -> Any:
        context: Context = kwargs["context"]
        if context.auth_error is not None:
            error = GraphQLError(context.auth_error.message, original_error=context.auth_error)
            return ExecutionResult(data=None, errors=[coded_error(error)])
        return await super().execute_operation(**kwargs)

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        """Second line of defence: any error that bypassed ``ErrorCodes`` still gets its code here."""
        if result.errors:
            result.errors = [coded_error(error) for error in result.errors]
        return await super().process_result(request, result)

    def decode_json(self, data: str | bytes) -> object:
        """strawberry lets undecodable bytes and non-object JSON bodies escape as 500s; they are 400s
        (and, on a websocket, messages that are not JSON: closed with 4400)."""
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise UnusableJson("Unable to parse request body as JSON") from exc
        except RecursionError as exc:  # the decoder's own limit: a body nested thousands deep
            raise UnusableJson("The request body nests too deeply") from exc
        if not isinstance(value, dict | list):
            raise UnusableJson("The request body (and `variables`) must be a JSON object")
        if _has_unpaired_surrogate(value):
            raise UnusableJson("The request body holds an unpaired \\uD800-\\uDFFF escape: not text")
        return value

    def encode_json(self, data: object) -> str:
        return json.dumps(data, separators=(",", ":"), default=str)


class UnusableJson(HTTPException, json.JSONDecodeError):
    """A body or message the service cannot use. Over HTTP it is a 400; strawberry's websocket loop
    catches only ``JSONDecodeError`` (closing with 4400), and let the HTTP exception kill the connection
    with no close frame."""

    def __init__(self, reason: str) -> None:
        json.JSONDecodeError.__init__(self, reason, "", 0)
        self.status_code, self.reason = 400, reason


def _has_unpaired_surrogate(value: object) -> bool:
    """JSON may escape half of a UTF-16 pair; Python decodes it to a str that cannot be encoded, which
    every database, tokenizer and index below then fails on (the GraphQL parser refuses the same escape
    in a query's own text). Walked without recursion: the body may nest as deep as the decoder allows."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


async def healthz(request: Request) -> JSONResponse:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    body = {"status": "ok"}
    # Past the ANN threshold vector search stays exact (slower) until a background HNSW build finishes:
    # "building", then "hnsw". Small catalogs are always exact and say nothing more.
    state = getattr(services.catalog.index.backend, "vector_index_state", "exact")
    if state != "exact":
        body["vector_index"] = state
    return JSONResponse(body)


async def root(_request: Request) -> RedirectResponse:
    return RedirectResponse(GRAPHQL_PATH)


def create_app(
    settings: Settings | None = None, *, migrate: bool = True, encoder: Encoder | None = None
) -> Starlette:
    """Build the ASGI app; ``migrate=False`` when the caller has already migrated (``mlrepo serve``).

    ``encoder`` shares an already loaded embedding model (tests and benchmarks open many apps).

    Once started, everything the process holds so far (the index's projections, the model, the schema:
    ~580k objects at 10k listings) is moved out of the garbage collector's sight (``gc.freeze``): it lives
    as long as the process, yet each full collection walked all of it: a 0.3-1 s stall of whichever search
    it landed in at 10k listings, about one per 300 searches (3-45 ms frozen; docs/latency-experiments.md).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if migrate:
            await upgrade_async(settings)
        async with AsyncExitStack() as stack:
            catalog = await CatalogApp.open(settings, encoder=encoder)
            stack.push_async_callback(catalog.close)
            services = Services(settings=settings, catalog=catalog)
            for area_lifespan in area_lifespans():
                await stack.enter_async_context(area_lifespan(services))
            app.state.services = services
            stack.callback(gc.unfreeze)  # what tests open and close again can be collected then
            gc.freeze()
            logger.info("mlrepo API ready on %s", GRAPHQL_PATH)
            try:
                yield
            finally:
                app.state.services = None

    def services_of() -> Services:
        services = getattr(app.state, "services", None)
        if services is None:
            raise RuntimeError("the API is not started (lifespan did not run)")
        return services

    graphql = MlrepoGraphQL(services_of)
    app = Starlette(
        routes=[
            Route("/", root),
            Route("/healthz", healthz),
            Route(GRAPHQL_PATH, graphql, methods=["GET", "POST"]),
            WebSocketRoute(GRAPHQL_PATH, graphql),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.services = None
    return app
