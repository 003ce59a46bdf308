"""Results ranked but not explained yet, as flat columns of numbers: cheap to keep, exact to explain later.

A search keeps every candidate it ranked for its later pages (``catalog.search_snapshots``), but only the
first page is explained at once. What the explanation of a later candidate is built from
(``Ranker.explain_reasons``) is a handful of numbers per candidate: each candidate list's contribution
(value, rank, raw score), its share of the request's distinctive words, and which of those words it
contains. Kept as ``RankedResult.reasons`` tuples and stored as JSON, those cost the snapshot writer
about 1.2-1.5 ms of CPU per search at 10k-100k listings (mostly building tuples and printing floats),
which set the p95 of search (``docs/latency-experiments.md``). Here they are float64 columns —
contributions flattened, each candidate's words as the index of its set of the request's words (few
distinct sets per request) — packed as raw bytes beside a small JSON of the strings (ids, source names,
words, word sets), so gathering and packing are a few array copies, and a later page builds the
``reasons`` of its own results only (``result``). Every number round-trips exactly (float64 holds the
ranks and indices exactly too), so a later page explains a result exactly as the first page would have.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from ranking.contrast import DistinctiveWords
from ranking.fusion import Contribution
from ranking.types import RankedResult

MAGIC = b"mlrP1"  # opens a packed PendingResults (never the first bytes of a zlib stream: 0x78...)
_HEADER = struct.Struct("<I")  # the length of the JSON of strings that follows the magic
PER_RESULT = 4  # score, share, end of its contributions, index of its word set
PER_CONTRIBUTION = 4  # source index, value, rank, raw score
_NO_WORDS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PendingResults:
    """Ranked results (in order) whose explanations are still to be built.

    ``per_result`` row k: score, distinctive-word share, the end (exclusive, cumulative) of result k's
    rows in ``contributions``, and the index of its entry in ``word_sets``; ``contributions`` rows:
    index into ``sources``, value, rank, raw score, in the order fusion gave them; ``word_sets``: sorted
    indices into ``words`` (sorted), whose weights are ``word_weights``; set 0 is the empty one."""

    ids: list[str]
    per_result: np.ndarray  # float64 (n, PER_RESULT)
    sources: list[str]
    contributions: np.ndarray  # float64 (m, PER_CONTRIBUTION)
    words: list[str]
    word_weights: np.ndarray  # float64 (len(words),)
    word_sets: list[list[int]]

    def __len__(self) -> int:
        return len(self.ids)

    def results(self, start: int, end: int) -> list[RankedResult]:
        """Results ``start`` to ``end`` (clipped), each with its ``reasons`` and no parts yet."""
        return [self.result(k) for k in range(max(start, 0), min(end, len(self.ids)))]

    def result(self, k: int) -> RankedResult:
        score, share, contributions_end, word_set = self.per_result[k].tolist()
        contributions_start = int(self.per_result[k - 1, 2]) if k else 0
        rows = self.contributions[contributions_start : int(contributions_end)].tolist()
        contributions = tuple(
            (self.sources[int(source)], value, int(rank), raw) for source, value, rank, raw in rows
        )
        weights = self.word_weights.tolist()
        words = tuple((self.words[i], weights[i]) for i in self.word_sets[int(word_set)])
        return RankedResult(self.ids[k], score, (), (contributions, share, words))

    def pack(self) -> bytes:
        """The bytes ``unpack`` reads back (``MAGIC``, the strings as JSON, then the float64 columns)."""
        strings = {
            "ids": self.ids,
            "sources": self.sources,
            "words": self.words,
            "word_sets": self.word_sets,
            "contributions": len(self.contributions),
        }
        head = json.dumps(strings, separators=(",", ":")).encode()
        columns = (self.per_result, self.contributions, self.word_weights)
        return b"".join((MAGIC, _HEADER.pack(len(head)), head, *(c.astype("<f8").tobytes() for c in columns)))


def is_packed(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def unpack(blob: bytes) -> PendingResults:
    """What ``PendingResults.pack`` wrote (ValueError when the bytes are not that: a damaged row)."""
    try:
        if not is_packed(blob):
            raise ValueError("no magic")
        start = len(MAGIC) + _HEADER.size
        (head_size,) = _HEADER.unpack_from(blob, len(MAGIC))
        strings = json.loads(blob[start : start + head_size])
        ids, words, contribution_count = strings["ids"], strings["words"], strings["contributions"]
        numbers = np.frombuffer(blob, dtype="<f8", offset=start + head_size)
        sizes = (len(ids) * PER_RESULT, contribution_count * PER_CONTRIBUTION, len(words))
        if len(numbers) != sum(sizes):
            raise ValueError("columns do not match their counts")
        result_end, contribution_end = sizes[0], sizes[0] + sizes[1]
        return PendingResults(
            ids=ids,
            per_result=numbers[:result_end].reshape(len(ids), PER_RESULT),
            sources=strings["sources"],
            contributions=numbers[result_end:contribution_end].reshape(contribution_count, PER_CONTRIBUTION),
            words=words,
            word_weights=numbers[contribution_end:],
            word_sets=strings["word_sets"],
        )
    except (ValueError, TypeError, KeyError, struct.error) as exc:
        raise ValueError(f"not packed pending results: {exc}") from None


_VALUE, _RANK, _RAW_SCORE = attrgetter("value"), attrgetter("rank"), attrgetter("raw_score")


def pending_results(
    chosen: Sequence[tuple[float, str]],
    fused: Mapping[str, Sequence[Contribution]],
    contrast: DistinctiveWords,
) -> PendingResults:
    """The columns of ``chosen`` ((-score, id) in rank order) with their contributions and words.

    Python touches each candidate and contribution once per column, in ``np.fromiter`` (no tuples)."""
    n = len(chosen)
    ids = [listing_id for _, listing_id in chosen]
    given = [fused[listing_id] for listing_id in ids]
    flat = [c for contributions in given for c in contributions]
    m = len(flat)
    sources = list(dict.fromkeys(c.source for c in flat))
    source_index = {source: float(i) for i, source in enumerate(sources)}
    words = sorted(contrast.weights)
    word_index = {word: i for i, word in enumerate(words)}
    sets: dict[frozenset[str], int] = {_NO_WORDS: 0}
    found, shares = contrast.found, contrast.shares
    set_of = [sets.setdefault(found.get(listing_id, _NO_WORDS), len(sets)) for listing_id in ids]
    per_result = np.empty((n, PER_RESULT))
    per_result[:, 0] = np.fromiter((-negative for negative, _ in chosen), np.float64, n)
    per_result[:, 1] = np.fromiter((shares.get(listing_id, 0.0) for listing_id in ids), np.float64, n)
    per_result[:, 2] = np.cumsum(np.fromiter(map(len, given), np.float64, n))
    per_result[:, 3] = set_of
    table = np.empty((m, PER_CONTRIBUTION))
    table[:, 0] = np.fromiter((source_index[c.source] for c in flat), np.float64, m)
    for column, field in enumerate((_VALUE, _RANK, _RAW_SCORE), start=1):
        table[:, column] = np.fromiter(map(field, flat), np.float64, m)
    return PendingResults(
        ids=ids,
        per_result=per_result,
        sources=sources,
        contributions=table,
        words=words,
        word_weights=np.fromiter((contrast.weights[w] for w in words), np.float64, len(words)),
        word_sets=[sorted(word_index[w] for w in present) for present in sets],
    )
