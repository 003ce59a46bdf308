"""Accounts and API tokens.

A token's secret is shown once, when it is issued, and only its SHA-256 hash is stored: a leaked
database yields no usable credential. Tokens are random 32-byte URL-safe strings, so a plain (unsalted)
hash is enough — there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from catalog.actors import Actor
from catalog.choices import parse_choice
from catalog.clock import as_utc
from catalog.enums import Role
from catalog.listing_input import MIN_MEMORY_MB
from catalog.text_checks import refuse_nul
from infra.db import Database
from infra.errors import BadInput, Conflict, NotFound, Unauthenticated
from infra.tables import Account, ApiToken, account_name_key, utcnow

logger = logging.getLogger("mlrepo.catalog")

TOKEN_PREFIX = "mlr_"
SYSTEM_ACCOUNT_NAME = "mlrepo"  # owns imported and demo listings that name no owner
# ASCII only, on purpose: a name shows on every listing, and the pattern leaves no room for look-alike
# letters from other scripts, invisible characters or bidirectional controls (listing names refuse the
# latter two: ``catalog.listing_input``). Names are unique regardless of case (``account_name_key``).
ACCOUNT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}\Z")
# An address's shape, as HTML's ``<input type=email>`` checks it (the WHATWG rule): a local part of the
# characters RFC 5322 allows unquoted, "@", then dot-separated host labels. Nothing is looked up.
EMAIL_PATTERN = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
MAX_EMAIL_CHARS = 255  # accounts.email
# Writing last_used_at on every request would turn every read into a write; a minute's accuracy is enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# The most a quota may grant: a typo ("--gpu 80") should be refused, not become a promise no worker keeps.
QUOTA_LIMITS = {"cpu": 1024.0, "memory_mb": 4 << 20, "gpu": 64}
# The least: a memory quota under the smallest sandbox (``MIN_MEMORY_MB``, the jobs' own floor) let no job
# run within it, yet was accepted (allocation then gave the floor anyway, over the quota). A cpu quota of 0
# stays the way to stop an account's jobs.
QUOTA_MINIMUMS = {"cpu": 0.0, "memory_mb": MIN_MEMORY_MB, "gpu": 0}


@dataclass(frozen=True, slots=True)
class AccountInfo:
    id: str
    name: str
    role: str
    email: str | None
    quota_cpu: float
    quota_memory_mb: int
    quota_gpu: int
    created_at: datetime

    @classmethod
    def of(cls, row: Account) -> AccountInfo:
        return cls(
            id=row.id,
            name=row.name,
            role=row.role,
            email=row.email,
            quota_cpu=row.quota_cpu,
            quota_memory_mb=row.quota_memory_mb,
            quota_gpu=row.quota_gpu,
            created_at=row.created_at,
        )

    def as_actor(self) -> Actor:
        return Actor(account_id=self.id, role=self.role, name=self.name)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as its owner may review it: never its secret (only the hash is stored)."""

    id: str
    account_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool

    @classmethod
    def of(cls, row: ApiToken) -> TokenInfo:
        last = row.last_used_at
        return cls(row.id, row.account_id, row.name, as_utc(row.created_at), as_utc(last) if last else None,
                   bool(row.revoked))  # fmt: skip


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """The only moment the secret exists outside the caller's hands: show it once, never store it."""

    id: str
    account_id: str
    name: str
    secret: str


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_role(role: str) -> Role:
    return parse_choice(Role, role, "role")


def validate_account_name(name: str) -> str:
    name = name.strip()
    if not ACCOUNT_NAME_PATTERN.match(name):
        raise BadInput(
            "account name must be 1-100 characters of ASCII letters, digits, '_', '.', '-' "
            f"and start with a letter or digit; got {name!r}",
            field="name",
        )
    return name


def validate_email(email: str | None) -> str | None:
    """A contact address, stripped, or None when none is given; refused unless it has the shape of an
    address (``EMAIL_PATTERN``). Only its syntax is checked: no DNS lookup, no mail sent."""
    if email is None:
        return None
    refuse_nul("email", email)
    email = email.strip()
    if not email:
        return None
    if len(email) > MAX_EMAIL_CHARS or not EMAIL_PATTERN.match(email):
        raise BadInput(
            f"email must be an address like name@example.org (at most {MAX_EMAIL_CHARS} characters); "
            f"got {email!r}",
            field="email",
        )
    return email


def _name_taken(name: str, taken: str | None) -> Conflict:
    if taken is None or taken == name:
        return Conflict(f"an account named {name!r} already exists (whatever its case)", field="name")
    return Conflict(
        f"an account named {taken!r} already exists: names are the same whatever their case", field="name"
    )


def _quota_value(key: str, value: float) -> float | int:
    """A quota value within ``QUOTA_LIMITS``; memory and GPUs are whole numbers."""
    whole = key != "cpu"
    least, limit = QUOTA_MINIMUMS[key], QUOTA_LIMITS[key]
    if isinstance(value, bool) or not least <= value <= limit or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise BadInput(f"quota {key} must be {kind} from {least:g} to {limit:g}; got {value!r}", field=key)
    return int(value) if whole else float(value)


MAX_TOKEN_LABEL = 100  # api_tokens.name


def token_label(name: str) -> str:
    """A token's label, checked: it names the token in ``myTokens`` and ``token revoke-all --name``, so
    an empty one (it was stored as "") or one cut to 100 characters unseen would not be recognised."""
    refuse_nul("name", name)
    label = name.strip()
    if not label:
        raise BadInput("name: a token label must not be empty", field="name")
    if len(label) > MAX_TOKEN_LABEL:
        raise BadInput(f"name: longer than {MAX_TOKEN_LABEL} characters ({len(label)})", field="name")
    return label


class AccountService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, name: str, role: str = Role.REQUESTER, email: str | None = None) -> AccountInfo:
        """Create an account; a taken name is a ``Conflict`` (names are how people share listings), and a
        name is taken whatever its case ("ALICE" when "alice" exists: ``account_name_key``)."""
        name = validate_account_name(name)
        parsed_role = parse_role(role)
        email = validate_email(email)
        try:
            async with self.db.session() as session:
                taken = await session.scalar(
                    select(Account.name).where(Account.name_key == account_name_key(name))
                )
                if taken is not None:
                    raise _name_taken(name, taken)
                row = Account(name=name, name_key=account_name_key(name), role=parsed_role.value, email=email)
                session.add(row)
                await session.flush()
                return AccountInfo.of(row)
        except IntegrityError:  # a concurrent create won the race (the unique name_key says so)
            raise _name_taken(name, None) from None

    async def ensure(self, name: str, role: str = Role.PRODUCER) -> AccountInfo:
        """The account called ``name``, created if missing (seeding and imports are idempotent)."""
        existing = await self.find_by_name(name)
        if existing is not None:
            return existing
        try:
            return await self.create(name, role)
        except Conflict:
            found = await self.find_by_name(name)
            assert found is not None
            return found

    async def system_account(self) -> AccountInfo:
        return await self.ensure(SYSTEM_ACCOUNT_NAME, Role.PRODUCER)

    async def find_by_name(self, name: str) -> AccountInfo | None:
        """The account called ``name``, in any case (names are unique regardless of it)."""
        async with self.db.session() as session:
            row = await session.scalar(select(Account).where(Account.name_key == account_name_key(name)))
            return AccountInfo.of(row) if row else None

    async def get(self, account_id: str) -> AccountInfo:
        async with self.db.session() as session:
            row = await session.get(Account, account_id)
            if row is None:
                raise NotFound(f"no account with id {account_id!r}")
            return AccountInfo.of(row)

    async def resolve(self, name_or_id: str) -> AccountInfo:
        """An account by id or by name, in any case (people share listings by name; APIs pass ids)."""
        async with self.db.session() as session:
            row = await session.get(Account, name_or_id) or await session.scalar(
                select(Account).where(Account.name_key == account_name_key(name_or_id))
            )
            if row is None:
                raise NotFound(f"no account named {name_or_id!r}")
            return AccountInfo.of(row)

    async def set_quota(
        self,
        name_or_id: str,
        cpu: float | None = None,
        memory_mb: int | None = None,
        gpu: int | None = None,
    ) -> AccountInfo:
        """Change what an account's jobs may be allocated (the operator's decision: the CLI calls it).

        Only the given values change. A cpu quota of 0 stops the account's jobs from being allocated at
        all; memory is at least the smallest sandbox a job runs in (``MIN_MEMORY_MB``); gpu is a count of
        devices, and it is the only way an account's jobs ever get a GPU."""
        changes = {
            key: _quota_value(key, value)
            for key, value in (("cpu", cpu), ("memory_mb", memory_mb), ("gpu", gpu))
            if value is not None
        }
        target = await self.resolve(name_or_id)
        async with self.db.session() as session:
            row = await session.get(Account, target.id)
            if row is None:
                raise NotFound(f"no account named {name_or_id!r}")
            for key, value in changes.items():
                setattr(row, f"quota_{key}", value)
            await session.flush()
            return AccountInfo.of(row)

    async def me(self, actor: Actor) -> AccountInfo:
        if actor.is_anonymous:
            raise Unauthenticated("sign in with an API token to see your account")
        assert actor.account_id is not None
        return await self.get(actor.account_id)

    # ------------------------------------------------------------------ tokens

    async def create_token(self, account_id: str, name: str = "default") -> IssuedToken:
        """Issue a token for ``account_id`` (trusted callers: the CLI, or ``issue_token`` after checks)."""
        name = token_label(name)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.db.session() as session:
            if await session.get(Account, account_id) is None:
                raise NotFound(f"no account with id {account_id!r}")
            row = ApiToken(account_id=account_id, token_hash=hash_token(secret), name=name)
            session.add(row)
            await session.flush()
            return IssuedToken(id=row.id, account_id=account_id, name=row.name, secret=secret)

    async def issue_token(
        self, actor: Actor, account: str | None = None, name: str = "default"
    ) -> IssuedToken:
        """A token for the actor's own account, or for any account (a name or id) when the actor is an
        admin."""
        if actor.is_anonymous:
            raise Unauthenticated("sign in to create API tokens")
        target = await self.reachable_account_id(actor, account) if account else actor.account_id
        assert target is not None
        return await self.create_token(target, name)

    async def reachable_account_id(self, actor: Actor | None, account: str) -> str:
        """The id of ``account`` (a name or id) when ``actor`` may manage its tokens: their own, any for
        an admin or the operator (``actor`` None). Anyone else's is NOT_FOUND with the message of a
        missing name, as private listings and other people's tokens are: FORBIDDEN for a real name and
        NOT_FOUND for an unknown one would let any signed-in caller enumerate account names."""
        target = await self.resolve(account)
        if actor is not None and target.id != actor.account_id and not actor.is_admin:
            raise NotFound(f"no account named {account!r}")
        return target.id

    async def revoke_token(self, actor: Actor | None, token_id: str) -> TokenInfo:
        """Revoke a token at once (its owner's, any for an admin; ``actor`` None: the operator, from the
        CLI). Revoking a revoked token changes nothing; someone else's is NOT_FOUND, like a missing one."""
        if actor is not None and actor.is_anonymous:
            raise Unauthenticated("sign in to revoke API tokens")
        async with self.db.session() as session:
            row = await session.get(ApiToken, token_id)
            if row is None or (
                actor is not None and row.account_id != actor.account_id and not actor.is_admin
            ):
                raise NotFound(f"no token with id {token_id!r}")
            row.revoked = True
            return TokenInfo.of(row)

    async def tokens(self, actor: Actor | None, account: str | None = None) -> list[TokenInfo]:
        """An account's tokens, newest first: the actor's own, or ``account``'s (a name or id) for an
        admin or the operator (``actor`` None)."""
        if actor is not None and actor.is_anonymous:
            raise Unauthenticated("sign in to see your API tokens")
        if account is None:
            if actor is None:
                raise BadInput("name the account whose tokens to list", field="account")
            account_id = actor.account_id
        else:
            account_id = await self.reachable_account_id(actor, account)
        async with self.db.session() as session:
            rows = await session.scalars(
                select(ApiToken)
                .where(ApiToken.account_id == account_id)
                .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
            )
            return [TokenInfo.of(row) for row in rows]

    async def revoke_tokens(self, name_or_id: str, name: str | None = None) -> int:
        """Revoke an account's live tokens (those labelled ``name``, or all): the operator's answer to a
        leaked token (trusted callers: the CLI). Returns how many; none to revoke is ``NotFound``."""
        account = await self.resolve(name_or_id)
        async with self.db.session() as session:
            query = select(ApiToken).where(ApiToken.account_id == account.id, ApiToken.revoked.is_(False))
            if name is not None:
                query = query.where(ApiToken.name == name)
            rows = (await session.scalars(query)).all()
            if not rows:
                label = f" named {name!r}" if name is not None else ""
                raise NotFound(f"account {account.name!r} has no live token{label}")
            for row in rows:
                row.revoked = True
            return len(rows)

    async def authenticate(self, secret: str | None) -> Actor:
        """The actor a bearer token stands for; a missing, unknown or revoked token is ``Unauthenticated``."""
        if not secret:
            raise Unauthenticated("an API token is required")
        async with self.db.session() as session:
            found = (
                await session.execute(
                    select(ApiToken, Account)
                    .join(Account, Account.id == ApiToken.account_id)
                    .where(ApiToken.token_hash == hash_token(secret.strip()))
                )
            ).first()
            if found is None:
                raise Unauthenticated("the API token is not valid")
            token, account = found
            if token.revoked:
                raise Unauthenticated("the API token has been revoked")
            actor = Actor(account_id=account.id, role=account.role, name=account.name)
        now = utcnow()
        last = token.last_used_at
        if last is None or as_utc(last) < now - LAST_USED_RESOLUTION:
            await self._note_use(token.id, now)
        return actor

    async def _note_use(self, token_id: str, now: datetime) -> None:
        """Stamp a token's ``last_used_at``, best effort, in a transaction of its own.

        A token's first use in a minute is a write, and on SQLite every writer of the process (running
        jobs' heartbeats and progress, usage, search logs) shares one lock: when it stays taken past the
        busy timeout the write fails with "database is locked". That must not refuse a valid token (the
        request would fail UNAVAILABLE), and a stamp accurate to a minute can wait for the next request.
        """
        try:
            async with self.db.session() as session:
                await session.execute(
                    update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
                )
        except OperationalError:
            logger.warning(
                "could not note the use of token %s; it is noted at its next use", token_id, exc_info=True
            )
