"""Whether a converted model is still the model: score differences, the drop in points, the gate, and timing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunewise.evaluation.parity import max_abs_difference, metric_drop, points, quality_gate
from tunewise.evaluation.speed import latency_ms, throughput


def test_score_differences_cover_row_arrays_and_per_token_lists() -> None:
    assert max_abs_difference(np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([[0.0, 1.5], [2.0, 2.9]])) == pytest.approx(
        0.5
    )
    per_token = [np.zeros((3, 2)), np.ones((5, 2))]
    shifted = [np.zeros((3, 2)), np.ones((5, 2)) + 0.25]
    assert max_abs_difference(per_token, shifted) == pytest.approx(0.25)
    assert max_abs_difference([np.zeros((0, 2))], [np.zeros((0, 2))]) == 0.0  # a row with no tokens
    with pytest.raises(ValueError, match="scored 2 and 1 rows"):
        max_abs_difference(per_token, per_token[:1])


def test_the_drop_is_a_loss_in_points_in_the_metrics_direction() -> None:
    assert metric_drop("accuracy", 0.912, 0.905) == pytest.approx(0.7)  # shares: x 100
    assert metric_drop("f1", 0.80, 0.85) == pytest.approx(-5.0)  # a gain is a negative drop
    assert metric_drop("hamming_loss", 0.10, 0.12) == pytest.approx(2.0)  # lower is better: the rise
    assert metric_drop("mse", 0.040, 0.046) == pytest.approx(0.006)  # own units
    assert metric_drop("ece", 0.05, 0.03) == pytest.approx(-2.0)
    assert points("r2", 0.5) == 50 and points("rmse", 0.5) == 0.5
    with pytest.raises(ValueError, match="Unknown metric 'speed'"):
        metric_drop("speed", 1.0, 0.5)


def test_the_gate_accepts_up_to_the_tolerance_and_refuses_beyond_it() -> None:
    at = quality_gate("accuracy", 0.86, 0.85, max_drop=1.0)
    assert at["accepted"] and at["drop"] == pytest.approx(1.0) and at["unit"] == "points"
    beyond = quality_gate("accuracy", 0.8603, 0.8478, max_drop=1.0)
    assert not beyond["accepted"] and beyond["drop"] == pytest.approx(1.25)
    assert beyond | {"drop": 0} == {
        "metric": "accuracy",
        "higher_is_better": True,
        "unit": "points",
        "before": 0.8603,
        "after": 0.8478,
        "drop": 0,
        "max_drop": 1.0,
        "accepted": False,
    }
    lower = quality_gate("mse", 0.040, 0.046, max_drop=0.005)
    assert not lower["accepted"] and not lower["higher_is_better"] and lower["unit"] == "mse units"
    assert quality_gate("mse", 0.046, 0.040, max_drop=0.0)["accepted"]  # an improvement always passes
    assert not quality_gate("f1_macro", 0.9, math.nan, max_drop=100)["accepted"]  # a NaN never does


def test_latency_is_the_median_call_and_throughput_counts_rows() -> None:
    calls: list[int] = []

    def call(batch: dict) -> None:
        calls.append(batch["rows"])

    batches = [{"rows": 1}] * 5
    assert latency_ms(call, batches, warmup=2) >= 0 and len(calls) == 7  # two untimed warm-up calls first
    calls.clear()
    assert throughput(call, [{"rows": 32}, {"rows": 8}], rows=40, warmup=1) > 0 and calls == [32, 32, 8]
