"""What the facet filters mean, in one place, for every backend.

Each backend translates ``SearchFilters`` into its own terms (a numpy mask, tantivy clauses, OpenSearch
``filter`` clauses); the rules they must all agree on live here so they cannot drift apart:

- ``kinds``: the listing's kind is one of them; ``None`` or an empty tuple means any kind.
- ``category``, ``input_format``, ``output_format``: exact equality; ``subcategory``: one of the listing's.
- ``max_latency_ms`` / ``min_accuracy``: the listing must *state* a latency / accuracy within the bound
  (an unknown value cannot be promised to a requester).
- ``cpu`` / ``memory_mb`` / ``gpu`` (the requester's hardware): the listing's suggested requirement is at
  most that; a listing that states no requirement fits.
- ``verified_only``: verification status is ``verified``.
- visibility: admins see everything; everyone sees public listings; the owner sees their private and
  shared listings; accounts named in ``shared_with`` see *shared* listings (not private ones).
- suspended listings (status or verification ``suspended``) are hidden unless ``include_suspended``.
"""

from __future__ import annotations

import math

from infra.errors import BadInput
from search.types import IndexedListing, SearchFilters

PUBLIC = "public"
SHARED = "shared"
SUSPENDED = "suspended"
VERIFIED = "verified"
# The reader token of public listings: never a valid account id, so it cannot collide with one.
PUBLIC_READER = ":public"


def validate_filters(filters: SearchFilters) -> None:
    """Reject numbers no listing could be compared with; a bad facet is the caller's error, not a 500."""
    for name in ("max_latency_ms", "min_accuracy", "cpu", "memory_mb", "gpu"):
        value = getattr(filters, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise BadInput(f"filter {name} must be a finite number, got {value!r}", field=name)
        if value < 0:
            raise BadInput(f"filter {name} must not be negative, got {value!r}", field=name)


def is_hidden(doc: IndexedListing) -> bool:
    """Suspended listings disappear from search until an admin reinstates them."""
    return doc.status == SUSPENDED or doc.verification_status == SUSPENDED


def readers_of(doc: IndexedListing) -> tuple[str, ...]:
    """Who may see ``doc`` besides admins: the public marker or account ids (owner, shared-with)."""
    readers: list[str] = []
    if doc.visibility == PUBLIC:
        readers.append(PUBLIC_READER)
    if doc.owner_id:
        readers.append(doc.owner_id)
    if doc.visibility == SHARED:
        readers.extend(doc.shared_with)
    return tuple(dict.fromkeys(readers))


def viewer_readers(filters: SearchFilters) -> tuple[str, ...] | None:
    """The reader tokens a viewer matches; ``None`` for admins, who are not restricted."""
    if filters.viewer_is_admin:
        return None
    return (PUBLIC_READER, filters.viewer_id) if filters.viewer_id else (PUBLIC_READER,)


def wanted_kinds(filters: SearchFilters) -> tuple[str, ...] | None:
    """``None`` when any kind is acceptable (an empty selection is read as "no kind filter")."""
    return filters.kinds or None
