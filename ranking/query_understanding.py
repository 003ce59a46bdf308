"""Query understanding: which (category, subcategory), data formats and constraints a request means.

Requesters describe a need ("turn my podcast into a transcript, it must run on a laptop"), not a label.
Three generic signals vote for the catalog's own labels, each cheap at query time:

1. label text: the query vector against an embedding of each label (its name, enriched by a short task
   definition when the name is a well-known task, see ``ranking.taxonomy``);
2. semantic neighbours: the labels of the top vector hits, weighted by how close each hit is to the best;
3. keyword neighbours: the labels of the top keyword hits, weighted by 1/rank.

The votes are mixed with weights tuned on the dev set (``ranking.weights``) and turned into probabilities
by a softmax. The catalog-derived state (labels, their counts and dominant formats, label embeddings) is
rebuilt from the index projections with ``rebuild`` and kept current with ``update``; query-time work is
one small matrix-vector product and a few dictionary look-ups (well under a millisecond).

Constraints come from plain words (English): "real time", "on a CPU", "most accurate". Everything inferred
here is a *soft* preference: the ranker adds bounded boosts and shows the inference in explanations.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ranking.taxonomy import label_text
from ranking.types import Constraints, Interpretation, LabelGuess
from ranking.weights import DEFAULT_WEIGHTS, RankingWeights
from search.blas import single_threaded_blas
from search.types import Hit, IndexedListing

Label = tuple[str, str | None]
EmbedTexts = Callable[[Sequence[str]], np.ndarray]

_FAST = re.compile(
    r"\b(real[- ]?time|low[- ]latency|latency|fast(er|est)?|quick(ly)?|speedy|instant(ly)?|"
    r"light[- ]?weight|on[- ]device|mobile|edge devices?|responsive)\b",
    re.IGNORECASE,
)
_ACCURATE = re.compile(
    r"\b(most accurate|high(est|ly)? accura(te|cy)|accurate|state[- ]of[- ]the[- ]art|best[- ]performing|"
    r"precise|precision)\b",
    re.IGNORECASE,
)
_CPU_ONLY = re.compile(
    r"\b(on (a |the |our |my )?cpus?|cpu[- ]only|without (a |any )?gpus?|no gpus?|laptops?|"
    r"raspberry pi)\b",
    re.IGNORECASE,
)


# A preference's clause ends at punctuation or a conjunction that starts another thought ("I have a GPU
# so no need to run on a CPU": the denial belongs to the "no need to run on a CPU" part only).
_CLAUSE_BREAK = re.compile(
    r"[,.;:!?()]|\b(?:but|so|because|though|although|while|whereas|yet)\b", re.IGNORECASE
)
# A word before a preference that denies it; "no more than 10 ms" bounds a number, it denies nothing.
_DENIAL_BEFORE = re.compile(
    r"\b(?:not|no|never|nor|without|(?:do|does|did|is|are|need|has|have)n'?t|dont|doesnt|isnt)\b"
    r"(?!\s+(?:more|longer|slower|later|worse)\s+than\b)",
    re.IGNORECASE,
)
# What after a preference says it does not count ("latency does not matter").
_DISMISSAL_AFTER = re.compile(
    r"\b(?:(?:does|do|is|are)(?:\s+not|n'?t)\s+(?:matter|important|needed|required|a concern|an issue)|"
    r"matters? not|irrelevant|unimportant)\b",
    re.IGNORECASE,
)


def _stated(preference: re.Pattern[str], text: str) -> bool:
    """Whether ``text`` asks for ``preference`` somewhere without denying it in the same clause: a
    preference read out of "not real time" or "no need to run on a CPU" was shown as inferred and
    ranked by, the opposite of what was asked.

    Each pattern scans the text once and each match is placed among the others by bisection: cutting
    out and searching each match's clause again was quadratic in the text (a search text of "no fast"
    repeated cost 6 ms at 1,000 characters and 2.5 s at 20,000, with ``max_query_chars`` unbounded)."""
    matches = list(preference.finditer(text))
    if not matches:
        return False
    breaks = list(_CLAUSE_BREAK.finditer(text))
    break_starts = [b.start() for b in breaks]
    break_ends = [b.end() for b in breaks]
    denials = list(_DENIAL_BEFORE.finditer(text))
    denial_ends = [d.end() for d in denials]
    dismissals = list(_DISMISSAL_AFTER.finditer(text))
    dismissal_starts = [d.start() for d in dismissals]
    for match in matches:
        start, end = match.span()
        clause_start = (
            break_ends[bisect_right(break_ends, start) - 1] if break_ends and break_ends[0] <= start else 0
        )
        nearest_break = bisect_left(break_starts, end)
        clause_end = break_starts[nearest_break] if nearest_break < len(break_starts) else len(text)
        last_denial = bisect_right(denial_ends, start) - 1
        denied = last_denial >= 0 and denials[last_denial].start() >= clause_start
        first_dismissal = bisect_left(dismissal_starts, end)
        dismissed = first_dismissal < len(dismissals) and dismissals[first_dismissal].end() <= clause_end
        if not denied and not dismissed:
            return True
    return False


def read_constraints(text: str) -> Constraints:
    """Preferences stated in words, not those denied; English only (what the embedding model reads
    best, too)."""
    return Constraints(
        prefers_fast=_stated(_FAST, text),
        prefers_accurate=_stated(_ACCURATE, text),
        cpu_only=_stated(_CPU_ONLY, text),
    )


def label_of(listing: IndexedListing) -> Label:
    """A listing's label: its category and first (primary) subcategory."""
    return (listing.category, listing.subcategories[0] if listing.subcategories else None)


Teaching = tuple[Label, str | None, str | None]  # label, input format, output format


def _teaching(listing: IndexedListing) -> Teaching:
    return (label_of(listing), listing.input_format, listing.output_format)


@dataclass(frozen=True, slots=True)
class LabelSpace:
    """An immutable snapshot of the catalog's labels; swapped whole, so readers never see a half-update."""

    labels: tuple[Label, ...]
    vectors: np.ndarray  # len(labels) x dim, L2-normalized label-text embeddings
    counts: tuple[int, ...]
    input_formats: tuple[str | None, ...]  # the dominant input format of each label's listings, if any
    output_formats: tuple[str | None, ...]
    position: Mapping[Label, int]  # label -> row


EMPTY_SPACE = LabelSpace((), np.zeros((0, 0), dtype=np.float32), (), (), (), {})


def _dominant(formats: Counter[str], count: int) -> str | None:
    """The format most of a label's listings declare, when more than half of them declare it."""
    if not formats or count <= 0:
        return None
    name, seen = formats.most_common(1)[0]
    return name if seen * 2 > count else None


class QueryUnderstanding:
    """Catalog-derived state plus the per-query inference. Thread-safe: writers swap a snapshot."""

    def __init__(self, embed: EmbedTexts, weights: RankingWeights = DEFAULT_WEIGHTS) -> None:
        self._embed = embed
        self.weights = weights
        # What each listing taught, so that an update or removal can take it back; per-label tallies are
        # kept alongside so that a write costs O(labels), never O(catalog).
        self._taught: dict[str, Teaching] = {}
        self._counts: Counter[Label] = Counter()
        self._inputs: dict[Label, Counter[str]] = {}
        self._outputs: dict[Label, Counter[str]] = {}
        self._label_vectors: dict[Label, np.ndarray] = {}  # cache: a label text is embedded once
        self._space = EMPTY_SPACE
        self._lock = threading.Lock()

    @property
    def space(self) -> LabelSpace:
        return self._space

    # ------------------------------------------------------------------ catalog-derived state
    def rebuild(self, listings: Iterable[IndexedListing]) -> None:
        """Forget everything and learn the labels of ``listings`` (all projections in the index)."""
        with self._lock:
            self._taught.clear()
            self._counts.clear()
            self._inputs.clear()
            self._outputs.clear()
            for listing in listings:
                self._teach(listing.id, _teaching(listing))
            self._refresh()

    def update(self, upserted: Iterable[IndexedListing] = (), removed: Iterable[str] = ()) -> None:
        """Follow index writes: new or changed projections, and deleted ids (unknown ids are ignored)."""
        with self._lock:
            for listing_id in removed:
                self._teach(listing_id, None)
            for listing in upserted:
                self._teach(listing.id, _teaching(listing))
            self._refresh()

    def _teach(self, listing_id: str, teaching: Teaching | None) -> None:
        """Replace what ``listing_id`` taught (``None``: forget it) in the per-label tallies."""
        before = self._taught.pop(listing_id, None)
        for sign, taught in ((-1, before), (1, teaching)):
            if taught is None:
                continue
            label, input_format, output_format = taught
            self._counts[label] += sign
            for tallies, value in ((self._inputs, input_format), (self._outputs, output_format)):
                if value:
                    tallies.setdefault(label, Counter())[value] += sign
        if teaching is not None:
            self._taught[listing_id] = teaching

    def learn_label_texts(self, listings: Iterable[IndexedListing]) -> None:
        """Embed the labels of ``listings`` that are not embedded yet, so that ``update`` finds them ready.

        ``update`` follows an index write, which runs inside a database transaction on the event loop:
        embedding a new label there stalled every request of the process for the encode (and, in a fresh
        process, for the model's load: 11-27 s seen under load) while holding the write's locks. Writers
        call this first, off the event loop; the encode runs outside the lock, so searches go on."""
        with self._lock:
            wanted = dict.fromkeys(label_of(listing) for listing in listings)
            missing = [label for label in wanted if label not in self._label_vectors]
        if not missing:
            return
        vectors = self._label_text_vectors(missing)
        with self._lock:
            for label, vector in zip(missing, vectors, strict=True):
                self._label_vectors.setdefault(label, vector)

    def _label_text_vectors(self, labels: Sequence[Label]) -> list[np.ndarray]:
        """Normalized embeddings of the labels' texts (a zero text stays a zero vector)."""
        vectors = np.asarray(self._embed([label_text(*label) for label in labels]), dtype=np.float32)
        norms = [float(np.linalg.norm(vector)) for vector in vectors]
        return [vector / norm if norm > 0 else vector for vector, norm in zip(vectors, norms, strict=True)]

    def _refresh(self) -> None:
        labels = tuple(
            sorted((lb for lb, n in self._counts.items() if n > 0), key=lambda lb: (lb[0], lb[1] or ""))
        )
        missing = [label for label in labels if label not in self._label_vectors]
        if missing:  # at a rebuild; an index write embedded its new labels first (``learn_label_texts``)
            for label, vector in zip(missing, self._label_text_vectors(missing), strict=True):
                self._label_vectors[label] = vector
        matrix = (
            np.stack([self._label_vectors[label] for label in labels])
            if labels
            else np.zeros((0, 0), dtype=np.float32)
        )
        empty: Counter[str] = Counter()
        self._space = LabelSpace(
            labels=labels,
            vectors=matrix,
            counts=tuple(self._counts[label] for label in labels),
            input_formats=tuple(_dominant(self._inputs.get(lb, empty), self._counts[lb]) for lb in labels),
            output_formats=tuple(_dominant(self._outputs.get(lb, empty), self._counts[lb]) for lb in labels),
            position={label: i for i, label in enumerate(labels)},
        )

    # ------------------------------------------------------------------ per query
    def label_scores(
        self,
        query_vector: np.ndarray | None,
        keyword_hits: Sequence[Hit],
        vector_hits: Sequence[Hit],
        listings: Mapping[str, IndexedListing],
        space: LabelSpace | None = None,
    ) -> np.ndarray:
        """Unnormalized evidence for each label of ``space`` (see the module docstring)."""
        space = space or self._space
        w = self.weights
        scores = np.zeros(len(space.labels), dtype=np.float64)
        if not space.labels:
            return scores
        if query_vector is not None and space.vectors.shape[1] == np.asarray(query_vector).shape[-1]:
            # One thread: OpenBLAS's threads spin after a product and slowed the next query encode by
            # ~3 ms (7.4 -> 10.4 ms measured) on two cores; this product is tiny anyway.
            with single_threaded_blas():
                label_similarity = space.vectors @ np.asarray(query_vector, dtype=np.float32)
            scores += w.label_text_weight * label_similarity
        position = space.position
        scores += w.vector_vote_weight * _votes(
            vector_hits[: w.vote_depth],
            listings,
            position,
            lambda hit, best: np.exp((hit.score - best) / w.vote_temperature),
        )
        scores += w.keyword_vote_weight * _votes(
            keyword_hits[: w.vote_depth], listings, position, lambda hit, best: 1.0 / hit.rank
        )
        return scores

    def interpret(
        self,
        text: str,
        query_vector: np.ndarray | None,
        keyword_hits: Sequence[Hit],
        vector_hits: Sequence[Hit],
        listings: Mapping[str, IndexedListing],
    ) -> Interpretation:
        """The soft reading of one request; labels below ``min_label_probability`` are left out."""
        space = self._space
        constraints = read_constraints(text)
        if not space.labels:
            return Interpretation(constraints=constraints)
        scores = self.label_scores(query_vector, keyword_hits, vector_hits, listings, space)
        logits = (scores - scores.max()) / self.weights.label_temperature
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities, kind="stable")[: self.weights.max_labels]
        guesses = tuple(
            LabelGuess(space.labels[i][0], space.labels[i][1], float(probabilities[i]))
            for i in order
            if probabilities[i] >= self.weights.min_label_probability
        )
        top = int(order[0])
        confident = probabilities[top] >= self.weights.format_min_probability
        return Interpretation(
            labels=guesses,
            input_format=space.input_formats[top] if confident else None,
            output_format=space.output_formats[top] if confident else None,
            constraints=constraints,
        )


def _votes(
    hits: Sequence[Hit],
    listings: Mapping[str, IndexedListing],
    position: Mapping[Label, int],
    weigh: Callable[[Hit, float], float],
) -> np.ndarray:
    """Each hit votes for its listing's label; votes sum to 1 (or stay 0 when nothing can vote)."""
    votes = np.zeros(len(position), dtype=np.float64)
    if not hits:
        return votes
    best = hits[0].score
    for hit in hits:
        listing = listings.get(hit.id)
        slot = position.get(label_of(listing)) if listing is not None else None
        if slot is not None:
            votes[slot] += weigh(hit, best)
    total = votes.sum()
    return votes / total if total > 0 else votes
