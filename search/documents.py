"""The text of a listing as search sees it: what is embedded, and how much each text field counts.

One pure function so that indexing, reindexing and relevance tuning all embed exactly the same text: a
listing embedded one way at publish time and another way at reindex time would drift in vector space.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from search.types import IndexedListing

# Bump when ``listing_text`` changes: it is part of the embedding key stored with each listing, so rows
# embedded from the old text are re-encoded at the next load instead of drifting from new ones.
# v2: description first, then the readable name, then labels (hf-dev MRR@10 0.271 -> 0.280).
TEXT_RECIPE_VERSION = 2

# How much a query word found in each text attribute of a listing counts in keyword (BM25) scoring, for
# every backend (query-time boosts: changing them needs no reindex). Equal, because favouring the short
# producer-chosen fields measured worse on the hf-dev relevance set (BM25 alone, MRR@10 all / even / odd
# half): name 2, tags 1.5, subcategories 1.5 -> 0.221 / 0.197 / 0.246; all 1 -> 0.238 / 0.210 / 0.267;
# name 1, tags 0.5 -> 0.241 (best of a small grid, kept out as tuning noise). Model names ("org/bert-base-
# finetuned-x") share words with requests mostly by accident, and BM25 already rewards short fields
# through length normalization. Through the full ranker the change is 0.280 -> 0.283.
# ``documentation`` (a producer's README or model card, keyword-only: it is not embedded) counts less
# than the other fields: a word found only deep in a long README is weaker evidence than the same word
# in the producer's one-paragraph summary, and BM25's length normalization alone does not say so across
# fields. The hf-dev relevance set carries no documentation, so it cannot tune this figure; 0.5 lets a
# word present only there still find the listing without letting README boilerplate (install,
# license, citation sections) outrank descriptions.
TEXT_FIELD_BOOSTS: dict[str, float] = {
    "name": 1.0,
    "tags": 1.0,
    "subcategories": 1.0,
    "category": 1.0,
    "description": 1.0,
    "documentation": 0.5,
}

# How much of a listing's documentation the keyword index holds. Documentation may be 200,000
# characters (``catalog.listing_input``); an index entry that size for every listing would bloat both the
# tantivy postings and the in-memory projections the embedded backend keeps (100k listings x 200 KB =
# 20 GB). 10,000 characters (~1,500 words) hold a model card's overview, intended uses and usage
# sections, where a requester's words are found; what follows is mostly result tables, citations and
# license text. Changing it changes every fingerprint, so indexes are rebuilt at the next load.
DOCUMENTATION_INDEX_CHARS = 10_000

# A word as ranking weighs it and as request word weights name it: a run of letters and digits (the
# keyword backends then analyze each word their own way).
WORD_PATTERN = re.compile(r"[^\W_]+")


def _dedupe(parts: Iterable[str]) -> list[str]:
    """Drop empty and case-insensitively repeated parts (tags often repeat the subcategory)."""
    seen: set[str] = set()
    kept: list[str] = []
    for part in parts:
        cleaned = " ".join(part.split())
        key = cleaned.casefold()
        if cleaned and key not in seen:
            seen.add(key)
            kept.append(cleaned)
    return kept


def listing_text(
    name: str,
    category: str,
    subcategories: Iterable[str] = (),
    tags: Iterable[str] = (),
    description: str = "",
) -> str:
    """The sentence embedded for a listing: description first, then the readable name and the labels.

    Requesters describe a need in sentences, and a producer's description is the part written the same
    way, so it leads: MiniLM truncates long inputs (256 word pieces) and weighs the opening most. On the
    hf-dev relevance set this order measured MRR@10 0.279 against 0.271 for name and labels first.
    The name's path prefix ("org/model") and separators are softened into words because MiniLM reads
    "bert-base-uncased" poorly.
    """
    readable_name = name.rsplit("/", 1)[-1].replace("_", " ").replace("-", " ")
    labels = _dedupe([category, *subcategories, *tags])
    tail = ". ".join(_dedupe([readable_name, ", ".join(labels)]))
    body = " ".join(description.split())
    if not body:
        return tail
    return f"{body} {tail}" if body[-1] in ".!?" else f"{body}. {tail}"


def indexed_documentation(documentation: str) -> str:
    """The part of ``documentation`` that keyword search indexes: at most ``DOCUMENTATION_INDEX_CHARS``,
    cut at a word boundary so that no truncated word becomes a term nobody searches for."""
    if len(documentation) <= DOCUMENTATION_INDEX_CHARS:
        return documentation
    cut = documentation[: DOCUMENTATION_INDEX_CHARS + 1]
    boundary = max(cut.rfind(" "), cut.rfind("\n"), cut.rfind("\t"))
    return cut[:boundary] if boundary > 0 else cut[:DOCUMENTATION_INDEX_CHARS]


def text_of(listing: IndexedListing) -> str:
    """``listing_text`` for a projection."""
    return listing_text(
        listing.name, listing.category, listing.subcategories, listing.tags, listing.description
    )
