"""Whether a converted model (an ONNX export, an int8 quantization) still is the model it came from.

Pure measurements: how far its raw scores are from the original's, how many points of a metric it
lost, and whether that loss is within the tolerance. Points are the metric x 100 for metrics on a
0-1 scale (accuracy 0.912 -> 0.905 is 0.7 points), and the metric's own units otherwise (MSE); the
drop is the fall of a metric where higher is better and the rise of one where lower is better, so a
positive drop is always a loss.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tunewise.evaluation.metrics import FRACTION_METRICS, METRIC_DIRECTIONS
from tunewise.types import Logits

# float noise in a recomputed metric must not fail a drop that equals the tolerance exactly
TOLERANCE_SLACK = 1e-9


def max_abs_difference(reference: Logits, converted: Logits) -> float:
    """The largest absolute difference between two models' scores for the same rows (one array, or one
    array per row for per-token scores)."""
    if reference is None or converted is None:
        raise ValueError("both models' scores are needed to compare them")
    left = reference if isinstance(reference, list) else [reference]
    right = converted if isinstance(converted, list) else [converted]
    if len(left) != len(right):
        raise ValueError(f"the models scored {len(left)} and {len(right)} rows")
    differences = (
        np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) for a, b in zip(left, right, strict=True)
    )
    return max((float(d.max(initial=0.0)) for d in differences), default=0.0)


def points(metric: str, value: float) -> float:
    """A metric's value in points: x 100 on a 0-1 scale, as is otherwise."""
    return value * 100 if metric in FRACTION_METRICS else value


def metric_drop(metric: str, before: float, after: float) -> float:
    """Points lost from `before` to `after` (negative: gained), in the metric's direction."""
    if metric not in METRIC_DIRECTIONS:
        raise ValueError(f"Unknown metric {metric!r}; expected one of {sorted(METRIC_DIRECTIONS)}.")
    lost = before - after if METRIC_DIRECTIONS[metric] == "max" else after - before
    return points(metric, lost)


def quality_gate(metric: str, before: float, after: float, max_drop: float) -> dict[str, Any]:
    """The verdict on a converted model: the metric before and after, the drop in points, the tolerance,
    and whether the drop is within it (a NaN metric never is)."""
    drop = metric_drop(metric, before, after)
    return {
        "metric": metric,
        "higher_is_better": METRIC_DIRECTIONS[metric] == "max",
        "unit": "points" if metric in FRACTION_METRICS else f"{metric} units",  # of the drop and the tolerance
        "before": before,
        "after": after,
        "drop": drop,
        "max_drop": max_drop,
        "accepted": bool(drop <= max_drop + TOLERANCE_SLACK),
    }
