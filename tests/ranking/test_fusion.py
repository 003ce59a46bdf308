"""Fusion math: RRF and min-max score fusion on the fixed 0..1 scale the boosts rely on."""

from __future__ import annotations

import pytest
from ranking_support import hits

from infra.errors import BadInput
from ranking.fusion import normalized_score_fusion, reciprocal_rank_fusion


def total(fused: dict, listing_id: str) -> float:
    return sum(c.value for c in fused[listing_id])


def test_rrf_first_in_every_list_scores_one() -> None:
    fused = reciprocal_rank_fusion({"k": hits("a", "b"), "v": hits("a", "c")}, {"k": 0.5, "v": 1.0}, 30)
    assert total(fused, "a") == pytest.approx(1.0)


def test_rrf_values_follow_the_formula() -> None:
    k = 60.0
    fused = reciprocal_rank_fusion({"k": hits("a", "b", "c"), "v": hits("c", "a")}, {"k": 1.0, "v": 2.0}, k)
    scale = 3.0 / (k + 1)
    assert total(fused, "b") == pytest.approx((1.0 / (k + 2)) / scale)
    assert total(fused, "c") == pytest.approx((1.0 / (k + 3) + 2.0 / (k + 1)) / scale)
    by_source = {c.source: c for c in fused["a"]}
    assert by_source["k"].rank == 1 and by_source["v"].rank == 2
    assert by_source["v"].value == pytest.approx((2.0 / (k + 2)) / scale)


def test_rrf_ranks_come_from_list_order_not_hit_rank() -> None:
    filtered = hits("x", "y")[1:]  # "y" keeps Hit.rank 2 but is now first
    fused = reciprocal_rank_fusion({"k": filtered}, {"k": 1.0}, 10)
    assert fused["y"][0].rank == 1 and total(fused, "y") == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("weights", "k"),
    [({"k": -1.0, "v": 1.0}, 30), ({"v": 1.0}, 30), ({"k": 0.0, "v": 0.0}, 30), ({"k": 1.0, "v": 1.0}, -1)],
)
def test_rrf_rejects_bad_parameters(weights: dict, k: float) -> None:
    with pytest.raises(BadInput):
        reciprocal_rank_fusion({"k": hits("a"), "v": hits("b")}, weights, k)


def test_score_fusion_min_max_scales_each_list() -> None:
    fused = normalized_score_fusion(
        {"k": hits("a", "b", "c", scores=[12.0, 7.0, 2.0]), "v": hits("b", "a", scores=[0.9, 0.5])},
        {"k": 1.0, "v": 1.0},
    )
    assert total(fused, "b") == pytest.approx((0.5 + 1.0) / 2)
    assert total(fused, "a") == pytest.approx((1.0 + 0.0) / 2)
    assert total(fused, "c") == pytest.approx(0.0)
    assert max(total(fused, i) for i in fused) <= 1.0


def test_score_fusion_equal_scores_get_full_weight_and_empty_lists_nothing() -> None:
    fused = normalized_score_fusion({"k": hits("a", "b", scores=[3.0, 3.0]), "v": []}, {"k": 1.0, "v": 3.0})
    assert total(fused, "a") == pytest.approx(0.25) and total(fused, "b") == pytest.approx(0.25)
