"""An in-memory stand-in for the few OpenSearch requests ``OpenSearchBackend.load`` and its writes send.

OpenSearch cannot be obtained on the build machines (no Docker Hub, no package), so the backend's
*decisions* — when to rebuild, which index the alias serves, what each document holds — are checked
against this, and its queries against a real server in ``test_opensearch_live.py`` where one is given.
It answers index management, ``count``, ``bulk`` (index and delete actions), ``mget`` and the digest
aggregation ``load`` sends (``search`` with nothing else); ``meta`` holds each index's mapping ``_meta``.
``refuse(id, *statuses)`` fails single bulk items; ``fail_next(name)`` makes the next such request
(``bulk``, ``mget``, ``delete`` of an index, ``swap`` of the alias) fail as an unreachable server does.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any


class _Indices:
    def __init__(self, cluster: InMemoryCluster) -> None:
        self.cluster = cluster

    def put_index_template(self, name: str, body: dict) -> None:
        self.cluster.requests.append(("template", name))

    def get_alias(self, name: str) -> dict:
        from opensearchpy.exceptions import NotFoundError

        behind = {index: {} for index, alias in self.cluster.aliases.items() if alias == name}
        if not behind:
            raise NotFoundError(404, "alias missing", {})
        return behind

    def create(self, index: str, body: dict) -> None:
        self.cluster.requests.append(("create", index))
        self.cluster.docs[index] = {}
        self.cluster.meta[index] = body["mappings"].get("_meta", {})

    def get(self, index: str, allow_no_indices: bool) -> dict:
        return {
            name: {
                "aliases": {self.cluster.aliases[name]: {}} if name in self.cluster.aliases else {},
                "mappings": {"_meta": self.cluster.meta[name]},
            }
            for name in self.cluster.docs
            if fnmatch.fnmatchcase(name, index)
        }

    def get_mapping(self, index: str) -> dict:
        return {index: {"mappings": {"_meta": self.cluster.meta[index]}}}

    def put_mapping(self, index: str, body: dict) -> None:
        self.cluster.meta[index] = body["_meta"]

    def update_aliases(self, body: dict) -> None:
        self.cluster._answer("swap")
        self.cluster.requests.append(("swap", body["actions"][-1]["add"]["index"]))
        for action in body["actions"]:
            ((op, target),) = action.items()
            if op == "remove":
                self.cluster.aliases.pop(target["index"], None)
            else:
                self.cluster.aliases[target["index"]] = target["alias"]

    def delete(self, index: str, ignore: list[int] | None = None) -> None:
        from opensearchpy.exceptions import NotFoundError

        self.cluster._answer("delete")
        self.cluster.requests.append(("delete", index))
        if index not in self.cluster.docs and 404 not in (ignore or []):
            raise NotFoundError(404, "index_not_found_exception", {})
        self.cluster.docs.pop(index, None)
        self.cluster.meta.pop(index, None)

    def refresh(self, index: str) -> None:
        pass


class InMemoryCluster:
    """Just enough of ``opensearchpy.OpenSearch`` for ``OpenSearchBackend(cluster, alias, dim)``."""

    def __init__(self) -> None:
        from opensearchpy.serializer import JSONSerializer

        self.transport = type("Transport", (), {"serializer": JSONSerializer()})()
        self.indices = _Indices(self)
        self.aliases: dict[str, str] = {}  # physical index -> alias
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}  # physical index -> id -> _source
        self.meta: dict[str, dict[str, Any]] = {}  # physical index -> its mapping's _meta
        self.requests: list[tuple[str, str]] = []
        self._failing: set[str] = set()
        self.bulk_params: list[dict[str, object]] = []  # the query parameters of each bulk request
        self._refused: dict[str, list[int]] = {}  # listing id -> statuses of its next bulk items

    def refuse(self, listing_id: str, *statuses: int) -> None:
        """Answer the next bulk actions on ``listing_id`` with these item statuses (429: throttled, 400:
        a document the mapping rejects), as a server answers a partly failed bulk request."""
        self._refused.setdefault(listing_id, []).extend(statuses)

    def fail_next(self, request: str) -> None:
        self._failing.add(request)

    def _answer(self, request: str) -> None:
        from opensearchpy.exceptions import ConnectionError

        if request in self._failing:
            self._failing.discard(request)
            raise ConnectionError("N/A", f"{request} failed: connection refused", None)

    def _physical(self, name: str) -> str:
        return next((index for index, alias in self.aliases.items() if alias == name), name)

    def served(self, alias: str) -> dict[str, dict[str, Any]]:
        """The documents ``alias`` serves, by id."""
        return self.docs[self._physical(alias)]

    def count(self, index: str, body: dict) -> dict:
        return {"count": len(self.docs[self._physical(index)])}

    def search(self, index: str, body: dict) -> dict:
        """Only ``opensearch_queries.digest_query``: the document count and the sum of fingerprints."""
        assert body["size"] == 0 and set(body["aggs"]) == {"fingerprints"}, "only the digest is answered"
        docs = self.docs[self._physical(index)].values()
        total = float(sum(doc.get("fingerprint", 0) for doc in docs))
        return {"hits": {"total": {"value": len(docs)}}, "aggregations": {"fingerprints": {"value": total}}}

    def mget(self, index: str, body: dict, _source_excludes: str | None = None) -> dict:
        self._answer("mget")
        self.requests.append(("mget", _source_excludes or ""))
        docs = self.docs[self._physical(index)]
        excluded = set((_source_excludes or "").split(","))
        return {
            "docs": [
                {"_id": i, "found": True, "_source": {k: v for k, v in docs[i].items() if k not in excluded}}
                if i in docs
                else {"_id": i, "found": False}
                for i in body["ids"]
            ]
        }

    def bulk(self, body: str, **params: object) -> dict:
        self._answer("bulk")
        self.bulk_params.append(params)
        lines = [json.loads(line) for line in body.splitlines() if line]
        items = []
        while lines:
            ((op, meta),) = lines.pop(0).items()
            docs = self.docs[self._physical(meta["_index"])]
            refusals = self._refused.get(meta["_id"])
            if refusals:  # the server refuses this document (the source line is consumed unread)
                status = refusals.pop(0)
                if op != "delete":
                    lines.pop(0)
            elif op == "delete":
                status = 200 if docs.pop(meta["_id"], None) is not None else 404
            else:
                docs[meta["_id"]], status = lines.pop(0), 200
            items.append({op: {"_id": meta["_id"], "status": status}})
        return {"errors": any(item[op]["status"] >= 300 for item in items for op in item), "items": items}

    def close(self) -> None:
        pass


def filter_matches(clause: dict[str, Any], source: dict[str, Any]) -> bool:
    """Whether a document ``_source`` passes one clause of ``opensearch_queries.filter_clauses``, read as
    OpenSearch reads it: a term matches any value of a multi-valued field, a range never matches a missing
    value, ``exists`` is false for a null or empty field. Only the clause forms those filters use."""
    ((kind, body),) = clause.items()
    if kind == "bool":
        excluded = "must_not" in body and filter_matches(body["must_not"], source)
        should = sum(filter_matches(c, source) for c in body.get("should", []))
        filters = all(filter_matches(c, source) for c in body.get("filter", []))
        return filters and not excluded and should >= body.get("minimum_should_match", 0)
    if kind == "exists":
        return source.get(body["field"]) not in (None, [])
    ((field, wanted),) = body.items()
    value = source.get(field)
    values = value if isinstance(value, list) else [value]
    if kind == "term":
        return wanted in values
    if kind == "terms":
        return any(v in wanted for v in values)
    if kind == "range":
        bounds = {"lte": lambda v, b: v <= b, "gte": lambda v, b: v >= b}
        return any(v is not None and all(bounds[op](v, b) for op, b in wanted.items()) for v in values)
    raise AssertionError(f"a clause filter_clauses does not make: {clause}")
