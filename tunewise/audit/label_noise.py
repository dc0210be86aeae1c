"""Suspected label errors, found with confident learning over a cheap text baseline.

A TF-IDF + logistic-regression baseline is trained out of fold (every row is scored by a
model that never saw its label), and ``cleanlab`` flags rows whose given label the baseline
finds implausible given its per-class confidence thresholds. The flags are only as good
as the baseline, so its out-of-fold accuracy is reported alongside them. Rows are never
dropped or relabelled: this is a report for a human to review.

Cost on large data (SST-2's 67,349 rows, 2 cores): the first version refitted word and
char TF-IDF inside every fold and trained liblinear logistic regression, 75-100 s. Now:

* the TF-IDF features are fitted once on all rows (no labels are involved, so no label
  leaks across folds; only the vocabulary and idf see the held-out texts);
* char_wb n-grams never cross a word boundary, so a text's char counts are the sum of its
  words' counts: they are computed once per distinct word and summed with one sparse
  product, giving exactly ``TfidfVectorizer(analyzer="char_wb", ...)``'s matrix ~6x faster;
* logistic regression is fitted by SGD (``SGDClassifier(loss="log_loss")``, ``alpha = 1 /
  (C * n)``, the same objective as ``LogisticRegression(C)``; one-vs-rest for more than two
  classes, where multinomial lbfgs was used before), folds in parallel threads.

Measured on 2 cores (old -> new): SST-2 75-104 s -> 8-14 s, 1,403 rows flagged, 1,358 of them
among the 1,401 flagged before; planted 5 % flips in SMS spam recall 0.87 -> 0.89, precision
0.92 -> 0.93; in 10,001 rows of AG News (4 classes) 85 s -> 6 s, recall 0.87 -> 0.88,
precision 0.41 -> 0.43.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from cleanlab.filter import find_label_issues as cleanlab_find_label_issues
from joblib import parallel_config
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict

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


# Word 1-2 grams catch topical cues, char_wb 2-5 grams catch misspellings and morphology (SMS
# slang, short SST-2 phrases); sublinear tf damps repeated tokens. Weak regularisation (C=10)
# measured better recall than C=4 at similar precision.
CHAR_NGRAMS = (2, 5)
CHAR_MIN_DF = 2
C = 10.0
MAX_EPOCHS = 100  # SGD stops earlier once the loss settles (about 35 epochs on SST-2)


def _features(texts: list[str]) -> sp.csr_matrix:
    """Word 1-2 gram and char_wb 2-5 gram TF-IDF of every row, side by side."""
    words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    return sp.hstack([words.fit_transform(texts), _char_wb_tfidf(texts)], format="csr")


def _char_wb_tfidf(texts: list[str]) -> sp.csr_matrix:
    """Equal to ``TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, min_df=CHAR_MIN_DF,
    sublinear_tf=True).fit_transform(texts)``, built from per-word n-gram counts.

    char_wb lowercases, splits on whitespace and takes the n-grams of each `` word `` alone, so
    (texts x words counts) @ (words x n-grams counts) is its count matrix; each distinct word is
    analysed once instead of once per occurrence.
    """
    per_text = CountVectorizer(analyzer=lambda text: text.lower().split())
    word_counts = per_text.fit_transform(texts)
    grams = CountVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, lowercase=False)
    counts = (word_counts @ grams.fit_transform(per_text.get_feature_names_out().tolist())).tocsr()
    document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
    counts = counts[:, np.flatnonzero(document_frequency >= CHAR_MIN_DF)]
    return TfidfTransformer(sublinear_tf=True).fit_transform(counts)


def _baseline(seed: int, n_train: int) -> SGDClassifier:
    """L2 logistic regression with ``LogisticRegression(C=C)``'s objective, fitted by SGD.

    liblinear needed ~6 s per SST-2 fold at C=10 (weak regularisation converges slowly); SGD
    reaches probabilities within 0.004 of it on average in ~2 s. SGD's ``alpha`` weighs the
    penalty per training row, so ``alpha = 1 / (C * n_train)``.
    """
    return SGDClassifier(loss="log_loss", alpha=1.0 / (C * n_train), max_iter=MAX_EPOCHS, tol=1e-4, random_state=seed)


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
    """Predicted class probabilities for each row from a model trained on the other folds.

    The folds run in threads (SGD releases the GIL), so nothing is copied to other processes.
    """
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    features = _features(texts)
    jobs = max(1, min(folds, os.cpu_count() or 1))
    with parallel_config(backend="threading", n_jobs=jobs):
        return cross_val_predict(
            _baseline(seed, len(labels) * (folds - 1) // folds),
            features,
            labels,
            cv=splitter,
            method="predict_proba",
            n_jobs=jobs,
        )


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
