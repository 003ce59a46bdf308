"""What ranking hands back: scored results whose score is the sum of named, readable parts.

A requester (and a producer wondering why their listing is fifth) must be able to see *why* a result is
where it is, so a score is never a bare number: it is the sum of ``ScorePart`` values, each with a
sentence. The query interpretation travels with the results so that the API can show what was inferred.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ScorePart:
    """One additive contribution to a result's score.

    ``name`` is a stable machine key (``keyword``, ``semantic``, ``category``, ``verified``...),
    ``value`` what it added (negative for a penalty), ``detail`` a sentence for people.
    """

    name: str
    value: float
    detail: str


@dataclass(frozen=True, slots=True)
class LabelGuess:
    """A (category, subcategory) the request probably means, with the probability ranking gave it."""

    category: str
    subcategory: str | None
    probability: float

    @property
    def title(self) -> str:
        return f"{self.category} / {self.subcategory}" if self.subcategory else self.category


@dataclass(frozen=True, slots=True)
class Constraints:
    """Preferences stated in words ("real time", "on a CPU", "most accurate"); used as soft boosts."""

    prefers_fast: bool = False
    prefers_accurate: bool = False
    cpu_only: bool = False

    def describe(self) -> list[str]:
        said = []
        if self.prefers_fast:
            said.append("prefers low latency")
        if self.prefers_accurate:
            said.append("prefers high accuracy")
        if self.cpu_only:
            said.append("must run without a GPU")
        return said


@dataclass(frozen=True, slots=True)
class Interpretation:
    """What the request text was understood to ask for. Everything here is a soft preference."""

    labels: tuple[LabelGuess, ...] = ()
    input_format: str | None = None
    output_format: str | None = None
    constraints: Constraints = field(default_factory=Constraints)

    @property
    def top(self) -> LabelGuess | None:
        return self.labels[0] if self.labels else None

    def probability_of(self, category: str, subcategory: str | None) -> float:
        for guess in self.labels:
            if guess.category == category and guess.subcategory == subcategory:
                return guess.probability
        return 0.0

    def describe(self) -> list[str]:
        """Sentences for the API/CLI: "category inferred: Audio / Text-to-Speech (p=0.62)", ..."""
        said = [f"category inferred: {g.title} (p={g.probability:.2f})" for g in self.labels[:3]]
        if self.input_format:
            said.append(f"input format inferred: {self.input_format}")
        if self.output_format:
            said.append(f"output format inferred: {self.output_format}")
        return said + self.constraints.describe()


@dataclass(frozen=True, slots=True)
class RankedResult:
    """A listing id, its final score and the parts that add up to it (largest first).

    ``reasons``: for a result ranked but not yet explained (``Ranker.rank_in_parts``), the numbers its
    explanation is built from later (``Ranker.explain_reasons``); ``parts`` is empty until then."""

    id: str
    score: float
    parts: tuple[ScorePart, ...]
    reasons: tuple | None = None

    @property
    def explanation(self) -> str:
        return "; ".join(part.detail for part in self.parts)
