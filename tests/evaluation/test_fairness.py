"""Fairness: group metrics, identity-term AUCs, counterfactual flips, thresholds and mitigation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import NEGATIVE, POSITIVE, SUBJECTS, make_config, write_csv

import tunewise
from tunewise.config.sections import FairnessConfig
from tunewise.data.augmentation import augment_counterfactual, group_label_weights, swap_terms
from tunewise.errors import ConfigError, DataError
from tunewise.evaluation.fairness import (
    counterfactual_fairness,
    fairness_report,
    group_metrics,
    identity_aucs,
    identity_mentions,
    threshold_checks,
    threshold_optimizer_effect,
)


def test_swaps_whole_words_both_ways_keeping_case() -> None:
    assert swap_terms("The woman told a man.", "woman", "man") == "The man told a woman."
    assert swap_terms("WOMEN and Men", "women", "men") == "MEN and Women"
    assert swap_terms("a womanly manner", "woman", "man") == "a womanly manner"  # not inside words


def test_identity_mentions_are_whole_words_in_any_case() -> None:
    mentions = identity_mentions(["A Muslim family", "muslimah", "no identity"], {"religion": {"muslim": ["muslim"]}})
    assert mentions["religion/muslim"].tolist() == [True, False, False]


def test_bpsn_auc_exposes_false_alarms_caused_by_a_mention() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(400) < 0.5
    mentioned = rng.random(400) < 0.25
    scores = np.where(positive, 0.8, 0.2) + rng.normal(0, 0.05, 400)
    scores[mentioned & ~positive] += 0.7  # the model scores the identity's negatives as positive
    result = identity_aucs(positive, scores, {"gender/female": mentioned}, overall_auc=0.9)["gender/female"]
    assert result["bpsn_auc"] < 0.7 < result["bnsp_auc"]
    assert result["auc_gap"] > 0.2


def test_group_metrics_give_intervals_and_the_demographic_parity_difference() -> None:
    labels = np.array([1, 0] * 100)
    groups = pd.Series(["a"] * 100 + ["b"] * 100)
    predictions = np.concatenate([np.ones(100, int), labels[100:]])  # group a: always positive
    result = group_metrics(labels, predictions, groups, positive=1, seed=0)
    assert result["by_group"]["a"]["selection_rate"]["value"] == 1.0
    assert result["by_group"]["b"]["selection_rate"]["value"] == 0.5
    assert result["demographic_parity_difference"] == pytest.approx(0.5)
    low, high = result["by_group"]["b"]["accuracy"]["ci"]
    assert low <= 1.0 <= high + 1e-9 and result["by_group"]["a"]["count"]["value"] == 100


def test_counterfactual_flips_are_counted_per_pair() -> None:
    def biased(texts: list[str]) -> np.ndarray:
        p = np.array([0.9 if "woman" in t else 0.3 for t in texts])
        return np.column_stack([1 - p, p])

    texts = ["the woman was great", "the man was great", "the film was great"]
    result = counterfactual_fairness(texts, biased(texts), biased, [("woman", "man")], positive=1)
    assert result["texts_changed"] == 2 and result["flip_rate"] == 1.0
    assert result["by_pair"]["woman<->man"]["mean_probability_change"] == pytest.approx(0.6)


def test_thresholds_turn_figures_into_pass_warn_fail() -> None:
    report = {"counterfactual": {"flip_rate": 0.03, "mean_probability_change": 0.01}, "groups": {}}
    statuses = {c["figure"]: c["status"] for c in threshold_checks(report, FairnessConfig())}
    assert statuses == {"counterfactual_flip_rate": "warn", "counterfactual_probability_change": "pass"}


def test_threshold_optimizer_narrows_the_selection_gap() -> None:
    rng = np.random.default_rng(1)

    def data(n: int) -> tuple[np.ndarray, np.ndarray, pd.Series]:
        groups = pd.Series(np.where(rng.random(n) < 0.5, "a", "b"))
        labels = (rng.random(n) < 0.5).astype(int)
        scores = np.clip(0.5 * labels + 0.25 + rng.normal(0, 0.15, n) + np.where(groups == "a", 0.2, -0.2), 0, 1)
        return scores, labels, groups

    effect = threshold_optimizer_effect(data(2000), data(2000))
    before, after = effect["before"], effect["after"]
    assert after["demographic_parity_difference"] < 0.5 * before["demographic_parity_difference"]


def test_augmentation_adds_swapped_copies_and_group_weights_balance_cells() -> None:
    frame = pd.DataFrame({"text": ["the woman won", "a film", "he lost"], "label": ["p", "n", "n"], "_row": [2, 3, 4]})
    augmented = augment_counterfactual(frame, "text", [("woman", "man"), ("she", "he")])
    assert augmented.text.tolist()[3:] == ["the man won", "she lost"]
    assert augmented._row.tolist()[3:] == [2, 4] and augmented.label.tolist()[3:] == ["p", "n"]
    weights = group_label_weights(pd.Series(["a", "a", "a", "b"]), pd.Series(["x", "x", "y", "x"]))
    cell_totals = [weights[:2].sum(), weights[2], weights[3]]
    assert cell_totals == pytest.approx([cell_totals[0]] * 3) and weights.mean() == pytest.approx(1.0)


def test_report_on_a_model_that_cannot_separate_gives_statuses() -> None:
    texts = [f"{s} was {w}" for s in ("the woman", "the man") for w in ("good", "bad")] * 10
    labels = np.array([1, 0] * 20)
    probabilities = np.column_stack([np.full(40, 0.5), np.full(40, 0.5)])
    report = fairness_report(
        FairnessConfig(), texts, labels, probabilities, ["neg", "pos"], None, lambda t: np.full((len(t), 2), 0.5)
    )
    assert report["positive_label"] == "pos" and report["status"] in ("pass", "warn", "fail")
    assert report["counterfactual"]["flip_rate"] == 0.0


# ------------------------------------------------------------------------------------------ end to end


def grouped_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        rows.append(
            {
                "text": f"{rng.choice(SUBJECTS)} was {rng.choice(POSITIVE if positive else NEGATIVE)}",
                "label": "positive" if positive else "negative",
                "group": rng.choice(["a", "b"]),
            }
        )
    return rows


@pytest.fixture(scope="module")
def grouped(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("grouped")
    return {
        "train": write_csv(folder / "train.csv", grouped_rows(120, 1)),
        "validation": write_csv(folder / "validation.csv", grouped_rows(40, 2)),
        "test": write_csv(folder / "test.csv", grouped_rows(60, 3)),
    }


def test_a_run_writes_fairness_json_with_groups_and_post_processing(tmp_path: Path, tiny_mean_model_dir, grouped):
    fairness = {"group_column": "group", "threshold_optimizer": True, "reweight_groups": True, "augment": True}
    config = make_config(tmp_path, tiny_mean_model_dir, grouped, fairness=fairness, train={"epochs": 1})
    run = tunewise.train(config, show_progress=False)
    report = json.loads((run.run_dir / "fairness.json").read_text())
    assert report["split"] == "test" and set(report["groups"]["by_group"]) == {"a", "b"}
    assert {"before", "after"} <= set(report["threshold_optimizer"])
    assert report["status"] in ("pass", "warn", "fail") and report["checks"]


def test_a_missing_group_column_fails_before_training(tmp_path: Path, tiny_model_dir, single_label_data) -> None:
    config = make_config(tmp_path, tiny_model_dir, single_label_data, fairness={"group_column": "gender"})
    with pytest.raises(DataError, match="'gender' is not a column of the test data"):
        tunewise.train(config, show_progress=False)
    assert not (tmp_path / "run").exists()


def test_fairness_mitigation_needs_single_label_text(tmp_path: Path, tiny_model_dir, regression_data) -> None:
    config = make_config(tmp_path, tiny_model_dir, regression_data, fairness={"augment": True})
    with pytest.raises(ConfigError, match="single-label classification of one text column"):
        tunewise.train(config, show_progress=False)
