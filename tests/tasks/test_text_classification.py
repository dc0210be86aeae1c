"""Text classification through training: multi-label, regression, sentence pairs, integer labels, the
label checks on the data, and the selection metrics each problem type reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import invoke_cli, make_config, read_json, sentiment_rows, write_csv

import tunewise
from tunewise.errors import ConfigError, DataError

POSITIVE_TEXTS = ["the film was really great overall", "this book was so excellent today"]
NEGATIVE_TEXTS = ["the movie was very awful again", "the hotel was rather terrible honestly"]
TEXTS = POSITIVE_TEXTS + NEGATIVE_TEXTS
LEARN = {"epochs": 5, "learning_rate": 3e-3}  # enough for the tiny models to reach ~100% on the templates


def train(config: dict, **kwargs: Any) -> tunewise.Run:
    return tunewise.train(config, show_progress=False, **kwargs)


# ------------------------------------------------------------------------------------------ problem types


def test_multi_label(tmp_path, tiny_mean_model_dir, multi_label_data):
    run = train(make_config(tmp_path, tiny_mean_model_dir, multi_label_data, train=LEARN))
    model_config = read_json(run.run_dir / "model" / "config.json")
    assert model_config["problem_type"] == "multi_label_classification"
    assert model_config["id2label"] == {"0": "politics", "1": "sports", "2": "tech"}
    threshold = model_config["tunewise_threshold"]
    assert 0.0 < threshold < 1.0
    loaded = tunewise.load(run.run_dir)
    assert loaded.task.labels.threshold == pytest.approx(threshold)
    assert loaded.task.labels.problem_type == "multi_label"
    for split in ("validation", "test"):
        assert {"f1_micro", "f1_macro", "subset_accuracy", "hamming_loss"} <= set(run.metrics[split])
    assert run.config.train.early_stopping.metric == "f1_micro"
    assert run.metrics["test"]["f1_micro"] > 0.6
    predictions = run.predict(["news about the goal overall", "news about the vote and the laptop today"])
    for prediction in predictions:
        assert isinstance(prediction["labels"], list)
        assert set(prediction["labels"]) <= {"politics", "sports", "tech"}
        assert set(prediction["probabilities"]) == {"politics", "sports", "tech"}
    csv = pd.read_csv(run.run_dir / "predictions.csv")
    assert "predicted_labels" in csv.columns and len(csv) == 30


def test_regression(tmp_path, tiny_mean_model_dir, regression_data):
    run = train(make_config(tmp_path, tiny_mean_model_dir, regression_data, train=LEARN))
    model_config = read_json(run.run_dir / "model" / "config.json")
    assert model_config["problem_type"] == "regression"
    assert len(model_config["id2label"]) == 1
    for split in ("validation", "test"):
        assert {"mse", "rmse", "mae", "r2", "pearson", "spearman"} <= set(run.metrics[split])
        assert "confusion_matrix" not in run.metrics[split]
    assert run.config.train.early_stopping.metric == "mse"
    assert run.metrics["test"]["pearson"] > 0.8
    assert not (run.run_dir / "plots" / "confusion_test.png").exists()
    high, low = run.predict(["the film was really great overall", "the movie was very awful again"])
    assert isinstance(high["prediction"], float)
    assert high["prediction"] > low["prediction"]


def test_sentence_pairs(tmp_path, tiny_mean_model_dir, pair_data):
    config = make_config(tmp_path, tiny_mean_model_dir, pair_data, train=LEARN)
    config["data"].update(text_column="premise", text_pair_column="hypothesis")
    run = train(config)
    assert set(run.metrics["test"]["per_class"]) == {"different", "same"}
    csv = pd.read_csv(run.run_dir / "predictions.csv")
    assert {"premise", "hypothesis", "label", "predicted_label"} <= set(csv.columns)
    pairs = [("the film was good", "the hotel is very great"), ("the film was good", "the hotel is very awful")]
    predictions = run.predict(pairs)
    assert all(p["label"] in {"same", "different"} for p in predictions)
    loaded = tunewise.load(run.run_dir).predict(pairs)
    assert [p["label"] for p in loaded] == [p["label"] for p in predictions]
    assert [p["score"] for p in loaded] == pytest.approx([p["score"] for p in predictions], abs=1e-5)
    with pytest.raises((ValueError, tunewise.TunewiseError)):
        run.predict(["a single text where a pair is needed"])
    refused = invoke_cli("predict", run.run_dir, "--text", "the film was good")
    assert refused.exit_code == 1
    assert "This model reads 2 texts per input (premise, hypothesis)" in refused.output
    assert "use --input" in refused.output and "Traceback" not in refused.output
    pair_file = tmp_path / "pairs.csv"
    pd.DataFrame(pairs, columns=["premise", "hypothesis"]).to_csv(pair_file, index=False)
    from_file = invoke_cli("predict", run.run_dir, "--input", pair_file)
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout.splitlines()[0].startswith("premise,hypothesis,predicted_label")


# ------------------------------------------------------------------------------------------ labels


def test_integer_labels_keep_their_names(tmp_path, tiny_mean_model_dir, integer_label_data):
    run = train(make_config(tmp_path, tiny_mean_model_dir, integer_label_data, train=LEARN))
    model_config = read_json(run.run_dir / "model" / "config.json")
    assert model_config["id2label"] == {"0": "0", "1": "1"}
    assert set(run.metrics["test"]["per_class"]) == {"0", "1"}
    assert {p["label"] for p in run.predict(TEXTS)} <= {"0", "1"}
    assert run.metrics["test"]["accuracy"] >= 0.8
    assert set(pd.read_csv(run.run_dir / "predictions.csv")["predicted_label"]) <= {0, 1}


def test_labels_unseen_in_training_are_refused(tmp_path, tiny_mean_model_dir, single_label_data):
    rows = [*sentiment_rows(10, seed=12), {"text": "the film was so so", "label": "mixed"}]
    data = {**single_label_data, "test": write_csv(tmp_path / "test.csv", rows)}
    config = make_config(tmp_path, tiny_mean_model_dir, data)
    with pytest.raises(DataError, match="'mixed'"):
        train(config)
    assert not Path(config["output_dir"]).exists()


def test_a_single_class_is_refused(tmp_path, tiny_mean_model_dir):
    rows = [row for row in sentiment_rows(40, seed=13) if row["label"] == "positive"]
    data = {"train": write_csv(tmp_path / "train.csv", rows)}
    with pytest.raises(DataError, match="at least two"):
        train(make_config(tmp_path, tiny_mean_model_dir, data))


# ------------------------------------------------------------------------------------------ selection metrics


@pytest.mark.parametrize(
    ("metric", "fragment"),
    [("f1_macr", "f1_macro"), ("mse", "accuracy"), ("subset_accuracy", "f1_macro")],
)
def test_selection_metric_must_be_reported_by_the_task(
    tmp_path, tiny_mean_model_dir, single_label_data, metric, fragment
):
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, train={"early_stopping": {"metric": metric}})
    with pytest.raises(ConfigError) as excinfo:
        train(config)
    message = str(excinfo.value)
    assert f"train.early_stopping.metric {metric!r} is not reported" in message
    assert "Choose one of:" in message and fragment in message
    assert not Path(config["output_dir"]).exists()


def test_classification_metric_refused_for_regression(tmp_path, tiny_mean_model_dir, regression_data):
    config = make_config(
        tmp_path, tiny_mean_model_dir, regression_data, train={"early_stopping": {"metric": "f1_macro"}}
    )
    with pytest.raises(ConfigError, match="Choose one of: mse"):
        train(config)


def test_binary_only_metric_refused_for_three_classes(tmp_path, tiny_mean_model_dir):
    rows = [
        {"text": row["text"], "label": "neutral" if i % 3 == 0 else row["label"]}
        for i, row in enumerate(sentiment_rows(60, seed=11))
    ]
    data = {"train": write_csv(tmp_path / "three.csv", rows)}
    config = make_config(
        tmp_path, tiny_mean_model_dir, data, train={"epochs": 1, "early_stopping": {"metric": "roc_auc"}}
    )
    with pytest.raises(ConfigError, match="roc_auc"):
        train(config)
