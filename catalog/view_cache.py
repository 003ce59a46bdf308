"""Recently served listings, kept only while they match the version the index holds.

Search results must come back as full listings (documentation, schemas, examples), which the index does
not hold; reading them from the database costs a round trip per search — more than the rest of the
search after encoding. An entry is used only when its ``updated_at`` equals the row version the index
was last given (``ListingIndex.version_of``), so a hit is exactly as fresh as the index itself — and no
fresher: a listing another process made private, suspended or deleted is still served from here (and
re-checked against its *cached* visibility) until ``ListingIndex.sync`` brings in the new row version
(≤ 1 s) or notices the deletion (≤ 10 s).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

from catalog.listing_view import ListingView

DEFAULT_SIZE = 10_000


class ViewCache:
    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[str, ListingView] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, listing_id: str, version: datetime | None) -> ListingView | None:
        if version is None:
            return None
        with self._lock:
            view = self._items.get(listing_id)
            if view is None or view.updated_at != version:
                return None
            self._items.move_to_end(listing_id)
            return view

    def put(self, views: list[ListingView]) -> None:
        if self.size <= 0:
            return
        with self._lock:
            for view in views:
                self._items[view.id] = view
                self._items.move_to_end(view.id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
