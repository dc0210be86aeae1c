"""Exact match and F1 as the official SQuAD evaluation scripts (v1.1 and v2.0) define them.

Both compare answers after the official normalisation (lower case, no punctuation, no articles
a/an/the, single spaces); F1 is over the bag of normalised tokens. A question counts with its best
score over all gold answers. SQuAD 2.0 adds unanswerable questions (no gold answer): the only right
prediction is the empty answer, worth 1 for both measures, and anything else 0.

Scores here are fractions (0-1) like every other tunewise metric; the official scripts print
them as percentages (x 100).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1; with an empty side (v2.0 no-answer) it is 1 when both are empty, else 0."""
    predicted, truth = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not truth:
        return float(predicted == truth)
    common = sum((Counter(predicted) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def question_scores(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of one question: the best over its gold answers; none means unanswerable."""
    golds = [gold for gold in golds if normalize_answer(gold)] or [""]
    return max(exact_match(prediction, g) for g in golds), max(f1_score(prediction, g) for g in golds)


def squad_metrics(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float | int]:
    """exact_match and f1 over the questions, and, when some are unanswerable (v2.0), the same two
    on the answerable (has_answer_) and unanswerable (no_answer_) ones, as the v2.0 script reports."""
    scores = np.array([question_scores(p, g) for p, g in zip(predictions, golds, strict=True)]).reshape(-1, 2)
    metrics: dict[str, float | int] = {
        "exact_match": float(scores[:, 0].mean()) if len(scores) else 0.0,
        "f1": float(scores[:, 1].mean()) if len(scores) else 0.0,
        "n": len(scores),
    }
    answerable = np.array([any(normalize_answer(g) for g in gold) for gold in golds], dtype=bool)
    if len(answerable) and not answerable.all():
        for prefix, mask in (("has_answer_", answerable), ("no_answer_", ~answerable)):
            metrics[f"{prefix}n"] = int(mask.sum())
            if mask.any():
                metrics[f"{prefix}exact_match"] = float(scores[mask, 0].mean())
                metrics[f"{prefix}f1"] = float(scores[mask, 1].mean())
    return metrics


def best_null_threshold(answers: Sequence[str], null_margins: Sequence[float], golds: Sequence[Sequence[str]]) -> float:
    """The no-answer threshold with the best F1, as the v2.0 script's `find_best_thresh` searches it.

    A question is left unanswered when its null margin (no-answer score minus best span score)
    exceeds the threshold. Trying each observed margin as the threshold covers every distinct
    outcome; ties keep the highest threshold (fewest abstentions)."""
    if not len(answers):
        return 0.0
    span_f1 = np.array([question_scores(a, g)[1] for a, g in zip(answers, golds, strict=True)])
    null_f1 = np.array([question_scores("", g)[1] for g in golds])
    margins = np.clip(np.asarray(null_margins, dtype=np.float64), -1e30, 1e30)  # +inf: no span found
    order = np.argsort(-margins, kind="stable")  # abstain on the largest margins first
    # abstaining on the first k questions of `order`: total = all spans + sum of (null - span) gains
    gains = np.concatenate([[0.0], np.cumsum(null_f1[order] - span_f1[order])])
    best = int(np.argmax(gains[::-1]))  # reversed: the smallest k among ties
    k = len(gains) - 1 - best
    if k == 0:
        return float(margins.max()) + 1e-6  # abstain on nothing
    if k == len(margins):
        return float(margins.min()) - 1e-6
    return float((margins[order[k - 1]] + margins[order[k]]) / 2)
