"""Who is asking: every catalog service takes an ``Actor`` so access rules are checked in one place."""

from __future__ import annotations

from dataclasses import dataclass

from catalog.enums import Role


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated account, or nobody (``account_id is None``) for anonymous callers.

    Anonymous callers see public listings only and may not write anything.
    """

    account_id: str | None = None
    role: str | None = None
    name: str | None = None

    @classmethod
    def anonymous(cls) -> Actor:
        return cls()

    @property
    def is_anonymous(self) -> bool:
        return self.account_id is None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    @property
    def is_producer(self) -> bool:
        return self.role in (Role.PRODUCER, Role.ADMIN)


ANONYMOUS = Actor.anonymous()
