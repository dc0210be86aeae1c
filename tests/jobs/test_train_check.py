"""`tunewise train` checks the data first; data.dedupe drops leaked rows; data.balance helps minority classes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import NEGATIVE, POSITIVE, SUBJECTS, make_config, write_csv
from typer.testing import CliRunner

import tunewise
from tunewise.cli import app
from tunewise.errors import ConfigError, DataError
from tunewise.training.batching import balanced_class_weights, length_grouped_batches


def checked(config: dict) -> dict:
    return {**config, "audit": {"before_training": True}}


def test_train_stops_on_leakage_before_any_model_work(tmp_path, tiny_model_dir, planted) -> None:
    config = checked(make_config(tmp_path, tiny_model_dir, planted["paths"]))
    with pytest.raises(DataError, match="data check found 1 error") as error:
        tunewise.train(config, show_progress=False)
    assert "data.dedupe" in str(error.value) and "--skip-check" in str(error.value)
    assert not (tmp_path / "run").exists()  # nothing was written


def test_dedupe_drops_leaked_rows_and_the_run_folder_keeps_the_audit(tmp_path, tiny_model_dir, planted) -> None:
    config = checked(make_config(tmp_path, tiny_model_dir, {**planted["paths"], "dedupe": True}, train={"epochs": 1}))
    run = tunewise.train(config, show_progress=False)
    record = json.loads((run.run_dir / "run.json").read_text())
    assert record["rows"]["train"] < len(planted["train"])  # the leaked row (and its near twins) left training
    audit = json.loads((run.run_dir / "audit" / "audit.json").read_text())
    leakage = [f for f in audit["findings"] if f["check"] == "leakage"]
    assert leakage and all(f["severity"] == "note" for f in leakage)
    assert (run.run_dir / "audit" / "datasheet.md").is_file()
    assert (run.run_dir / "audit" / "class_balance.png").is_file()


def test_cli_train_checks_unless_told_to_skip(tmp_path, tiny_model_dir, planted) -> None:
    config_file = tmp_path / "run.yaml"
    config = checked(make_config(tmp_path, tiny_model_dir, planted["paths"], train={"epochs": 1}))
    config_file.write_text(json.dumps(config))
    refused = CliRunner().invoke(app, ["train", str(config_file)])
    assert refused.exit_code == 1 and "leakage" in refused.output and "Traceback" not in refused.output
    trained = CliRunner().invoke(app, ["train", str(config_file), "--skip-check"])
    assert trained.exit_code == 0, trained.output
    assert not (tmp_path / "run" / "audit").exists()  # no check ran, so none is claimed


# ------------------------------------------------------------------------------------------ balance


def imbalanced_rows(n_negative: int, n_positive: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = [
        {"text": f"{rng.choice(SUBJECTS)} was {rng.choice(NEGATIVE if i < n_negative else POSITIVE)}", "label": lab}
        for i, lab in enumerate(["negative"] * n_negative + ["positive"] * n_positive)
    ]
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("imbalanced")
    return {
        "train": write_csv(folder / "train.csv", imbalanced_rows(285, 15, seed=1)),  # 19:1
        "validation": write_csv(folder / "validation.csv", imbalanced_rows(57, 3, seed=2)),
        "test": write_csv(folder / "test.csv", imbalanced_rows(30, 30, seed=3)),  # balanced: recall is visible
    }


def class_recalls(tmp_path: Path, model_dir: Path, data: dict, balance: str) -> tuple[float, float]:
    """(minority, majority) recall on the balanced test split."""
    config = make_config(tmp_path / balance, model_dir, {**data, "balance": balance}, train={"epochs": 3})
    run = tunewise.train({**config, "train": {**config["train"], "early_stopping": None}}, show_progress=False)
    predictions = pd.read_csv(run.run_dir / "predictions.csv")
    hits = predictions.predicted_label == predictions.label
    return float(hits[predictions.label == "positive"].mean()), float(hits[predictions.label == "negative"].mean())


def test_reweight_and_oversample_raise_minority_recall(tmp_path, tiny_mean_model_dir, imbalanced) -> None:
    """19:1 training data: unbalanced, the model never predicts the minority class (measured recall 0.0);
    reweighted or oversampled, it finds all of it (1.0) without losing the majority class."""
    balances = ("none", "reweight", "oversample")
    recalls = {balance: class_recalls(tmp_path, tiny_mean_model_dir, imbalanced, balance) for balance in balances}
    minority = {balance: minority for balance, (minority, _) in recalls.items()}
    assert minority["none"] <= 0.2, recalls
    assert minority["reweight"] >= minority["none"] + 0.5, recalls
    assert minority["oversample"] >= minority["none"] + 0.5, recalls
    assert all(majority >= 0.8 for _, majority in recalls.values()), recalls


def test_balancing_weights_and_oversampled_epochs() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    weights = balanced_class_weights(labels, 2)
    assert weights == pytest.approx([100 / 180, 100 / 20])
    drawn = np.concatenate(length_grouped_batches(np.ones(100, int), 10, 0, 0, sample_weights=weights[labels]))
    assert len(drawn) == 100 and 0.35 < (labels[drawn] == 1).mean() < 0.65  # about half from the 10 % class
    again = np.concatenate(length_grouped_batches(np.ones(100, int), 10, 0, 0, sample_weights=weights[labels]))
    assert (drawn == again).all()  # a pure function of (seed, epoch): resume stays exact


def test_balance_needs_single_label_classes(tmp_path, tiny_model_dir, regression_data) -> None:
    config = make_config(tmp_path, tiny_model_dir, {**regression_data, "balance": "reweight"})
    with pytest.raises(ConfigError, match=r"data\.balance reweight balances the classes"):
        tunewise.train(config, show_progress=False)
