"""Metrics for single-label, multi-label and regression evaluation, and their comparison rules."""

from tunewise.evaluation.metrics import (
    METRIC_DIRECTIONS,
    expected_calibration_error,
    format_metrics_table,
    is_better,
    metric_names,
    multi_label_metrics,
    regression_metrics,
    single_label_metrics,
    tune_threshold,
)

__all__ = [
    "METRIC_DIRECTIONS",
    "expected_calibration_error",
    "format_metrics_table",
    "is_better",
    "metric_names",
    "multi_label_metrics",
    "regression_metrics",
    "single_label_metrics",
    "tune_threshold",
]
