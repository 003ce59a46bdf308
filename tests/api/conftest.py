"""API fixtures: the real ASGI app (lifespan and all) over a real CatalogApp, on SQLite and PostgreSQL.

Requests go through httpx's ASGI transport, so every test exercises the same Starlette app, strawberry
view, context and error formatting that uvicorn serves; the websocket tests start a real uvicorn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.context import Services
from infra.settings import Settings
from search.embeddings import Encoder


@dataclass
class Api:
    """A client for one running app, with the services behind it for arranging test data."""

    app: Starlette
    http: httpx.AsyncClient

    @property
    def services(self) -> Services:
        return self.app.state.services

    async def post(self, query: str, variables: dict[str, Any] | None = None, token: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        return await self.http.post("/graphql", json=body, headers=headers)

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict:
        """The response body of a GraphQL request that must reach the executor (HTTP 200)."""
        response = await self.post(query, variables, token)
        assert response.status_code == 200, response.text
        return response.json()

    async def data(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict:
        """``data`` of a request that must succeed without errors."""
        body = await self.gql(query, variables, token)
        assert not body.get("errors"), body["errors"]
        return body["data"]

    async def error_code(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> str:
        """The ``extensions.code`` of the single error a request must fail with."""
        body = await self.gql(query, variables, token)
        errors = body.get("errors")
        assert errors, f"expected an error, got {body}"
        return errors[0]["extensions"]["code"]

    async def account(self, name: str, role: str = "producer") -> str:
        """Create an account and return a fresh API token for it."""
        accounts = self.services.catalog.accounts
        info = await accounts.create(name, role)
        return (await accounts.create_token(info.id)).secret


@pytest.fixture
async def api(settings: Settings, encoder: Encoder) -> AsyncIterator[Api]:
    app = create_app(settings, migrate=False, encoder=encoder)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mlrepo.test") as http:
            yield Api(app=app, http=http)
