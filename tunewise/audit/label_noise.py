"""Suspected label errors, found with confident learning over a cheap text baseline.

A TF-IDF + logistic-regression baseline is trained out of fold (every row is scored by a
model that never saw it), and ``cleanlab`` flags rows whose given label the baseline
finds implausible given its per-class confidence thresholds. The flags are only as good
as the baseline, so its out-of-fold accuracy is reported alongside them. Rows are never
dropped or relabelled: this is a report for a human to review.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues as cleanlab_find_label_issues
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline, make_union

__all__ = ["LabelNoiseResult", "LabelSuspect", "find_label_issues"]

MIN_ROWS = 50
ROW_COLUMN = "_row"
SEPARATOR = " [SEP] "


@dataclass(frozen=True)
class LabelSuspect:
    """A row whose given label the out-of-fold baseline finds implausible."""

    row: int
    given: str
    suggested: str
    confidence_in_given: float


@dataclass(frozen=True)
class LabelNoiseResult:
    """Flag count, the most suspicious rows, and how far to trust them."""

    n_flagged: int
    suspects: list[LabelSuspect]
    baseline_accuracy: float


def _baseline(seed: int, n_classes: int) -> Pipeline:
    """Word 1-2 grams catch topical cues, char_wb 2-5 grams catch misspellings and
    morphology (SMS slang, short SST-2 phrases); sublinear tf damps repeated tokens.

    liblinear is ~3x faster than lbfgs on these sparse binary problems (7 s vs 21 s for
    5 folds of SMS spam) with the same flags; multiclass problems use multinomial lbfgs.
    Weak regularisation (C=10) measured better recall than C=4 at similar precision."""
    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    solver = "liblinear" if n_classes == 2 else "lbfgs"
    classifier = LogisticRegression(C=10.0, solver=solver, max_iter=2000, random_state=seed)
    return make_pipeline(features, classifier)


def _texts(frame: pd.DataFrame, text_columns: Sequence[str]) -> list[str]:
    """One string per row; several text columns are joined with `` [SEP] ``."""
    columns = [frame[column].astype(str).tolist() for column in text_columns]
    return [SEPARATOR.join(parts) for parts in zip(*columns, strict=True)]


def _applicable(labels: np.ndarray, n_classes: int, folds: int) -> bool:
    """Cross-validation needs every class in every fold; tiny data gives meaningless flags."""
    if len(labels) < MIN_ROWS or n_classes < 2:
        return False
    return int(np.bincount(labels, minlength=n_classes).min()) >= folds


def out_of_fold_probabilities(texts: list[str], labels: np.ndarray, seed: int, folds: int) -> np.ndarray:
    """Predicted class probabilities for each row from a model trained on the other folds."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(_baseline(seed, int(labels.max()) + 1), texts, labels, cv=splitter, method="predict_proba")


def find_label_issues(
    frame: pd.DataFrame,
    text_columns: list[str],
    label_column: str,
    seed: int = 0,
    folds: int = 5,
    top: int = 20,
) -> LabelNoiseResult | None:
    """Rows whose labels look wrong, most suspicious first (at most ``top`` of them).

    Returns ``None`` when the audit does not apply: fewer than 50 rows, fewer than two
    classes, or a class with fewer than ``folds`` rows.
    """
    given = np.array([str(value) for value in frame[label_column].tolist()], dtype=object)
    classes, labels = np.unique(given, return_inverse=True)
    if not _applicable(labels, len(classes), folds):
        return None
    pred_probs = out_of_fold_probabilities(_texts(frame, text_columns), labels, seed, folds)
    ranked = cleanlab_find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence")
    rows = frame[ROW_COLUMN].tolist() if ROW_COLUMN in frame.columns else list(range(len(frame)))
    suspects = [
        LabelSuspect(
            row=int(rows[i]),
            given=str(classes[labels[i]]),
            suggested=str(classes[int(np.argmax(pred_probs[i]))]),
            confidence_in_given=float(pred_probs[i, labels[i]]),
        )
        for i in ranked[:top]
    ]
    accuracy = float(np.mean(np.argmax(pred_probs, axis=1) == labels))
    return LabelNoiseResult(n_flagged=len(ranked), suspects=suspects, baseline_accuracy=accuracy)
