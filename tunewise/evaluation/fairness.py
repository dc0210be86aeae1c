"""Fairness of a single-label text classifier, measured on evaluation data.

Three views, each answering a different question:

- **groups** (a sensitive-attribute column in the evaluation data): does the model work as well,
  and select as often, for every group? fairlearn's MetricFrame gives per-group accuracy, F1,
  TPR, FPR and selection rate with bootstrap intervals, and the demographic parity and equalized
  odds differences.
- **identity terms** (no group column needed): does a mention of an identity change how the model
  ranks texts? For each identity, the subgroup AUC, BPSN AUC and BNSP AUC of Borkan et al. 2019,
  on the texts that mention it against those that do not.
- **counterfactual tokens** (Garg et al. 2019): swap one identity word for its counterpart
  (woman <-> man) and re-score; a fair model's probability barely moves and its label never flips.

Binary problems use the second class as the positive one (`fairness.positive_label` overrides).
Every figure with a threshold in the config gets a status: pass, warn or fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import f1_score, roc_auc_score

from tunewise.config.sections import FairnessConfig
from tunewise.data.augmentation import counterfactual_texts
from tunewise.errors import ConfigError

BOOTSTRAP_ROUNDS = 200
CI_QUANTILES = [0.025, 0.975]
MIN_SUBGROUP_ROWS = 10  # AUCs on fewer texts than this are noise, not evidence


def fairness_report(
    config: FairnessConfig,
    texts: list[str],
    labels: np.ndarray,
    probabilities: np.ndarray,
    label_names: list[str],
    groups: pd.Series | None,
    predict_probabilities: Callable[[list[str]], np.ndarray],
    seed: int = 0,
) -> dict[str, Any]:
    """Every view that applies to this data, and the pass/warn/fail checks over them."""
    positive = positive_class(config, label_names)
    labels = np.asarray(labels, dtype=int)
    predictions = probabilities.argmax(axis=1)
    report: dict[str, Any] = {"positive_label": None if positive is None else label_names[positive], "n": len(texts)}
    if groups is not None:
        report["groups"] = group_metrics(labels, predictions, groups, positive, seed)
    if positive is not None:
        scores = probabilities[:, positive]
        report["overall_auc"] = _auc(labels == positive, scores)
        mentions = identity_mentions(texts, config.identity_terms)
        report["identities"] = identity_aucs(labels == positive, scores, mentions, report["overall_auc"])
    report["counterfactual"] = counterfactual_fairness(
        texts, probabilities, predict_probabilities, config.counterfactual_pairs, positive
    )
    report["checks"] = threshold_checks(report, config)
    report["status"] = worst_status(report["checks"])
    return report


def positive_class(config: FairnessConfig, label_names: list[str]) -> int | None:
    """Index of the positive class: configured, or the second of two classes; None for multi-class."""
    if config.positive_label is not None:
        if config.positive_label not in label_names:
            raise ConfigError(
                f"fairness.positive_label {config.positive_label!r} is not a label of this model; "
                f"choose one of: {', '.join(label_names)}."
            )
        return label_names.index(config.positive_label)
    return 1 if len(label_names) == 2 else None


# ----------------------------------------------------------------------------------------------- groups


def group_metrics(
    labels: np.ndarray, predictions: np.ndarray, groups: pd.Series, positive: int | None, seed: int
) -> dict[str, Any]:
    """Per-group metrics with bootstrap 95 % intervals, and the between-group differences."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    sensitive = groups.astype(str).to_numpy()
    if positive is None:  # multi-class: rates need a positive class, accuracy and F1 do not
        metrics: dict[str, Callable] = {"accuracy": _accuracy, "f1_macro": _f1_macro, "count": count}
        y_true, y_pred = labels, predictions
    else:
        metrics = {
            "accuracy": _accuracy,
            "f1": f1_score,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
            "selection_rate": selection_rate,
            "count": count,
        }
        y_true, y_pred = (labels == positive).astype(int), (predictions == positive).astype(int)
    frame = MetricFrame(
        metrics=metrics,
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=sensitive,
        n_boot=BOOTSTRAP_ROUNDS,
        ci_quantiles=CI_QUANTILES,
        random_state=seed,
    )
    low, high = frame.by_group_ci
    by_group = {}
    for group in frame.by_group.index:
        by_group[str(group)] = {
            name: {
                "value": _number(frame.by_group.loc[group, name]),
                **({} if name == "count" else {"ci": [_number(low.loc[group, name]), _number(high.loc[group, name])]}),
            }
            for name in metrics
        }
    result: dict[str, Any] = {"by_group": by_group, "overall": {k: _number(v) for k, v in frame.overall.items()}}
    if positive is not None:
        result["demographic_parity_difference"] = _number(
            demographic_parity_difference(y_true, y_pred, sensitive_features=sensitive)
        )
        result["demographic_parity_ratio"] = _number(
            demographic_parity_ratio(y_true, y_pred, sensitive_features=sensitive)
        )
        result["equalized_odds_difference"] = _number(
            equalized_odds_difference(y_true, y_pred, sensitive_features=sensitive)
        )
    return result


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else float("nan")


def _f1_macro(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


# ----------------------------------------------------------------------------------------------- identity terms


def identity_mentions(texts: list[str], terms: dict[str, dict[str, list[str]]]) -> dict[str, np.ndarray]:
    """For each identity ("gender/female"), which texts mention one of its words (whole words, any case)."""
    lowered = [text.lower() for text in texts]
    mentions = {}
    for category, identities in terms.items():
        for identity, words in identities.items():
            pattern = re.compile(r"\b(?:" + "|".join(re.escape(w.lower()) for w in words) + r")\b")
            mentions[f"{category}/{identity}"] = np.array([bool(pattern.search(text)) for text in lowered])
    return mentions


def identity_aucs(
    is_positive: np.ndarray, scores: np.ndarray, mentions: dict[str, np.ndarray], overall_auc: float | None
) -> dict[str, Any]:
    """Subgroup, BPSN and BNSP AUC per identity (Borkan et al. 2019), and the largest shortfall of
    the three from the overall AUC (`auc_gap`, the thresholded figure).

    subgroup: positives vs negatives among texts that mention the identity (does the model separate
    them there?); BPSN (background positive, subgroup negative): does it score the identity's
    negatives above other texts' positives, i.e. false alarms because of the mention; BNSP: does it
    score the identity's positives below other texts' negatives, i.e. misses because of it.
    """
    result = {}
    for identity, mentioned in mentions.items():
        n = int(mentioned.sum())
        entry: dict[str, Any] = {"n": n, "positive_share": _number(is_positive[mentioned].mean()) if n else None}
        if n >= MIN_SUBGROUP_ROWS:
            entry["subgroup_auc"] = _auc(is_positive[mentioned], scores[mentioned])
            bpsn = (mentioned & ~is_positive) | (~mentioned & is_positive)
            entry["bpsn_auc"] = _auc(is_positive[bpsn], scores[bpsn])
            bnsp = (mentioned & is_positive) | (~mentioned & ~is_positive)
            entry["bnsp_auc"] = _auc(is_positive[bnsp], scores[bnsp])
            aucs = [entry[k] for k in ("subgroup_auc", "bpsn_auc", "bnsp_auc") if entry[k] is not None]
            if aucs and overall_auc is not None:
                entry["auc_gap"] = max(0.0, overall_auc - min(aucs))
        else:
            entry["note"] = f"fewer than {MIN_SUBGROUP_ROWS} evaluation texts mention it: no AUC"
        result[identity] = entry
    return result


def _auc(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    return float(roc_auc_score(y_true, scores)) if len(np.unique(y_true)) == 2 else None


# ----------------------------------------------------------------------------------------------- counterfactuals


def counterfactual_fairness(
    texts: list[str],
    probabilities: np.ndarray,
    predict_probabilities: Callable[[list[str]], np.ndarray],
    pairs: list[tuple[str, str]],
    positive: int | None,
) -> dict[str, Any]:
    """Mean change of the predicted probability, and the share of flipped labels, when one identity
    word is swapped for its counterpart; overall and per pair."""
    changed = counterfactual_texts(texts, pairs)
    if not changed:
        return {"texts_changed": 0, "note": "no evaluation text contains a counterfactual pair's word"}
    rows = np.array([row for row, _, _ in changed])
    swapped = predict_probabilities([text for _, _, text in changed])
    original = probabilities[rows]
    column = positive if positive is not None else None
    if column is None:  # multi-class: the probability of the originally predicted class
        chosen = original.argmax(axis=1)
        change = np.abs(swapped[np.arange(len(rows)), chosen] - original[np.arange(len(rows)), chosen])
    else:
        change = np.abs(swapped[:, column] - original[:, column])
    flipped = swapped.argmax(axis=1) != original.argmax(axis=1)
    names = np.array([name for _, name, _ in changed])
    by_pair = {
        str(name): {
            "texts": int((names == name).sum()),
            "mean_probability_change": _number(change[names == name].mean()),
            "flip_rate": _number(flipped[names == name].mean()),
        }
        for name in dict.fromkeys(names)
    }
    examples = [
        {"row": int(rows[i]), "pair": str(names[i]), "original": texts[rows[i]], "swapped": changed[i][2]}
        for i in np.argsort(-change)[:5]
    ]
    return {
        "texts_changed": len(changed),
        "mean_probability_change": _number(change.mean()),
        "flip_rate": _number(flipped.mean()),
        "by_pair": by_pair,
        "largest_changes": examples,
    }


# ----------------------------------------------------------------------------------------------- thresholds


def threshold_checks(report: dict[str, Any], config: FairnessConfig) -> list[dict[str, Any]]:
    """Each thresholded figure with its status: above `fail` fails, above `warn` warns."""
    limits = config.thresholds
    figures: list[tuple[str, float | None]] = []
    groups = report.get("groups") or {}
    for name in ("demographic_parity_difference", "equalized_odds_difference"):
        figures.append((name, groups.get(name)))
    counterfactual = report.get("counterfactual") or {}
    figures.append(("counterfactual_flip_rate", counterfactual.get("flip_rate")))
    figures.append(("counterfactual_probability_change", counterfactual.get("mean_probability_change")))
    for identity, entry in (report.get("identities") or {}).items():
        figures.append((f"identity_auc_gap:{identity}", entry.get("auc_gap")))
    checks = []
    for name, value in figures:
        if value is None or not np.isfinite(value):
            continue
        limit = limits.get(name.split(":")[0])
        if limit is None:
            continue
        status = "fail" if value > limit.fail else "warn" if value > limit.warn else "pass"
        checks.append({"figure": name, "value": value, "warn": limit.warn, "fail": limit.fail, "status": status})
    return checks


def worst_status(checks: list[dict[str, Any]]) -> str:
    order = {"pass": 0, "warn": 1, "fail": 2}
    statuses = [check["status"] for check in checks]
    return max(statuses, key=order.__getitem__) if statuses else "not measured"


def _number(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


# ----------------------------------------------------------------------------------------------- mitigation


def threshold_optimizer_effect(
    validation: tuple[np.ndarray, np.ndarray, pd.Series],
    test: tuple[np.ndarray, np.ndarray, pd.Series],
    seed: int = 0,
) -> dict[str, Any]:
    """fairlearn's ThresholdOptimizer (demographic parity) fitted on validation (positive-class
    scores, binary labels, groups), then test accuracy and disparities before and after it."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
    from fairlearn.postprocessing import ThresholdOptimizer

    (val_scores, val_labels, val_groups), (test_scores, test_labels, test_groups) = validation, test
    optimizer = ThresholdOptimizer(
        estimator=_PrecomputedScores(),
        constraints="demographic_parity",
        objective="accuracy_score",
        predict_method="predict_proba",
        prefit=True,
    )
    optimizer.fit(val_scores[:, None], val_labels, sensitive_features=val_groups.astype(str).to_numpy())
    groups = test_groups.astype(str).to_numpy()
    before = (test_scores >= 0.5).astype(int)
    after = np.asarray(optimizer.predict(test_scores[:, None], sensitive_features=groups, random_state=seed))

    def summary(predicted: np.ndarray) -> dict[str, float | None]:
        return {
            "accuracy": _number(np.mean(predicted == test_labels)),
            "demographic_parity_difference": _number(
                demographic_parity_difference(test_labels, predicted, sensitive_features=groups)
            ),
            "equalized_odds_difference": _number(
                equalized_odds_difference(test_labels, predicted, sensitive_features=groups)
            ),
        }

    return {"constraint": "demographic_parity", "before": summary(before), "after": summary(after)}


class _PrecomputedScores(ClassifierMixin, BaseEstimator):
    """A fitted scikit-learn 'estimator' whose input already is the positive-class score, so
    ThresholdOptimizer can post-process a model it cannot call."""

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X: np.ndarray, y: np.ndarray) -> _PrecomputedScores:
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        scores = np.asarray(X, dtype=np.float64)[:, 0]
        return np.column_stack([1.0 - scores, scores])
