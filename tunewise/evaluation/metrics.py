"""Evaluation metrics for the three problem types, built on scikit-learn.

Every function returns a flat, JSON-serialisable dict (plain floats, ints, lists and dicts) so results
can be written to `metrics.json` and compared between runs without numpy types leaking out. Scalar
metric names are shared with early stopping and best-model selection through `METRIC_DIRECTIONS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rich.table import Table
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
    roc_auc_score,
)

ECE_BINS = 15
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))

# "max": larger is better; "min": smaller is better. "loss" is here so eval loss can be compared too.
METRIC_DIRECTIONS: dict[str, str] = {
    "accuracy": "max",
    "precision": "max",  # entity-level (NER) and answer-level (QA) scores, micro-averaged
    "recall": "max",
    "f1": "max",
    "exact_match": "max",  # QA: share of questions answered exactly (SQuAD normalisation)
    "token_accuracy": "max",  # NER: share of words tagged right
    "precision_macro": "max",
    "recall_macro": "max",
    "f1_macro": "max",
    "precision_micro": "max",
    "recall_micro": "max",
    "f1_micro": "max",
    "precision_weighted": "max",
    "recall_weighted": "max",
    "f1_weighted": "max",
    "roc_auc": "max",
    "roc_auc_ovr": "max",
    "ece": "min",
    "subset_accuracy": "max",
    "hamming_loss": "min",
    "mse": "min",
    "rmse": "min",
    "mae": "min",
    "r2": "max",
    "pearson": "max",
    "spearman": "max",
    "loss": "min",
    "perplexity": "min",
    # generated text against its reference (tunewise.evaluation.generation), 0-100
    "rouge1": "max",
    "rouge2": "max",
    "rougeL": "max",
    "rougeLsum": "max",
    "bleu": "max",
    "chrf": "max",
}

# metrics that are shares or scores on a 0-1 scale (R² and correlations at most 1): a change of 0.01 is one
# point. The others (errors in the target's units, losses, the 0-100 generation scores) keep their own units.
OWN_UNIT_METRICS = frozenset(
    {"mse", "rmse", "mae", "loss", "perplexity", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf"}
)
FRACTION_METRICS = frozenset(METRIC_DIRECTIONS) - OWN_UNIT_METRICS

# the scalar metrics each function below reports, in order (the valid choices for best-model selection);
# roc_auc / roc_auc_ovr appear in a result only when defined (binary vs multiclass, all classes present)
SINGLE_LABEL_METRICS = (
    "accuracy",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "f1_micro",
    "precision_micro",
    "recall_micro",
    "f1_weighted",
    "precision_weighted",
    "recall_weighted",
    "roc_auc",  # binary only, and only when both classes occur in the labels
    "roc_auc_ovr",  # multiclass only, and only when every class occurs in the labels
    "ece",
)
MULTI_LABEL_METRICS = ("f1_micro", "f1_macro", "precision_micro", "recall_micro", "subset_accuracy", "hamming_loss")
REGRESSION_METRICS = ("mse", "rmse", "mae", "r2", "pearson", "spearman")


def is_better(metric: str, new: float, best: float | None, min_delta: float = 0.0) -> bool:
    """Whether `new` improves on `best` by more than `min_delta` in the metric's direction.

    A NaN never counts as an improvement, so a diverged evaluation cannot become the best model.
    """
    if metric not in METRIC_DIRECTIONS:
        raise ValueError(f"Unknown metric {metric!r}; expected one of {sorted(METRIC_DIRECTIONS)}.")
    if new is None or math.isnan(new):
        return False
    if best is None or math.isnan(best):
        return True
    if METRIC_DIRECTIONS[metric] == "max":
        return new > best + min_delta
    return new < best - min_delta


# --------------------------------------------------------------------------------------------------
# Single-label classification
# --------------------------------------------------------------------------------------------------


def single_label_metrics(probabilities: np.ndarray, labels: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """Accuracy, P/R/F1 (macro, micro, weighted, per class), confusion matrix, ROC AUC and ECE.

    Classes are fixed to `range(len(label_names))` so a class missing from a small validation split
    still gets a row in the confusion matrix and a zero score instead of a crash or shifted indices.
    """
    probs = _as_2d_probabilities(probabilities, len(label_names))
    y_true = np.asarray(labels).astype(int).ravel()
    _check_rows(probs, y_true)
    y_pred = probs.argmax(axis=1)
    classes = list(range(len(label_names)))

    result: dict[str, Any] = {"accuracy": float(accuracy_score(y_true, y_pred))}
    for average in ("macro", "micro", "weighted"):
        result.update(_averaged_prf(y_true, y_pred, classes, average))
    result["per_class"] = _per_class(y_true, y_pred, classes, label_names)
    result["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=classes).tolist()
    result.update(_roc_auc(probs, y_true, classes))
    result["ece"] = expected_calibration_error(probs, y_true)
    result["n"] = len(y_true)
    return result


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width bins of the max probability, weighted by bin size.

    Hand-written because scikit-learn has no ECE; bins are (lo, hi] so a confidence of 1.0 lands in the top bin.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    y_true = np.asarray(labels).astype(int).ravel()
    if len(y_true) == 0:
        return 0.0
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_index = np.digitize(confidence, edges[1:-1], right=True)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bin_index == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def _averaged_prf(y_true: np.ndarray, y_pred: np.ndarray, classes: list[int], average: str) -> dict[str, float]:
    """Precision, recall and F1 for one averaging mode, keyed `<metric>_<average>`."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average=average, zero_division=0
    )
    return {f"precision_{average}": float(precision), f"recall_{average}": float(recall), f"f1_{average}": float(f1)}


def _per_class(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[int], label_names: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and support per class name; works for 1-D labels and 0/1 indicator matrices."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average=None, zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(label_names, precision, recall, f1, support, strict=True)
    }


def _roc_auc(probs: np.ndarray, y_true: np.ndarray, classes: list[int]) -> dict[str, float]:
    """ROC AUC where it is defined; an empty dict where it is not (a class missing from the labels)."""
    present = set(np.unique(y_true).tolist())
    if len(classes) == 2:
        if present != {0, 1}:
            return {}
        return {"roc_auc": float(roc_auc_score(y_true, probs[:, 1]))}
    if len(classes) < 2 or present != set(classes):
        return {}
    # sklearn insists that multiclass scores sum to 1; renormalise away float32 softmax rounding.
    normalised = probs / probs.sum(axis=1, keepdims=True)
    return {"roc_auc_ovr": float(roc_auc_score(y_true, normalised, multi_class="ovr", average="macro", labels=classes))}


# --------------------------------------------------------------------------------------------------
# Multi-label classification
# --------------------------------------------------------------------------------------------------


def multi_label_metrics(
    probabilities: np.ndarray, targets: np.ndarray, label_names: list[str], threshold: float = 0.5
) -> dict[str, Any]:
    """Micro/macro F1, exact-match accuracy and Hamming loss for labels predicted at `threshold`."""
    probs = _as_2d_probabilities(probabilities, len(label_names))
    y_true = _as_indicator(targets, probs.shape)
    y_pred = (probs >= threshold).astype(int)
    classes = list(range(len(label_names)))

    micro_p, micro_r, micro_f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average="micro", zero_division=0
    )
    return {
        "f1_micro": float(micro_f1),
        "f1_macro": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "precision_micro": float(micro_p),
        "recall_micro": float(micro_r),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
        "per_class": _per_class(y_true, y_pred, classes, label_names),
        "threshold": float(threshold),
        "n": int(y_true.shape[0]),
    }


def tune_threshold(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The global threshold on a 0.05..0.95 grid with the best micro F1 on (validation) data.

    Ties go to the threshold closest to 0.5 (then the lower one) so a flat F1 curve keeps the default.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    y_true = _as_indicator(targets, probs.shape)
    best_threshold, best_key = 0.5, None
    for threshold in THRESHOLD_GRID:
        score = f1_score(y_true, (probs >= threshold).astype(int), average="micro", zero_division=0)
        key = (round(float(score), 12), -abs(threshold - 0.5), -threshold)
        if best_key is None or key > best_key:
            best_threshold, best_key = threshold, key
    return float(best_threshold)


# --------------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------------


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float | int]:
    """MSE, RMSE, MAE, R², Pearson and Spearman; undefined correlations are reported as 0.0, not NaN."""
    y_pred = np.asarray(predictions, dtype=np.float64).ravel()
    y_true = np.asarray(targets, dtype=np.float64).ravel()
    _check_rows(y_pred, y_true)
    mse = float(mean_squared_error(y_true, y_pred))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "r2": float(r2_score(y_true, y_pred)) if len(y_true) >= 2 else 0.0,
        "pearson": _correlation(stats.pearsonr, y_pred, y_true),
        "spearman": _correlation(stats.spearmanr, y_pred, y_true),
        "n": len(y_true),
    }


def _correlation(fn: Any, x: np.ndarray, y: np.ndarray) -> float:
    """A scipy correlation that is 0.0 when undefined (constant input, fewer than 2 points).

    A constant-output model (common early in training) would otherwise yield NaN and poison comparisons.
    """
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    value = float(fn(x, y)[0])
    return 0.0 if math.isnan(value) else value


# --------------------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------------------


def format_metrics_table(metrics_by_split: Mapping[str, Mapping[str, Any]], title: str | None = None) -> Table:
    """A rich table, one row per scalar metric and one column per split, each split followed by its
    baselines (`baselines`: the base model, lead-3, ...) so a figure is never read without them;
    other nested values are skipped."""
    metrics_by_split = with_baseline_columns(metrics_by_split)
    splits = list(metrics_by_split)
    rows: list[str] = []
    for metrics in metrics_by_split.values():
        rows.extend(name for name, value in metrics.items() if _is_scalar(value) and name not in rows)

    table = Table(title=title)
    table.add_column("metric", style="bold")
    for split in splits:
        table.add_column(split, justify="right")
    for name in rows:
        table.add_row(name, *(_format_value(metrics_by_split[split].get(name)) for split in splits))
    return table


def with_baseline_columns(metrics_by_split: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each split's metrics, then one entry per baseline of that split, named "split: baseline"."""
    columns: dict[str, Mapping[str, Any]] = {}
    for split, metrics in metrics_by_split.items():
        columns[split] = metrics
        for name, scores in (metrics.get("baselines") or {}).items():
            columns[f"{split}: {name.replace('_', ' ')}"] = scores
    return columns


def _is_scalar(value: Any) -> bool:
    """Numbers only: bools, strings, dicts and lists do not belong in the metric table."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _format_value(value: Any) -> str:
    """Counts as integers, everything else with 4 decimals; '-' where a split lacks the metric."""
    if not _is_scalar(value):
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.4f}"


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------


def _as_2d_probabilities(probabilities: np.ndarray, n_classes: int) -> np.ndarray:
    """Float64 (n, k) probabilities, with a clear error when k disagrees with the label names."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ValueError(f"Expected probabilities of shape (n, {n_classes}), got {probs.shape}.")
    return probs


def _as_indicator(targets: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """0/1 integer targets of the same shape as the probabilities (float targets are rounded)."""
    y_true = np.rint(np.asarray(targets, dtype=np.float64)).astype(int)
    if y_true.shape != tuple(shape):
        raise ValueError(f"Expected targets of shape {tuple(shape)}, got {y_true.shape}.")
    return y_true


def _check_rows(a: np.ndarray, b: np.ndarray) -> None:
    """Predictions and targets must describe the same examples, and there must be some."""
    if len(a) != len(b):
        raise ValueError(f"Got {len(a)} predictions but {len(b)} targets.")
    if len(a) == 0:
        raise ValueError("Cannot compute metrics on zero examples.")
