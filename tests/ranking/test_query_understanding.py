"""Query understanding on a small synthetic catalog with the real encoder: labels, formats, constraints,
and the catalog-derived state following index writes."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from catalog_fixture import DETECTION, SPEECH, TRANSLATION, synthetic_catalog
from ranking_support import hits, listing

from ranking import query_understanding
from ranking.query_understanding import QueryUnderstanding, read_constraints
from ranking.taxonomy import label_text, task_description
from search.embeddings import Encoder
from search.types import Hit, IndexedListing


class CountingEmbed:
    """The real encoder, counting how many texts it was asked for (label texts must be embedded once)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.texts: list[str] = []

    def __call__(self, texts):
        self.texts.extend(texts)
        return self.encoder.encode_documents(texts)


@pytest.fixture
def catalog(encoder: Encoder) -> dict[str, IndexedListing]:
    return synthetic_catalog(encoder)


def vector_hits(
    encoder: Encoder, catalog: dict[str, IndexedListing], text: str
) -> tuple[np.ndarray, list[Hit]]:
    query = encoder.encode_query(text)
    scored = sorted(((float(d.embedding @ query), i) for i, d in catalog.items()), reverse=True)
    return query, [Hit(i, s, r) for r, (s, i) in enumerate(scored, start=1)]


@pytest.mark.parametrize(
    ("text", "label", "formats"),
    [
        ("turn recordings of our phone calls into written transcripts", SPEECH, ("audio", "text")),
        ("count the cars visible in each traffic camera picture", DETECTION, ("image", "bounding-boxes")),
        ("render our German user manual in English", TRANSLATION, ("text", "text")),
    ],
)
def test_infers_label_and_formats(encoder: Encoder, catalog, text: str, label, formats) -> None:
    understanding = QueryUnderstanding(encoder.encode_documents)
    understanding.rebuild(catalog.values())
    query, found = vector_hits(encoder, catalog, text)
    interpretation = understanding.interpret(text, query, [], found, catalog)
    top = interpretation.top
    assert top is not None and (top.category, top.subcategory) == label
    assert top.probability > 0.5
    assert (interpretation.input_format, interpretation.output_format) == formats
    assert sum(g.probability for g in interpretation.labels) <= 1.0 + 1e-9
    said = interpretation.describe()
    assert said[0].startswith(f"category inferred: {label[0]} / {label[1]}")


def test_votes_alone_decide_without_a_query_vector(encoder: Encoder, catalog) -> None:
    understanding = QueryUnderstanding(encoder.encode_documents)
    understanding.rebuild(catalog.values())
    interpretation = understanding.interpret(
        "anything", None, hits("tr-2", "tr-1"), hits("tr-1", "det-1"), catalog
    )
    assert interpretation.top is not None and interpretation.top.subcategory == "Translation"


def test_empty_catalog_infers_only_constraints(encoder: Encoder) -> None:
    understanding = QueryUnderstanding(encoder.encode_documents)
    understanding.rebuild([])
    interpretation = understanding.interpret("fast speech recognition", np.ones(384, np.float32), [], [], {})
    assert interpretation.labels == () and interpretation.constraints.prefers_fast


def test_state_follows_updates_and_embeds_each_label_once(encoder: Encoder, catalog) -> None:
    embed = CountingEmbed(encoder)
    understanding = QueryUnderstanding(embed)
    understanding.rebuild(catalog.values())
    assert len(embed.texts) == 3
    space = understanding.space
    assert dict(zip(space.labels, space.counts, strict=True)) == {SPEECH: 2, DETECTION: 2, TRANSLATION: 2}

    moved = replace(
        catalog["det-2"],
        category="Computer Vision",
        subcategories=("Image Classification",),
        output_format="class-label",
    )
    understanding.update([moved], ["tr-1", "tr-2", "never-indexed"])
    space = understanding.space
    counts = dict(zip(space.labels, space.counts, strict=True))
    assert counts == {SPEECH: 2, DETECTION: 1, ("Computer Vision", "Image Classification"): 1}
    assert TRANSLATION not in space.position
    assert embed.texts[3:] == [label_text("Computer Vision", "Image Classification")]

    understanding.update([catalog["tr-1"]])  # a label seen before is not embedded again
    assert len(embed.texts) == 4 and TRANSLATION in understanding.space.position


def test_dominant_format_needs_a_majority(encoder: Encoder) -> None:
    docs = [
        listing("a", "Tabular", "Tabular Regression", input_format="tabular"),
        listing("b", "Tabular", "Tabular Regression", input_format="tabular"),
        listing("c", "Tabular", "Tabular Regression", input_format="text"),
        listing("d", "Tabular", "Tabular Regression"),
        listing("e", "Tabular", "Tabular Regression"),
    ]
    understanding = QueryUnderstanding(encoder.encode_documents)
    understanding.rebuild(docs)
    assert understanding.space.input_formats == (None,)  # 2 of 5 is not a majority
    understanding.update([], ["d", "e"])
    assert understanding.space.input_formats == ("tabular",)


@pytest.mark.parametrize(
    ("text", "fast", "accurate", "cpu"),
    [
        ("real-time object detection on a CPU", True, False, True),
        ("the most accurate sentiment model, no GPU available", False, True, True),
        ("summarize contracts", False, False, False),
        ("a lightweight model for our laptop", True, False, True),
        # A preference the request denies is not stated (it was read, shown as inferred, and penalised
        # GPU listings for a requester who said they have one).
        ("object detector, I have a GPU so no need to run on a CPU", False, False, False),
        ("object detector, not real time", False, False, False),
        ("translation that does not have to be fast or accurate", False, False, False),
        ("latency does not matter, the most accurate one", False, True, False),
        ("no latency requirement but it must run on a CPU", False, False, True),
        ("not on a GPU: on a CPU, real-time", True, False, True),
        ("no GPU, not real time", False, False, True),
    ],
)
def test_constraints_from_words(text: str, fast: bool, accurate: bool, cpu: bool) -> None:
    said = read_constraints(text)
    assert (said.prefers_fast, said.prefers_accurate, said.cpu_only) == (fast, accurate, cpu)


class ScanCounter:
    """A compiled pattern that counts the characters its scans are handed; what they find is unchanged."""

    def __init__(self, pattern: re.Pattern[str], scanned: list[int]) -> None:
        self.pattern = pattern
        self.scanned = scanned

    def __getattr__(self, name: str):
        method = getattr(self.pattern, name)

        def counted(string: str, *args, **kwargs):
            self.scanned[0] += len(string)
            return method(string, *args, **kwargs)

        return counted


def test_reading_constraints_scans_the_text_a_bounded_number_of_times(monkeypatch) -> None:
    """Each denied preference cut its clause out of the text and searched it again, so the work grew
    with the square of the text: "no fast" repeated over 1,000 characters (max_query_chars) cost 6 ms,
    over 20,000 (the setting has no upper bound) 2.5 s of one request. Now each pattern scans it once."""
    scanned = [0]
    for name in ("_FAST", "_ACCURATE", "_CPU_ONLY", "_CLAUSE_BREAK", "_DENIAL_BEFORE", "_DISMISSAL_AFTER"):
        monkeypatch.setattr(
            query_understanding, name, ScanCounter(getattr(query_understanding, name), scanned)
        )
    text = ("no fast, not precise without a gpu " * 600)[:20_000]
    said = read_constraints(text)
    assert (said.prefers_fast, said.prefers_accurate, said.cpu_only) == (False, False, False)  # all denied
    assert scanned[0] <= 12 * len(text)


def test_taxonomy_matches_label_spellings() -> None:
    assert task_description("text to speech") == task_description("Text-to-Speech") is not None
    assert task_description("Document Question Answer") == task_description("Document Question Answering")
    assert task_description("Quantum Flux Capacitance") is None
    assert label_text("Quantum", "Flux") == "Flux (Quantum)"
    assert label_text("Audio", "Text-to-Speech").startswith("Text-to-Speech (Audio): Synthesize")
