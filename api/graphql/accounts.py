"""GraphQL for one's API tokens: list them, issue one (its secret shown once), revoke one.

Why here and not only in the CLI: a token that leaks must be revoked by its owner at once, without an
operator; ``catalog.accounts.AccountService`` checks who may do what (one's own tokens; an admin's: any
account's). A token's secret is never stored, so listing shows names and dates only.
"""

from __future__ import annotations

from datetime import datetime

import strawberry

from catalog.accounts import TokenInfo


@strawberry.type(description="An API token as its owner may review it (never its secret).")
class ApiToken:
    id: strawberry.ID
    name: str
    created_at: datetime
    last_used_at: datetime | None = strawberry.field(description="To about a minute.")
    revoked: bool

    @classmethod
    def of(cls, info: TokenInfo) -> ApiToken:
        return cls(
            id=strawberry.ID(info.id),
            name=info.name,
            created_at=info.created_at,
            last_used_at=info.last_used_at,
            revoked=info.revoked,
        )


@strawberry.type(description="A new token: `secret` is shown this once; send it as `Authorization: Bearer`.")
class IssuedToken:
    id: strawberry.ID
    name: str
    secret: str


@strawberry.type
class Query:
    @strawberry.field(
        description="Your API tokens, newest first (an admin may name another account by name or id)."
    )
    async def my_tokens(self, info: strawberry.Info, account: str | None = None) -> list[ApiToken]:
        ctx = info.context
        return [ApiToken.of(t) for t in await ctx.catalog.accounts.tokens(ctx.actor, account)]


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Issue an API token for your account (an admin: for `account`, a name or id)."
    )
    async def create_token(
        self, info: strawberry.Info, name: str = "default", account: str | None = None
    ) -> IssuedToken:
        ctx = info.context
        issued = await ctx.catalog.accounts.issue_token(ctx.actor, account, name)
        return IssuedToken(id=strawberry.ID(issued.id), name=issued.name, secret=issued.secret)

    @strawberry.mutation(description="Revoke one of your tokens at once (an admin: anyone's).")
    async def revoke_token(self, info: strawberry.Info, id: strawberry.ID) -> ApiToken:
        ctx = info.context
        return ApiToken.of(await ctx.catalog.accounts.revoke_token(ctx.actor, str(id)))
