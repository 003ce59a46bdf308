"""Quality signals: each term as specified, stated preferences, and the cap that keeps them small."""

from __future__ import annotations

import itertools

import pytest
from ranking_support import listing

from ranking.signals import quality_parts, quality_score
from ranking.types import Constraints
from ranking.weights import DEFAULT_WEIGHTS

W = DEFAULT_WEIGHTS
NONE = Constraints()


def parts_by_name(doc, constraints=NONE, weights=W) -> dict:
    return {p.name: p for p in quality_parts(doc, constraints, weights)}


def test_unmeasured_listing_gets_nothing() -> None:
    assert quality_parts(listing("a"), NONE, W) == []
    assert quality_score(listing("a"), NONE, W) == 0.0


def test_each_signal_contributes_its_term() -> None:
    weights = W.with_(quality_cap=1.0)
    doc = listing("a", relative_usage=0.5, accuracy=0.8, latency_p50_ms=100.0, verification_status="verified")
    parts = parts_by_name(doc, weights=weights)
    assert parts["usage"].value == pytest.approx(weights.usage_boost * 0.5)
    assert parts["accuracy"].value == pytest.approx(weights.accuracy_boost * 0.8)
    speed = weights.latency_reference_ms / (weights.latency_reference_ms + 100.0)
    assert parts["latency"].value == pytest.approx(weights.latency_boost * speed)
    assert parts["verified"].value == pytest.approx(weights.verified_boost)
    assert "accuracy 0.8" in parts["accuracy"].detail and "100 ms" in parts["latency"].detail
    assert "50%" in parts["usage"].detail


def test_penalties_for_failed_verification_and_gpu_when_cpu_only() -> None:
    doc = listing("a", verification_status="failed", gpu=1)
    parts = parts_by_name(doc, Constraints(cpu_only=True), W.with_(quality_cap=1.0))
    assert parts["verification_failed"].value < 0 and parts["needs_gpu"].value < 0
    assert "CPU only" in parts["needs_gpu"].detail
    assert "needs_gpu" not in parts_by_name(doc)  # without the stated constraint a GPU is no fault


def test_stated_preferences_scale_accuracy_and_latency() -> None:
    weights = W.with_(quality_cap=1.0)
    doc = listing("a", accuracy=0.9, latency_p50_ms=20.0)
    plain = parts_by_name(doc, weights=weights)
    asked = parts_by_name(doc, Constraints(prefers_fast=True, prefers_accurate=True), weights)
    factor = weights.stated_preference_factor
    assert asked["accuracy"].value == pytest.approx(plain["accuracy"].value * factor)
    assert asked["latency"].value == pytest.approx(plain["latency"].value * factor)


def test_out_of_range_values_are_clipped() -> None:
    parts = parts_by_name(listing("a", relative_usage=7.0, accuracy=1.5), weights=W.with_(quality_cap=1.0))
    assert parts["usage"].value == pytest.approx(W.usage_boost)
    assert parts["accuracy"].value == pytest.approx(W.accuracy_boost)


def test_sum_never_exceeds_the_cap_and_says_so() -> None:
    weights = W.with_(usage_boost=0.05, accuracy_boost=0.05, verified_boost=0.05, quality_cap=0.04)
    doc = listing("a", relative_usage=1.0, accuracy=1.0, latency_p50_ms=0.0, verification_status="verified")
    parts = quality_parts(doc, Constraints(prefers_accurate=True), weights)
    assert sum(p.value for p in parts) == pytest.approx(0.04)
    assert all("capped" in p.detail for p in parts)


@pytest.mark.parametrize(
    ("usage", "accuracy", "latency", "status", "gpu", "constraints"),
    list(
        itertools.product(
            [0.0, 1.0],
            [None, 1.0],
            [None, 0.0, 5000.0],
            ["unverified", "verified", "failed"],
            [None, 4],
            [NONE, Constraints(True, True, True)],
        )
    ),
)
def test_quality_is_bounded_and_matches_its_parts(usage, accuracy, latency, status, gpu, constraints) -> None:
    doc = listing(
        "a",
        relative_usage=usage,
        accuracy=accuracy,
        latency_p50_ms=latency,
        verification_status=status,
        gpu=gpu,
    )
    score = quality_score(doc, constraints, W)
    assert abs(score) <= W.quality_cap + 1e-12
    assert score == pytest.approx(sum(p.value for p in quality_parts(doc, constraints, W)))
