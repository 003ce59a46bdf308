"""Distinctive request words: the word sets, their candidate-local weights, and each listing's share."""

from __future__ import annotations

import math
import random
import re
import sys
from dataclasses import replace

import pytest
from ranking_support import listing

from ranking.contrast import (
    NO_DISTINCTIVE_WORDS,
    RequestWords,
    distinctive_words,
    listing_words,
    words,
)
from search.documents import WORD_PATTERN


def test_words_are_lower_cased_runs_of_three_or_more_letters_or_digits() -> None:
    assert words("Detect TUMOURS in x-ray scans, v2 or 3D_CT; naïve café") == {
        "detect", "tumours", "ray", "scans", "naïve", "café",
    }  # fmt: skip
    assert words("") == frozenset()


def test_stop_words_never_count_as_distinctive() -> None:
    assert words("The model for the task, and THIS one with that") == {"model", "task", "one"}
    docs = [
        listing("a", "NLP", "Text Classification", description="Sentiment of the product reviews."),
        listing("b", "NLP", "Text Classification", description="Spam filter for email."),
    ]
    contrast = distinctive_words("classify the sentiment of reviews", docs)
    assert "the" not in contrast.weights and contrast.matched(docs[0]) == ["reviews", "sentiment"]


def test_listing_words_read_the_name_without_owner_labels_tags_and_description() -> None:
    doc = listing(
        "a", "Computer Vision", "Object Detection", name="acme-labs/yolo-shelf-v8",
        tags=("retail",), description="Finds products on supermarket shelves.",
    )  # fmt: skip
    assert listing_words(doc) == {
        "yolo", "shelf", "object", "detection", "retail", "finds", "products", "supermarket", "shelves",
    }  # fmt: skip
    assert "acme" not in listing_words(doc)  # the owner prefix says nothing about what it does
    edited = replace(doc, description="Counts pallets in warehouses.")
    assert {"counts", "pallets"} <= listing_words(edited)
    assert "supermarket" not in listing_words(edited)


def test_the_request_matcher_finds_exactly_the_words_that_tokenizing_would() -> None:
    text = "x-ray_scan: Detect tumours (CT/MRI), tumour-free; 3d_ct 3dct naïve café ct ray"
    wanted = {"ray", "scan", "tumour", "tumours", "3dct", "naïve", "detect", "mri", "free", "xray"}
    assert RequestWords(wanted).found_in(text.lower()) == words(text) & wanted
    assert RequestWords({"age", "image"}).found_in("images, an image of an imaged age") == {"image", "age"}
    assert RequestWords({"age"}).found_in("images of pages") == frozenset()  # substrings only


def test_the_request_matcher_agrees_with_tokenizing_on_random_texts() -> None:
    """Differential check: whole-word matching must never differ from ``words(text) & wanted``."""
    rng = random.Random(7)
    alphabet = "ab1é_- .,/"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        wanted = {"".join(rng.choice("ab1é") for _ in range(rng.randint(3, 4))) for _ in range(6)}
        wanted |= set(list(words(text))[:2])
        assert RequestWords(wanted).found_in(text.lower()) == words(text) & wanted, (text, wanted)


def test_words_shared_by_every_candidate_weigh_less_than_rare_ones() -> None:
    docs = [
        listing("common-1", description="classify images of animals"),
        listing("common-2", description="classify images of vehicles"),
        listing("medical", description="classify medical images"),
    ]
    contrast = distinctive_words("classify medical images please", docs)
    n = len(docs)
    assert contrast.weights == {
        "classify": pytest.approx(math.log((n + 1) / (3 + 0.5))),
        "images": pytest.approx(math.log((n + 1) / (3 + 0.5))),
        "medical": pytest.approx(math.log((n + 1) / (1 + 0.5))),
    }  # "please" is in no candidate, so it weighs nothing and is left out
    assert contrast.share("medical") == pytest.approx(1.0)  # every request word any candidate has
    total = sum(contrast.weights.values())
    common = (contrast.weights["classify"] + contrast.weights["images"]) / total
    assert contrast.share("common-1") == pytest.approx(common)
    assert contrast.share("common-1") < contrast.share("medical")
    assert contrast.share("not-a-candidate") == 0.0
    assert contrast.matched(docs[2]) == ["medical", "classify", "images"]  # most distinctive first


def test_nothing_to_weigh_gives_no_shares() -> None:
    docs = [listing("a", description="translate german")]
    assert distinctive_words("ok", docs) is NO_DISTINCTIVE_WORDS  # no word long enough
    assert distinctive_words("summarize reports", docs) is NO_DISTINCTIVE_WORDS  # no candidate has one
    assert distinctive_words("translate", []) is NO_DISTINCTIVE_WORDS


def test_a_letter_or_digit_is_what_the_word_pattern_reads_as_one_for_every_character() -> None:
    """Whole words are confirmed with ``str.isalnum`` of the neighbouring characters, words are split by
    ``WORD_PATTERN``; the two must agree on every code point or matching and tokenizing drift apart."""
    one = re.compile(WORD_PATTERN.pattern)
    differ = [c for c in range(sys.maxunicode + 1) if (one.fullmatch(chr(c)) is not None) != chr(c).isalnum()]
    assert differ == []
