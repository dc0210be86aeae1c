"""Metrics for single-label, multi-label and regression evaluation, and their comparison rules."""

from tunewise.evaluation.metrics import (
    METRIC_DIRECTIONS,
    MULTI_LABEL_METRICS,
    REGRESSION_METRICS,
    SINGLE_LABEL_METRICS,
    expected_calibration_error,
    format_metrics_table,
    is_better,
    multi_label_metrics,
    regression_metrics,
    single_label_metrics,
    tune_threshold,
)

__all__ = [
    "METRIC_DIRECTIONS",
    "MULTI_LABEL_METRICS",
    "REGRESSION_METRICS",
    "SINGLE_LABEL_METRICS",
    "expected_calibration_error",
    "format_metrics_table",
    "is_better",
    "multi_label_metrics",
    "regression_metrics",
    "single_label_metrics",
    "tune_threshold",
]
