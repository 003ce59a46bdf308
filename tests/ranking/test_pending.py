"""Results kept unexplained as columns (``ranking.pending``): every number comes back exactly, as held and
after packing, whatever a candidate's contributions and words; damaged bytes are refused."""

from __future__ import annotations

import pytest

from ranking.contrast import NO_DISTINCTIVE_WORDS, DistinctiveWords
from ranking.fusion import Contribution
from ranking.pending import pending_results, unpack

FUSED = {
    "both": [Contribution("keyword", 0.61, 1, 12.345678901234567), Contribution("vector", 0.3, 2, 0.8123)],
    "vector-only": [Contribution("vector", 0.1 + 0.2, 7, 0.5)],
    "keyword-only": [Contribution("keyword", 1 / 3, 3, 7.0)],
    "twice": [Contribution("keyword", 0.2, 4, 5.0), Contribution("keyword", 0.1, 9, 1.0)],
}
CONTRAST = DistinctiveWords(
    weights={"medical": 1.7, "dictation": 0.9, "speech": 0.05},
    shares={"both": 0.95, "keyword-only": 1 / 7},
    found={"both": frozenset({"medical", "dictation"}), "keyword-only": frozenset({"speech"})},
)
CHOSEN = [(-1.2, "both"), (-0.9, "keyword-only"), (-0.30000000000000004, "vector-only"), (-0.3, "twice")]


def reasons_as_ranking_keeps_them(listing_id: str, contrast: DistinctiveWords) -> tuple:
    """What ``Ranker.explain_reasons`` reads: contributions in fusion's order, share, sorted words."""
    found = contrast.found.get(listing_id, frozenset())
    return (
        tuple((c.source, c.value, c.rank, c.raw_score) for c in FUSED[listing_id]),
        contrast.share(listing_id),
        tuple((word, contrast.weights[word]) for word in sorted(found)),
    )


@pytest.mark.parametrize("contrast", [CONTRAST, NO_DISTINCTIVE_WORDS])
def test_every_number_comes_back_exactly_as_held_and_packed(contrast: DistinctiveWords) -> None:
    columns = pending_results(CHOSEN, FUSED, contrast)
    for kept in (columns, unpack(columns.pack())):
        assert len(kept) == len(CHOSEN)
        results = kept.results(0, len(kept))
        assert [(r.id, r.score, r.parts) for r in results] == [(i, -neg, ()) for neg, i in CHOSEN]
        assert [r.reasons for r in results] == [reasons_as_ranking_keeps_them(i, contrast) for _, i in CHOSEN]
        assert [type(n) for n in results[0].reasons[0][0]] == [str, float, int, float]
        assert kept.results(2, 99) == results[2:] and kept.results(-1, 1) == results[:1]


def test_nothing_pending_packs_and_unpacks() -> None:
    empty = unpack(pending_results([], {}, NO_DISTINCTIVE_WORDS).pack())
    assert len(empty) == 0 and empty.results(0, 10) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: b"x" + blob,  # not the format
        lambda blob: blob[:-8],  # a column cut short
        lambda blob: blob[:12],  # the strings cut short
    ],
)
def test_damaged_bytes_are_refused(damage) -> None:
    blob = pending_results(CHOSEN, FUSED, CONTRAST).pack()
    with pytest.raises(ValueError, match="not packed pending results"):
        unpack(damage(blob))
