"""Per-request GraphQL context: the long-lived services and who is asking.

Resolvers read ``info.context.catalog`` (the ``CatalogApp``), ``info.context.services`` (everything the
API process opened, for areas that need more than the catalog) and ``info.context.actor``.

The actor comes from ``Authorization: Bearer <token>`` (for websockets also from the ``connection_init``
payload, since browsers cannot set headers there). No credentials → anonymous. Credentials that do not
check out are not silently downgraded to anonymous: the whole operation is refused with UNAUTHENTICATED.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from api.loaders import ListingLoaders
from api.subscription_slots import SubscriptionSlots
from catalog.actors import ANONYMOUS, Actor
from infra.errors import MlrepoError, Unauthenticated, Unavailable
from infra.settings import Settings

if TYPE_CHECKING:
    from catalog.app import CatalogApp

logger = logging.getLogger("mlrepo.api")

BEARER = "bearer"


@dataclass
class Services:
    """What the API process keeps open for its lifetime (see ``api.app.lifespan``).

    ``extras`` holds long-lived services of other areas (e.g. the executor's), keyed by area name; an
    area module fills it from its own ``lifespan(services)`` hook.
    """

    settings: Settings
    catalog: CatalogApp
    extras: dict[str, Any] = field(default_factory=dict)
    # Running subscription streams per account (``MLREPO_MAX_SUBSCRIPTIONS_PER_ACCOUNT``).
    subscriptions: SubscriptionSlots = field(default_factory=SubscriptionSlots)


@dataclass
class Context:
    services: Services
    actor: Actor = ANONYMOUS
    request: Any = None
    response: Any = None
    # Set when the caller sent credentials that failed; the view answers with this error instead.
    auth_error: MlrepoError | None = None
    # Filled by strawberry from a websocket's connection_init payload.
    connection_params: Mapping[str, Any] | None = None
    # The credentials the actor came from: a websocket checks them again before each operation.
    authorization: str | None = None
    _loaders: ListingLoaders | None = field(default=None, repr=False)

    @property
    def catalog(self) -> CatalogApp:
        return self.services.catalog

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def loaders(self) -> ListingLoaders:
        """The request's loaders of listing relations, for its actor (new ones if the actor changed)."""
        if self._loaders is None or self._loaders.actor != self.actor:
            self._loaders = ListingLoaders.of(self.catalog, self.actor)
        return self._loaders

    def subscription_slot(self) -> AbstractAsyncContextManager[None]:
        """One of the actor's live-subscription slots, held while a subscription's stream runs."""
        return self.services.subscriptions.slot(self.actor, self.settings.max_subscriptions_per_account)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; None when no credentials were sent.

    A present but malformed header is an error, not anonymity: the caller meant to authenticate.
    """
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != BEARER or not token.strip():
        raise Unauthenticated("Authorization header must be 'Bearer <token>'")
    return token.strip()


async def resolve_actor(services: Services, authorization: str | None) -> Actor:
    """Turn an Authorization value into an Actor; raises Unauthenticated/Unavailable on failure."""
    token = bearer_token(authorization)
    if token is None:
        return ANONYMOUS
    try:
        return await services.catalog.accounts.authenticate(token)
    except MlrepoError:
        raise
    except Exception as exc:  # the database being down must not look like a bad token, nor a 500
        logger.exception("token check failed")
        raise Unavailable("could not check credentials right now; retry later") from exc


async def build_context(
    services: Services, authorization: str | None, request: Any, response: Any
) -> Context:
    context = Context(services=services, request=request, response=response, authorization=authorization)
    try:
        context.actor = await resolve_actor(services, authorization)
    except MlrepoError as exc:
        context.auth_error = exc
    return context


def authorization_from_params(params: Mapping[str, Any] | None) -> str | None:
    """The Authorization value of a websocket ``connection_init`` payload (any key case).

    A value that is not text (a number, a list) is malformed credentials, refused like a malformed
    header rather than ignored: the client meant to authenticate, and anonymity would hide its mistake.
    """
    if not params:
        return None
    for key, value in params.items():
        if key.lower() == "authorization" and value is not None:
            if not isinstance(value, str):
                raise Unauthenticated("Authorization must be the text 'Bearer <token>'")
            return value
    return None
