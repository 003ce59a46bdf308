"""Relevance benchmark: ``python -m benchmarks.relevance DIR [--tune]``.

DIR holds ``listings.jsonl`` (the bulk-import format) and ``queries.jsonl`` (``{"query": ..., "relevant":
[listing names]}`` per line). The listings are imported through the catalog into a fresh temporary data
dir; every query then goes through the catalog's search service — the code path of GraphQL
``Query.search`` — and R@1, R@5, R@10 and MRR@10 are printed as ONE JSON line, last.

Before it, in the same run and from the same candidate lists, the baselines: BM25 only, dense only, and
plain reciprocal-rank fusion (k=60, equal weights, no boosts); and how often query understanding puts
the (category, subcategory) of a relevant listing first / among its first three guesses (label
accuracy, the quantity the category boost depends on), over all queries and the even / odd halves; and
the label oracle: MRR@10 when query understanding is replaced by the truth (every label of a relevant
listing at probability 1) at the configured ``category_boost`` and at stronger ones, the ceiling of what
better label inference can buy.

``--tune`` runs the documented tuning procedure before the measurement: a small grid over the
fusion and query-understanding weights, each configuration scored on all queries and on the two halves
of the queries (even / odd position) separately, so that a choice that only wins on one half is visible
as overfitting. The chosen values live in ``ranking/weights.py`` with the figures that justified them.

A ``relevant`` name matches a listing whose name is equal to it, or — for catalogs whose names carry an
owner prefix the requests leave out — whose name's last ``/``-separated part is equal to it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from infra.settings import Settings
from ranking.fusion import reciprocal_rank_fusion
from ranking.query_understanding import Label, QueryUnderstanding, label_of
from ranking.ranker import Ranker
from ranking.types import Interpretation, LabelGuess
from ranking.weights import DEFAULT_WEIGHTS, RankingWeights
from search.types import Hit, IndexedListing, SearchFilters

if TYPE_CHECKING:
    from catalog.app import CatalogApp

CUTOFFS = (1, 5, 10)
TUNE_DEPTHS = (50, 100, 200)
ORACLE_BOOSTS = (0.3, 0.5, 1.0)  # besides the configured category_boost


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    relevant: frozenset[str]


def read_queries(path: Path) -> list[Query]:
    queries = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record.get("query"), str) or not isinstance(record.get("relevant"), list):
                raise SystemExit(f"{path}:{number}: expected 'query' (text) and 'relevant' (list of names)")
            queries.append(Query(record["query"], frozenset(map(str, record["relevant"]))))
    return queries


def name_matcher(relevant: Iterable[str]) -> Callable[[str], bool]:
    """Whether a listing name answers: equal to a relevant name, or its last path part is."""
    wanted = frozenset(relevant)
    return lambda name: name in wanted or name.rsplit("/", 1)[-1] in wanted


@dataclass
class Scores:
    hits_at: dict[int, int]
    reciprocal: float = 0.0
    queries: int = 0

    @classmethod
    def empty(cls) -> Scores:
        return cls({k: 0 for k in CUTOFFS})

    def add(self, ranked_names: Sequence[str], matches: Callable[[str], bool]) -> None:
        self.queries += 1
        first = next((i for i, name in enumerate(ranked_names[: max(CUTOFFS)], 1) if matches(name)), None)
        if first is None:
            return
        self.reciprocal += 1.0 / first
        for k in CUTOFFS:
            self.hits_at[k] += first <= k

    def as_dict(self) -> dict[str, float | int]:
        n = max(self.queries, 1)
        figures: dict[str, float | int] = {f"R@{k}": round(self.hits_at[k] / n, 4) for k in CUTOFFS}
        figures["MRR@10"] = round(self.reciprocal / n, 4)
        figures["queries"] = self.queries
        return figures


@dataclass
class Candidates:
    """One query's retrieval, kept so baselines and tuning re-rank without re-searching."""

    query: Query
    vector: object
    keyword: list[Hit]  # as the search service asks for them: words weighted (``ranking.term_weights``)
    semantic: list[Hit]
    bm25: list[Hit]  # plain BM25, every word counted alike: the baselines

    def cut(self, depth: int) -> Candidates:
        return Candidates(
            self.query, self.vector, self.keyword[:depth], self.semantic[:depth], self.bm25[:depth]
        )


def plain_rrf(candidates: Candidates) -> list[str]:
    """Reciprocal-rank fusion, k=60, equal weights. Its scores tie exactly for listings at the same rank
    in one list only; those ties go to the keyword list's, not to the listing ids an import draws at
    random (by id the baseline moved between 0.275 and 0.280 on hf-dev from run to run; now 0.278 in
    two runs, 0.0001 apart)."""
    fused = reciprocal_rank_fusion({"k": candidates.bm25, "v": candidates.semantic}, {"k": 1, "v": 1}, 60)

    def order(listing_id: str) -> tuple[float, int, int, str]:
        parts = fused[listing_id]
        best = min(parts, key=lambda part: (part.rank, part.source != "k"))
        return -sum(part.value for part in parts), best.rank, best.source != "k", listing_id

    return sorted(fused, key=order)


def ranked_ids(
    ranker: Ranker,
    c: Candidates,
    listings: dict[str, IndexedListing],
    interpretation: Interpretation | None = None,
) -> list[str]:
    """The ranker's first ids for already retrieved candidates, cut to the depth its weights ask for
    (``interpretation`` replaces query understanding's, as the label oracle does)."""
    c = c.cut(ranker.weights.candidate_depth)
    _, results = ranker.rank(
        c.query.text,
        c.vector,  # type: ignore[arg-type]
        c.keyword,
        c.semantic,
        listings,
        interpretation=interpretation,
        limit=max(CUTOFFS),
    )
    return [r.id for r in results]


def relevant_labels(query: Query, listings: dict[str, IndexedListing]) -> set[Label]:
    """The labels of the listings that answer ``query`` (empty when none is in the catalog)."""
    matches = name_matcher(query.relevant)
    return {label_of(listing) for listing in listings.values() if matches(listing.name)}


def oracle_interpretation(labels: Iterable[Label]) -> Interpretation:
    """What query understanding would say if it knew the answer: each label at probability 1."""
    ordered = sorted(labels, key=lambda label: (label[0], label[1] or ""))
    return Interpretation(labels=tuple(LabelGuess(category, sub, 1.0) for category, sub in ordered))


def halves(per_query: Sequence[float]) -> list[float]:
    """Mean over all queries, the even half and the odd half (by position), rounded for printing."""
    parts = (per_query, per_query[0::2], per_query[1::2])
    return [round(sum(part) / max(len(part), 1), 4) for part in parts]


def label_oracle(
    ranker: Ranker,
    runs: Sequence[Candidates],
    listings: dict[str, IndexedListing],
    names: dict[str, str],
    boosts: Iterable[float],
) -> dict[float, list[float]]:
    """MRR@10 [all, even, odd] at each category boost with the true labels given instead of inferred.

    Why: whether better label inference can reach a target at all. If even the truth at the configured
    boost stays below it, the remaining gap is ordering among listings of one label, not inference."""
    truths = [oracle_interpretation(relevant_labels(c.query, listings)) for c in runs]
    figures = {}
    for boost in boosts:
        oracle = Ranker(ranker.understanding, ranker.weights.with_(category_boost=boost))
        per_query = [
            evaluate(partial(ranked_ids, oracle, listings=listings, interpretation=truth), [c], names)
            for c, truth in zip(runs, truths, strict=True)
        ]
        figures[boost] = halves([scores.reciprocal for scores in per_query])
    return figures


def evaluate(
    rank: Callable[[Candidates], list[str]], runs: Sequence[Candidates], names: dict[str, str]
) -> Scores:
    scores = Scores.empty()
    for c in runs:
        scores.add([names[i] for i in rank(c)[: max(CUTOFFS)]], name_matcher(c.query.relevant))
    return scores


async def open_catalog(data_dir: Path, listings_file: Path, longest_query: int = 0) -> CatalogApp:
    """A fresh catalog on ``data_dir`` holding the listings of ``listings_file`` (imported, not copied).

    ``max_query_chars`` is raised to the longest request so that none is refused: the benchmark measures
    ranking, and a long real request is still a request."""
    from catalog.app import CatalogApp

    defaults = Settings(data_dir=data_dir)
    settings = Settings(data_dir=data_dir, max_query_chars=max(defaults.max_query_chars, longest_query))
    app = await CatalogApp.open(settings, migrate=True)
    report = await app.importer.import_file(listings_file)
    print(f"import: {report.summary()}", file=sys.stderr)
    for problem in report.errors[:5]:
        print(f"  {problem}", file=sys.stderr)
    return app


def retrieve(app: CatalogApp, queries: Sequence[Query], depth: int) -> list[Candidates]:
    filters = SearchFilters()
    runs = []
    for query in queries:
        encoding = app.encoder.submit_query(query.text, with_words=True).result()
        word_weights = app.ranker.keyword_word_weights(encoding.word_distances or {})
        bm25 = app.backend.keyword(query.text, filters, depth)
        keyword = app.backend.keyword(query.text, filters, depth, word_weights) if word_weights else bm25
        runs.append(
            Candidates(
                query, encoding.vector, keyword, app.backend.vector(encoding.vector, filters, depth), bm25
            )
        )
    return runs


def all_projections(app: CatalogApp) -> dict[str, IndexedListing]:
    ids = [hit.id for hit in app.backend.filtered(SearchFilters(viewer_is_admin=True), "newest", 10**9)]
    return app.backend.get(ids)


TUNE_GRID: dict[str, list] = {
    "fusion": ["rrf", "score"],
    "rrf_k": [30.0, 60.0],
    "keyword_weight": [0.5, 0.7, 1.0],
    "category_boost": [0.0, 0.05, 0.1, 0.2, 0.3],
    "distinctive_words_boost": [0.0, 0.3, 0.5, 0.7],
    "candidate_depth": list(TUNE_DEPTHS),
}


def tune(
    ranker: Ranker, runs: Sequence[Candidates], listings: dict[str, IndexedListing], names: dict[str, str]
) -> None:
    """The documented grid (``TUNE_GRID``), everything else at ``ranking.weights`` defaults.

    Prints one JSON line per configuration with MRR@10 over all queries and over the even and odd halves
    (a configuration that wins on one half only is noise or overfitting), then the ten best to stderr.
    """
    rows = []
    for values in itertools.product(*TUNE_GRID.values()):
        config = dict(zip(TUNE_GRID, values, strict=True))
        if config["fusion"] == "score" and config["rrf_k"] != TUNE_GRID["rrf_k"][0]:
            continue  # k only matters to RRF
        weights = DEFAULT_WEIGHTS.with_(**config)
        ranker.weights = weights
        ranker.understanding.weights = weights
        per_query = [evaluate(lambda c: ranked_ids(ranker, c, listings), [c], names).reciprocal for c in runs]
        figures = halves(per_query)
        rows.append((figures, config))
        print(json.dumps({"MRR@10": figures[0], "even": figures[1], "odd": figures[2], **config}), flush=True)
    rows.sort(key=lambda row: -row[0][0])
    print("best by all queries (all, even, odd):", file=sys.stderr)
    for figures, config in rows[:10]:
        print(f"  {figures} {config}", file=sys.stderr)


def label_accuracy(
    ranker: Ranker, runs: Sequence[Candidates], listings: dict[str, IndexedListing]
) -> dict[str, list[float]]:
    """Share of queries whose first (first three) inferred labels include a relevant listing's label,
    as [all, even half, odd half]; queries whose relevant listings are not in the catalog count as misses."""
    space = ranker.understanding.space
    hits: dict[str, list[bool]] = {"label@1": [], "label@3": []}
    for c in runs:
        wanted = relevant_labels(c.query, listings)
        scores = ranker.understanding.label_scores(c.vector, c.keyword, c.semantic, listings)  # type: ignore[arg-type]
        guesses = [space.labels[i] for i in sorted(range(len(scores)), key=lambda i: -scores[i])[:3]]
        hits["label@1"].append(bool(guesses) and guesses[0] in wanted)
        hits["label@3"].append(bool(wanted.intersection(guesses)))
    return {name: halves([float(hit) for hit in found]) for name, found in hits.items()}


async def search_service_names(
    app: CatalogApp, queries: Sequence[Query]
) -> tuple[list[list[str]], list[float]]:
    """Each query through ``CatalogApp.search`` as an anonymous requester (GraphQL ``Query.search``'s
    path): the names of the first results, and the time each search took."""
    from catalog.actors import ANONYMOUS
    from catalog.search_service import SearchRequest

    ranked, seconds = [], []
    for query in queries:
        started = time.perf_counter()
        response = await app.search.search(ANONYMOUS, SearchRequest(text=query.text, limit=max(CUTOFFS)))
        seconds.append(time.perf_counter() - started)
        ranked.append([result.listing.name for result in response.results])
    return ranked, seconds


async def run(directory: Path, do_tune: bool, weights: RankingWeights) -> dict[str, float | int]:
    queries = read_queries(directory / "queries.jsonl")
    with tempfile.TemporaryDirectory(prefix="mlrepo-relevance-") as tmp:
        longest = max((len(q.text) for q in queries), default=0)
        app = await open_catalog(Path(tmp), directory / "listings.jsonl", longest)
        try:
            listings = all_projections(app)
            names = {listing_id: listing.name for listing_id, listing in listings.items()}
            runs = retrieve(app, queries, max(TUNE_DEPTHS) if do_tune else weights.candidate_depth)
            if do_tune:
                ranker = Ranker(QueryUnderstanding(app.encoder.encode_documents, weights), weights)
                ranker.understanding.rebuild(listings.values())
                tune(ranker, runs, listings, names)
                runs = [c.cut(weights.candidate_depth) for c in runs]
            baselines = {
                "bm25": lambda c: [h.id for h in c.bm25],
                "dense": lambda c: [h.id for h in c.semantic],
                "rrf": plain_rrf,
            }
            for label, rank in baselines.items():
                print(json.dumps({"baseline": label, **evaluate(rank, runs, names).as_dict()}), flush=True)
            accuracy = label_accuracy(app.ranker, runs, listings)
            print(json.dumps({"query_understanding": "all/even/odd", **accuracy}), flush=True)
            boosts = sorted({weights.category_boost, *ORACLE_BOOSTS})
            for boost, figures in label_oracle(app.ranker, runs, listings, names, boosts).items():
                oracle = {"label_oracle": "all/even/odd", "category_boost": boost, "MRR@10": figures}
                print(json.dumps(oracle), flush=True)
            ranked, seconds = await search_service_names(app, queries)
            seconds.sort()
            print(
                f"search service: {len(seconds)} searches, p50 {1000 * seconds[len(seconds) // 2]:.1f} ms",
                file=sys.stderr,
            )
            scores = Scores.empty()
            for query, found in zip(queries, ranked, strict=True):
                scores.add(found, name_matcher(query.relevant))
            return scores.as_dict()
        finally:
            await app.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="holds listings.jsonl and queries.jsonl")
    parser.add_argument("--tune", action="store_true", help="run the weight grid before the measurement")
    args = parser.parse_args(argv)
    for needed in ("listings.jsonl", "queries.jsonl"):
        if not (args.directory / needed).is_file():
            parser.error(f"{args.directory / needed} does not exist")
    figures = asyncio.run(run(args.directory, args.tune, DEFAULT_WEIGHTS))
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
