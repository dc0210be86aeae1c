"""Metric values on small hand-computable cases, and plots that produce real PNG files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from tunewise.evaluation import (
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
from tunewise.reporting import plot_calibration, plot_confusion_matrix, plot_loss_curve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def one_hot_probs(predicted: list[int], k: int, confidence: float = 1.0) -> np.ndarray:
    """Probabilities that put `confidence` on the predicted class and spread the rest evenly."""
    probs = np.full((len(predicted), k), (1.0 - confidence) / (k - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


# --- single label -------------------------------------------------------------------------------


def test_perfect_predictions() -> None:
    labels = np.array([0, 1, 2, 1, 0, 2])
    result = single_label_metrics(one_hot_probs(labels.tolist(), 3), labels, ["a", "b", "c"])
    assert result["accuracy"] == 1.0
    for key in ("f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro"):
        assert result[key] == pytest.approx(1.0)
    assert result["ece"] == pytest.approx(0.0, abs=1e-9)
    assert result["roc_auc_ovr"] == pytest.approx(1.0)
    assert "roc_auc" not in result
    assert result["n"] == 6
    assert result["per_class"]["b"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}


def test_known_binary_confusion_matrix() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    result = single_label_metrics(probs, labels, ["neg", "pos"])
    assert result["confusion_matrix"] == [[1, 1], [1, 2]]
    assert result["accuracy"] == pytest.approx(0.6)
    assert result["per_class"]["pos"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["neg"]["recall"] == pytest.approx(0.5)
    assert result["f1_macro"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert result["f1_micro"] == pytest.approx(0.6)
    # Positive scores: 0.8, 0.7, 0.4 vs negative 0.1, 0.6 -> 5 of 6 pairs ranked correctly.
    assert result["roc_auc"] == pytest.approx(5 / 6)
    assert "roc_auc_ovr" not in result
    json.dumps(result)


def test_absent_class_does_not_crash() -> None:
    labels = np.array([0, 0, 1, 1])
    probs = one_hot_probs([0, 2, 1, 1], 3, confidence=0.8)
    result = single_label_metrics(probs, labels, ["a", "b", "c"])
    assert len(result["confusion_matrix"]) == 3
    assert result["confusion_matrix"][2] == [0, 0, 0]
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert "roc_auc_ovr" not in result
    json.dumps(result)


def test_binary_with_one_class_present_omits_auc() -> None:
    result = single_label_metrics(one_hot_probs([0, 1], 2, 0.9), np.array([0, 0]), ["neg", "pos"])
    assert "roc_auc" not in result
    assert result["accuracy"] == 0.5


def test_ece_known_value() -> None:
    # Four predictions at confidence 0.8, three correct: |0.75 - 0.8| = 0.05.
    probs = one_hot_probs([0, 0, 0, 0], 2, confidence=0.8)
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.05)


def test_shape_mismatch_is_explained() -> None:
    with pytest.raises(ValueError, match="shape"):
        single_label_metrics(np.zeros((2, 3)), np.array([0, 1]), ["a", "b"])


# --- multi label --------------------------------------------------------------------------------


def test_multi_label_known_values() -> None:
    targets = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0]])
    probs = np.array([[0.9, 0.2, 0.7], [0.1, 0.8, 0.6], [0.6, 0.3, 0.1]])
    result = multi_label_metrics(probs, targets, ["x", "y", "z"], threshold=0.5)
    # Predictions: [1,0,1], [0,1,1], [1,0,0] -> tp=4, fp=1, fn=1.
    assert result["precision_micro"] == pytest.approx(0.8)
    assert result["recall_micro"] == pytest.approx(0.8)
    assert result["f1_micro"] == pytest.approx(0.8)
    assert result["subset_accuracy"] == pytest.approx(1 / 3)
    assert result["hamming_loss"] == pytest.approx(2 / 9)
    assert result["per_class"]["x"]["support"] == 2
    assert result["threshold"] == 0.5
    assert result["n"] == 3
    json.dumps(result)


def test_tune_threshold_prefers_closest_to_half_among_ties() -> None:
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.where(targets == 1, 0.37, 0.22)
    # 0.25, 0.30 and 0.35 all separate perfectly; 0.35 is closest to 0.5.
    assert tune_threshold(probs, targets) == pytest.approx(0.35)


def test_tune_threshold_high() -> None:
    targets = np.array([[1, 0], [0, 1], [0, 0]])
    probs = np.where(targets == 1, 0.95, 0.81)
    assert tune_threshold(probs, targets) == pytest.approx(0.85)


def test_tune_threshold_flat_curve_keeps_default() -> None:
    assert tune_threshold(np.zeros((3, 2)), np.zeros((3, 2))) == pytest.approx(0.5)


# --- regression ---------------------------------------------------------------------------------


def test_regression_known_linear_case() -> None:
    targets = np.array([1.0, 2.0, 3.0, 4.0])
    result = regression_metrics(targets + 1.0, targets)
    assert result["mse"] == pytest.approx(1.0)
    assert result["rmse"] == pytest.approx(1.0)
    assert result["mae"] == pytest.approx(1.0)
    assert result["r2"] == pytest.approx(1 - 4 / 5)
    assert result["pearson"] == pytest.approx(1.0)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["n"] == 4


def test_constant_predictions_give_zero_correlation() -> None:
    result = regression_metrics(np.full(5, 2.0), np.arange(5.0))
    assert result["pearson"] == 0.0
    assert result["spearman"] == 0.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in result.values())


# --- directions and comparison ------------------------------------------------------------------


def test_every_listed_metric_has_a_direction() -> None:
    for names in (SINGLE_LABEL_METRICS, MULTI_LABEL_METRICS, REGRESSION_METRICS):
        for name in names:
            assert METRIC_DIRECTIONS[name] in {"max", "min"}
    for name in ("mse", "rmse", "mae", "hamming_loss", "ece"):
        assert METRIC_DIRECTIONS[name] == "min"


def test_is_better_respects_direction_and_delta() -> None:
    assert is_better("f1_macro", 0.5, None)
    assert is_better("f1_macro", 0.8, 0.7)
    assert not is_better("f1_macro", 0.7, 0.8)
    assert not is_better("f1_macro", 0.705, 0.7, min_delta=0.01)
    assert is_better("mse", 0.3, 0.4)
    assert not is_better("mse", 0.5, 0.4)
    assert not is_better("mse", 0.395, 0.4, min_delta=0.01)
    assert not is_better("mse", float("nan"), 0.4)
    assert is_better("bleu", 21.0, 20.0) and is_better("perplexity", 9.0, 10.0)  # generation: up, and down
    with pytest.raises(ValueError):
        is_better("meteor", 1.0, 0.0)


def test_format_metrics_table_skips_nested_values() -> None:
    validation = {"accuracy": 0.91234, "n": 10, "per_class": {"a": {}}, "confusion_matrix": [[1]]}
    table = format_metrics_table({"validation": validation, "test": {"accuracy": 0.5, "ece": 0.1}})
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "0.9123" in text and "0.5000" in text and "10" in text
    assert "per_class" not in text and "confusion_matrix" not in text
    assert table.row_count == 3


def test_format_metrics_table_puts_each_baseline_beside_its_split() -> None:
    test = {"rougeL": 40.0, "baselines": {"base_model": {"rougeL": 21.5}, "lead_3": {"rougeL": 33.25}}}
    table = format_metrics_table({"validation": {"rougeL": 38.0}, "test": test})
    headers = [column.header for column in table.columns]
    assert headers == ["metric", "validation", "test", "test: base model", "test: lead 3"]
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "21.5000" in text and "33.2500" in text


# --- plots --------------------------------------------------------------------------------------


def assert_png(path: Path) -> None:
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_loss_curve(tmp_path: Path) -> None:
    history: list[dict] = [
        {"step": s, "epoch": s / 20, "loss": 2.0 / (1 + s / 10), "lr": 1e-4 * min(1.0, s / 5)} for s in range(1, 41)
    ]
    history += [{"step": 20, "epoch": 1.0, "split": "validation", "metrics": {"loss": 0.9, "f1_macro": 0.6}}]
    history += [{"step": 40, "epoch": 2.0, "split": "validation", "metrics": {"loss": 0.7, "f1_macro": 0.7}}]
    assert_png(plot_loss_curve(history, tmp_path / "plots" / "loss.png"))


def test_plot_loss_curve_without_eval_loss(tmp_path: Path) -> None:
    history = [{"step": 1, "epoch": 0.1, "loss": 1.0, "lr": 1e-5}, {"step": 1, "split": "validation", "metrics": {}}]
    assert_png(plot_loss_curve(history, tmp_path / "loss.png"))


def test_plot_confusion_matrix(tmp_path: Path) -> None:
    matrix = [[5, 1, 0], [2, 7, 1], [0, 0, 0]]
    assert_png(plot_confusion_matrix(matrix, ["cat", "dog", "bird"], tmp_path / "cm.png", title="Test"))


@pytest.mark.parametrize("k", [2, 3])
def test_plot_calibration(tmp_path: Path, k: int) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, k))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, k, size=50)
    assert_png(plot_calibration(probs, labels, tmp_path / f"calibration_{k}.png"))
