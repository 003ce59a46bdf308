"""Executing an area of the real GraphQL schema in process, as a given actor, with coded errors."""

from __future__ import annotations

from typing import Any

from api.context import Context, Services
from catalog.actors import Actor


async def run(schema, services: Services, actor: Actor, query: str, **variables: Any) -> dict[str, Any]:
    """``data``, or ``{"errors": [{message, code}]}`` when the request failed."""
    result = await schema.execute(query, variable_values=variables, context_value=Context(services, actor))
    if result.errors:
        return {
            "errors": [
                {"message": e.message, "code": (e.extensions or {}).get("code")} for e in result.errors
            ]
        }
    return result.data
