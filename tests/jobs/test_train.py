"""The train job end to end on a tiny random BERT: the run folder and every artifact in it, the
resolved config that replays, reproducibility, gradient accumulation, early stopping and best-model
selection, model-source errors, and the CLI `train` command.

Every run here trains a 2-layer, 32-wide model on ~100 rows for a few dozen steps (about 1-2 s on CPU).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from conftest import assert_same_weights, invoke_cli, make_config, read_json, saved_weights, without_timings

import tunewise
from tunewise.errors import ConfigError
from tunewise.prepare import defaults

LEARN = {"epochs": 5, "learning_rate": 3e-3}  # enough for the tiny models to reach ~100% on the templates
STAGES = (  # per-stage wall times every text-classification run records (check and fairness are off here)
    "prepare",
    "encoding",
    "build_model",
    "train",
    "training",
    "validation_during_training",
    "final_evaluation",
    "save",
    "privacy_audit",
    "report",
    "total",
)


def train(config: dict, **kwargs: Any) -> tunewise.Run:
    return tunewise.train(config, show_progress=False, **kwargs)


def validation_records(history: list[dict]) -> list[dict]:
    return [record for record in history if record.get("split") == "validation"]


# ------------------------------------------------------------------------------------------ shared runs


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_model_dir, single_label_data) -> tunewise.Run:
    """String labels, stock [CLS] head (the model folder declares no pooling); method and precision auto."""
    folder = tmp_path_factory.mktemp("cls-run")
    config = make_config(
        folder,
        tiny_model_dir,
        single_label_data,
        strategy={"method": "auto"},
        train={**LEARN, "precision": "auto"},
    )
    return train(config)


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> tunewise.Run:
    """String labels, mean-pooled head (the model folder has 1_Pooling/config.json)."""
    folder = tmp_path_factory.mktemp("mean-run")
    return train(make_config(folder, tiny_mean_model_dir, single_label_data, train=LEARN))


# ------------------------------------------------------------------------------------------ run folder


def test_run_folder_holds_every_artifact(cls_run):
    run_dir = cls_run.run_dir
    for name in (
        "config.yaml",
        "metrics.json",
        "history.jsonl",
        "predictions.csv",
        "run.json",
        "plots/loss.png",
        "plots/confusion_validation.png",
        "plots/confusion_test.png",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "model/tokenizer_config.json",
    ):
        assert (run_dir / name).is_file(), f"{name} missing from the run folder"
        assert (run_dir / name).stat().st_size > 0
    assert (run_dir / "plots" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_yaml_replays_with_auto_settings_resolved(cls_run, tiny_model_dir):
    saved = tunewise.load_config(cls_run.run_dir / "config.yaml")
    assert saved.model == str(tiny_model_dir)
    assert saved.data.max_length == 32
    assert saved.strategy.pooling == "cls"  # auto resolved: no 1_Pooling folder
    assert saved.strategy.method == "full"  # auto resolved: full fine-tuning for text models
    # auto resolved: bf16 on a CPU that computes it in hardware, else fp32
    assert saved.train.precision == ("bf16" if defaults.cpu_computes_bf16() else "fp32")
    assert saved.train.early_stopping.metric == "f1_macro"  # auto resolved for single-label
    assert saved == cls_run.config
    requested = read_json(cls_run.run_dir / "run.json")["requested_config"]
    assert requested["strategy"]["method"] == "auto" and requested["train"]["precision"] == "auto"


def test_metrics_json_has_validation_and_test_metrics(cls_run):
    metrics = read_json(cls_run.run_dir / "metrics.json")
    assert set(metrics) == {"validation", "test"}
    for split in ("validation", "test"):
        for key in ("accuracy", "f1_macro", "confusion_matrix", "ece", "per_class", "loss", "n"):
            assert key in metrics[split], f"{split} metrics lack {key}"
        assert set(metrics[split]["per_class"]) == {"negative", "positive"}
    assert metrics["test"]["n"] == 40
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == 40
    assert metrics == cls_run.metrics


def test_history_jsonl_records_training_and_validation(cls_run):
    lines = (cls_run.run_dir / "history.jsonl").read_text(encoding="utf-8").splitlines()
    history = [json.loads(line) for line in lines]
    assert history == cls_run.history
    losses = [record for record in history if "loss" in record and "split" not in record]
    assert losses and all(record["lr"] >= 0 and record["loss"] > 0 for record in losses)
    evaluations = validation_records(history)
    assert [record["epoch"] for record in evaluations] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert all("f1_macro" in record["metrics"] for record in evaluations)


def test_run_json_records_what_makes_the_run_replayable(cls_run, single_label_data):
    record = read_json(cls_run.run_dir / "run.json")
    assert record["status"] == "finished"
    assert record["seed"] == 0
    assert record["learning_rate"] == pytest.approx(3e-3)
    assert set(record["data_sha256"]) == {"train", "test"}
    assert all(len(digest) == 64 for digest in record["data_sha256"].values())
    assert record["rows"]["test"] == 40 and record["rows"]["train"] + record["rows"]["validation"] == 96
    for package in ("torch", "transformers", "tunewise"):
        assert record["versions"][package] not in ("", "not installed")
    durations = record["durations_seconds"]
    assert set(STAGES) <= set(durations), f"missing stages: {set(STAGES) - set(durations)}"
    assert all(seconds >= 0 for seconds in durations.values())
    assert durations["total"] >= durations["train"] >= durations["training"] >= 0
    assert durations["total"] >= durations["prepare"] >= durations["encoding"]
    assert record["parameters"]["trainable"] == record["parameters"]["total"] > 0  # method: full
    assert record["steps"] == 5 * 11  # 86 training rows / batch 8 = 11 steps per epoch
    assert record["requested_config"]["train"]["learning_rate"] == pytest.approx(3e-3)
    assert record["metrics"] == cls_run.metrics
    task = record["task"]
    for key in ("name", "problem_type", "text_columns", "label_names", "targets", "metrics", "default_metric"):
        assert key in task, f"run.json task facts lack {key}"
    assert task["name"] == "text-classification"
    assert task["problem_type"] == "single_label"
    assert task["label_names"] == ["negative", "positive"]
    assert task["text_columns"] == ["text"]
    assert task["default_metric"] == "f1_macro" and "f1_macro" in task["metrics"]
    assert task["capabilities"]["membership_inference"] is True


def test_predictions_csv_pairs_test_rows_with_predictions(cls_run, single_label_data):
    predictions = pd.read_csv(cls_run.run_dir / "predictions.csv")
    test = pd.read_csv(single_label_data["test"])
    assert len(predictions) == len(test)
    assert predictions["text"].tolist() == test["text"].tolist()
    assert predictions["label"].tolist() == test["label"].tolist()
    assert {"predicted_label", "score", "prob_negative", "prob_positive"} <= set(predictions.columns)
    assert set(predictions["predicted_label"]) <= {"negative", "positive"}
    accuracy = (predictions["predicted_label"] == predictions["label"]).mean()
    assert accuracy == pytest.approx(cls_run.metrics["test"]["accuracy"])


def test_tiny_models_learn_the_templates(cls_run, mean_run):
    assert mean_run.metrics["test"]["accuracy"] >= 0.9
    assert cls_run.metrics["test"]["roc_auc"] >= 0.9


# ------------------------------------------------------------------------------------------ reproducibility


def test_same_seed_gives_identical_weights(tmp_path, tiny_mean_model_dir, single_label_data):
    first = train(
        make_config(
            tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(tmp_path / "a"), train={"epochs": 1}
        )
    )
    second = train(
        make_config(
            tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(tmp_path / "b"), train={"epochs": 1}
        )
    )
    assert_same_weights(saved_weights(first.run_dir / "model"), saved_weights(second.run_dir / "model"))
    assert without_timings(first.history) == without_timings(second.history)
    assert first.metrics == second.metrics


def test_another_seed_gives_other_weights(tmp_path, tiny_mean_model_dir, single_label_data):
    first = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            output_dir=str(tmp_path / "a"),
            train={"epochs": 1, "seed": 1},
        )
    )
    second = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            output_dir=str(tmp_path / "b"),
            train={"epochs": 1, "seed": 2},
        )
    )
    a, b = saved_weights(first.run_dir / "model"), saved_weights(second.run_dir / "model")
    assert any(not torch.equal(a[name], b[name]) for name in a)


def test_gradient_accumulation_sums_batches_into_fewer_steps(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            train={"epochs": 1, "batch_size": 8, "gradient_accumulation": 2},
        )
    )
    record = read_json(run.run_dir / "run.json")
    assert record["steps"] == 6  # 11 batches: 5 full accumulations and the epoch's last, odd batch
    assert record["learning_rate"] == pytest.approx(3e-3)
    assert record["rows"]["train"] == 86


# ------------------------------------------------------------------------------------------ early stopping


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path, tiny_mean_model_dir, single_label_data):
    # min_delta is larger than any possible change in loss, so the second evaluation "does not improve"
    stopping = {"patience": 1, "metric": "loss", "min_delta": 10.0}
    run = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            train={**LEARN, "eval_every": 1, "early_stopping": stopping},
        )
    )
    record = read_json(run.run_dir / "run.json")
    assert record["stopped_early"] is True
    assert record["steps"] == 2 < 5 * 11
    assert record["best_step"] == 1
    evaluations = validation_records(run.history)
    assert [e["step"] for e in evaluations] == [1, 2]
    best = evaluations[0]["metrics"]
    assert run.metrics["validation"]["loss"] == pytest.approx(best["loss"], abs=1e-6)
    assert run.metrics["validation"]["loss"] != pytest.approx(evaluations[1]["metrics"]["loss"], abs=1e-9)


def test_best_evaluation_is_the_saved_model(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            train={**LEARN, "eval_every": 4, "early_stopping": {"patience": 1, "metric": "loss"}},
        )
    )
    record = read_json(run.run_dir / "run.json")
    evaluations = validation_records(run.history)
    assert evaluations, "no validation records in history"
    best = min(evaluations, key=lambda e: e["metrics"]["loss"])
    assert record["best_step"] == best["step"]
    assert run.metrics["validation"]["loss"] == pytest.approx(best["metrics"]["loss"], abs=1e-6)
    if record["stopped_early"]:
        assert record["steps"] < 5 * 11
        later = [e for e in evaluations if e["step"] > best["step"]]
        assert len(later) == 1  # patience 1: one evaluation without improvement stops


def test_without_early_stopping_the_final_model_is_kept(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(tmp_path, tiny_mean_model_dir, single_label_data, train={"epochs": 1, "early_stopping": None})
    )
    record = read_json(run.run_dir / "run.json")
    assert record["steps"] == 11 and record["stopped_early"] is False
    last = validation_records(run.history)[-1]
    assert last["step"] == 11
    assert run.metrics["validation"]["loss"] == pytest.approx(last["metrics"]["loss"], abs=1e-6)


# ------------------------------------------------------------------------------------------ model errors


def test_missing_model_folder_is_named(tmp_path, single_label_data):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(ConfigError) as excinfo:
        train(make_config(tmp_path, missing, single_label_data))
    assert str(missing) in str(excinfo.value) and "does not exist" in str(excinfo.value)


def test_folder_without_config_json_is_not_a_model(tmp_path, single_label_data):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"has no config\.json"):
        train(make_config(tmp_path, folder, single_label_data))


# ------------------------------------------------------------------------------------------ CLI


def test_cli_train_with_a_bad_config_prints_an_error_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: t.csv\ntrain:\n  epoch: 3\n", encoding="utf-8")
    result = invoke_cli("train", path)
    assert result.exit_code == 1
    assert "error:" in result.output
    assert "Did you mean 'epochs'" in result.output
    assert "Traceback" not in result.output
    missing = invoke_cli("train", tmp_path / "missing.yaml")
    assert missing.exit_code == 1 and "Config file not found" in missing.output and "Traceback" not in missing.output


def test_cli_train_with_bad_data_prints_an_error(tmp_path, tiny_mean_model_dir):
    config = make_config(tmp_path, tiny_mean_model_dir, {"train": str(tmp_path / "nope.csv")})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke_cli("train", path)
    assert result.exit_code == 1
    assert "error:" in result.output and "nope.csv" in result.output
    assert "Traceback" not in result.output


def test_cli_train_runs_a_yaml_config_with_overrides(tmp_path, tiny_mean_model_dir, single_label_data):
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke_cli("train", path, "--set", "train.epochs=1", "--set", f"output_dir={tmp_path / 'cli-run'}")
    assert result.exit_code == 0, result.output
    assert "done:" in result.output
    record = read_json(tmp_path / "cli-run" / "run.json")
    assert record["status"] == "finished" and record["steps"] == 11
    again = invoke_cli("train", path, "--set", "train.epochs=1", "--set", f"output_dir={tmp_path / 'cli-run'}")
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_runs_in_one_process_may_differ_in_precision(tmp_path, tiny_model_dir, single_label_data) -> None:
    """Accelerate keeps one state per process and refuses a second precision; each run sets its own (a
    notebook that trains in fp32, then in bf16)."""
    for number, precision in enumerate(("fp32", "bf16", "fp32")):
        config = make_config(tmp_path / str(number), tiny_model_dir, single_label_data, train={"precision": precision})
        assert train(config).config.train.precision == precision
