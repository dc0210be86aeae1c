"""PNG plots for a run folder: loss curve, confusion matrix and reliability diagram.

Uses the non-interactive Agg backend so plotting works on headless training machines, and closes every
figure after saving so long runs that plot repeatedly do not leak memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve

from tunewise.runs.atomic import replacing

SMOOTH_MIN_POINTS = 30
CALIBRATION_BINS = 10


def plot_loss_curve(history: list[dict[str, Any]], path: Path) -> Path:
    """Training (and validation) loss against step, with the learning-rate schedule below it."""
    train = [r for r in history if "loss" in r and "split" not in r]
    evals = [r for r in history if "split" in r and "loss" in (r.get("metrics") or {})]

    fig, (loss_ax, lr_ax) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    _draw_losses(loss_ax, train, evals)
    _draw_learning_rate(lr_ax, train)
    fig.suptitle("Training progress")
    return _save(fig, path)


def _draw_losses(ax: plt.Axes, train: list[dict[str, Any]], evals: list[dict[str, Any]]) -> None:
    """Raw training loss (faint when smoothed), its moving average, and eval loss per split."""
    if train:
        steps = np.array([r["step"] for r in train], dtype=float)
        losses = np.array([r["loss"] for r in train], dtype=float)
        smooth = len(losses) >= SMOOTH_MIN_POINTS
        ax.plot(steps, losses, color="tab:blue", alpha=0.3 if smooth else 1.0, lw=1, label="training loss")
        if smooth:
            ax.plot(steps, _moving_average(losses), color="tab:blue", lw=2, label="training loss (smoothed)")
    for split, color in zip(sorted({r["split"] for r in evals}), ("tab:orange", "tab:green", "tab:red"), strict=False):
        points = [r for r in evals if r["split"] == split]
        ax.plot(
            [r["step"] for r in points],
            [r["metrics"]["loss"] for r in points],
            "o-",
            color=color,
            label=f"{split} loss",
        )
    if not train and not evals:
        ax.text(0.5, 0.5, "no loss recorded", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(loc="upper right")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)


def _draw_learning_rate(ax: plt.Axes, train: list[dict[str, Any]]) -> None:
    """The learning rate per step, so warm-up and decay can be checked against the loss."""
    points = [r for r in train if r.get("lr") is not None]
    if points:
        ax.plot([r["step"] for r in points], [r["lr"] for r in points], color="tab:purple", lw=1.5)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)


def _moving_average(values: np.ndarray) -> np.ndarray:
    """A centred-ish moving average over ~5% of the points; edges use the points that exist."""
    window = max(5, len(values) // 20)
    kernel = np.ones(window)
    sums = np.convolve(values, kernel, mode="same")
    counts = np.convolve(np.ones_like(values), kernel, mode="same")
    return sums / counts


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], label_names: list[str], path: Path, title: str = "Confusion matrix"
) -> Path:
    """Counts annotated in each cell, coloured by row share so rare classes are as readable as common ones."""
    counts = np.asarray(matrix, dtype=float)
    k = len(label_names)
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0)

    size = min(max(5.0, 0.45 * k + 3.0), 22.0)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), constrained_layout=True)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    _annotate_cells(ax, counts, shares)

    ax.set_xticks(range(k), labels=label_names, rotation=45 if k <= 10 else 90, ha="right" if k <= 10 else "center")
    ax.set_yticks(range(k), labels=label_names)
    ax.tick_params(labelsize=max(8, 11 - k // 6))
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    return _save(fig, path)


def _annotate_cells(ax: plt.Axes, counts: np.ndarray, shares: np.ndarray) -> None:
    """Write each count in its cell, white on dark cells, with a font that shrinks as classes grow."""
    k = counts.shape[0]
    fontsize = max(7, 12 - k // 4)
    for i in range(k):
        for j in range(counts.shape[1]):
            color = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=color, fontsize=fontsize)


def plot_calibration(
    probabilities: np.ndarray, labels: np.ndarray, path: Path, title: str = "Reliability diagram"
) -> Path:
    """Reliability diagram plus confidence histogram, to show whether probabilities can be trusted.

    Binary problems use the positive-class probability; multiclass ones use max-probability confidence
    against whether the argmax was correct.
    """
    probs = np.asarray(probabilities, dtype=float)
    y_true = np.asarray(labels).astype(int).ravel()
    if probs.shape[1] == 2:
        outcome, score, x_label = y_true, probs[:, 1], "predicted probability of the positive class"
    else:
        outcome, score, x_label = (probs.argmax(axis=1) == y_true).astype(int), probs.max(axis=1), "confidence"
    fraction, mean_score = calibration_curve(outcome, score, n_bins=CALIBRATION_BINS, strategy="uniform")

    fig, (curve_ax, hist_ax) = plt.subplots(
        2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    curve_ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    curve_ax.plot(mean_score, fraction, "o-", color="tab:blue", label="model")
    curve_ax.set_ylabel("fraction positive" if probs.shape[1] == 2 else "accuracy")
    curve_ax.set_xlim(0, 1)
    curve_ax.set_ylim(0, 1)
    curve_ax.legend(loc="upper left")
    curve_ax.grid(alpha=0.3)
    curve_ax.set_title(title)

    hist_ax.hist(score, bins=CALIBRATION_BINS, range=(0, 1), color="tab:blue", alpha=0.7)
    hist_ax.set_xlabel(x_label)
    hist_ax.set_ylabel("count")
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    """Write the figure as PNG (creating the folder) and close it so figures do not accumulate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(path) as temporary:  # whole or not at all (runs.atomic)
            fig.savefig(temporary, dpi=120, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_class_balance(counts_by_split: dict[str, dict[str, int]], path: Path) -> Path:
    """Rows per class, one bar group per split: imbalance is visible at a glance."""
    classes = sorted({name for counts in counts_by_split.values() for name in counts})
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(classes) * len(counts_by_split)), 4))
    width = 0.8 / max(len(counts_by_split), 1)
    for i, (split, counts) in enumerate(counts_by_split.items()):
        positions = np.arange(len(classes)) + i * width
        ax.bar(positions, [counts.get(name, 0) for name in classes], width=width, label=split)
    ax.set_xticks(np.arange(len(classes)) + width * (len(counts_by_split) - 1) / 2)
    ax.set_xticklabels(classes, rotation=45 if len(classes) > 6 else 0, ha="right" if len(classes) > 6 else "center")
    ax.set_ylabel("rows")
    ax.set_title("Class balance")
    ax.legend()
    return _save(fig, path)


def plot_length_histogram(lengths_by_split: dict[str, list[int]], max_length: int, path: Path) -> Path:
    """Token lengths per split with the truncation point marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, lengths in lengths_by_split.items():
        ax.hist(lengths, bins=40, alpha=0.5, label=split)
    ax.axvline(max_length, color="black", linestyle="--", label=f"max_length {max_length}")
    ax.set_xlabel("tokens")
    ax.set_ylabel("rows")
    ax.set_title("Token lengths")
    ax.legend()
    return _save(fig, path)
