"""End-to-end training on a tiny random BERT: run folder, predictions, export, problem types, strategies,
reproducibility, exact resume, early stopping, run-folder protection, selection metrics and the CLI.

Every run here trains a 2-layer, 32-wide model on ~100 rows for a few dozen steps (about 1-2 s on CPU).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from conftest import make_config, sentiment_rows, write_csv
from safetensors.torch import load_file
from typer.testing import CliRunner

import tunewise
import tunewise.training.loop as training_loop
from tunewise.cli import app
from tunewise.errors import ConfigError, DataError

# Texts in the training templates' style, so a trained tiny model classifies them confidently.
POSITIVE_TEXTS = ["the film was really great overall", "this book was so excellent today"]
NEGATIVE_TEXTS = ["the movie was very awful again", "the hotel was rather terrible honestly"]
TEXTS = POSITIVE_TEXTS + NEGATIVE_TEXTS
LEARN = {"epochs": 5, "learning_rate": 3e-3}  # enough for the tiny models to reach ~100% on the templates


def train(config: dict, **kwargs: Any) -> tunewise.Run:
    return tunewise.train(config, show_progress=False, **kwargs)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def without_timings(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


def validation_records(history: list[dict]) -> list[dict]:
    return [record for record in history if record.get("split") == "validation"]


def backbone(run_dir: Path) -> dict[str, torch.Tensor]:
    """The fine-tuned encoder weights, keyed like the pretrained BertModel folder ("encoder." removed)."""
    return {
        name.removeprefix("encoder."): value
        for name, value in weights(run_dir / "model").items()
        if name.startswith("encoder.")
    }


def assert_same_weights(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    different = [name for name in left if not torch.equal(left[name], right[name])]
    assert not different, f"weights differ: {different[:5]}"


# ------------------------------------------------------------------------------------------ shared runs


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_model_dir, single_label_data) -> tunewise.Run:
    """String labels, stock [CLS] head (the model folder declares no pooling)."""
    folder = tmp_path_factory.mktemp("cls-run")
    return train(make_config(folder, tiny_model_dir, single_label_data, train=LEARN))


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
    assert saved.train.early_stopping.metric == "f1_macro"  # auto resolved for single-label
    assert saved == cls_run.config


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
    assert {"total", "training", "encoding"} <= set(record["durations_seconds"])
    assert record["durations_seconds"]["total"] >= record["durations_seconds"]["training"] >= 0
    assert record["parameters"]["trainable"] == record["parameters"]["total"] > 0  # method: full
    assert record["steps"] == 5 * 11  # 86 training rows / batch 8 = 11 steps per epoch
    assert record["requested_config"]["train"]["learning_rate"] == pytest.approx(3e-3)
    assert record["metrics"] == cls_run.metrics


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


# ------------------------------------------------------------------------------------------ prediction


def test_run_predict_returns_label_names(mean_run):
    predictions = mean_run.predict(TEXTS)
    assert len(predictions) == len(TEXTS)
    for prediction in predictions:
        assert prediction["label"] in {"negative", "positive"}
        assert 0.5 <= prediction["score"] <= 1.0
        assert set(prediction["probabilities"]) == {"negative", "positive"}
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert [p["label"] for p in predictions] == ["positive"] * 2 + ["negative"] * 2
    (single,) = mean_run.predict("the film was really great overall")  # one string works too
    assert single["label"] == "positive"
    assert single["score"] == pytest.approx(predictions[0]["score"], abs=1e-5)


def test_load_predicts_like_the_finished_run(mean_run, cls_run):
    for run in (mean_run, cls_run):
        expected = run.predict(TEXTS)
        for path in (run.run_dir, run.run_dir / "model", str(run.run_dir)):
            loaded = tunewise.load(path, device="cpu")
            got = loaded.predict(TEXTS)
            assert [p["label"] for p in got] == [p["label"] for p in expected]
            for a, b in zip(got, expected, strict=True):
                assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_load_refuses_a_folder_that_is_not_a_run(tmp_path, tiny_model_dir):
    with pytest.raises(ConfigError, match="not a tunewise run folder"):
        tunewise.load(tmp_path)
    copy = tmp_path / "no-config"
    (copy / "model").mkdir(parents=True)
    shutil.copy(tiny_model_dir / "config.json", copy / "model" / "config.json")
    with pytest.raises(ConfigError, match=r"no config\.yaml"):
        tunewise.load(copy)


def test_evaluate_on_a_labelled_file_matches_training_metrics(mean_run, single_label_data):
    metrics, predictions = tunewise.load(mean_run.run_dir).evaluate(single_label_data["test"])
    assert metrics["accuracy"] == pytest.approx(mean_run.metrics["test"]["accuracy"])
    assert metrics["loss"] == pytest.approx(mean_run.metrics["test"]["loss"], rel=1e-5)
    assert len(predictions) == 40 and "predicted_label" in predictions.columns


# ------------------------------------------------------------------------------------------ labels and export


def test_string_labels_are_stored_as_id2label(mean_run):
    model_config = read_json(mean_run.run_dir / "model" / "config.json")
    assert model_config["id2label"] == {"0": "negative", "1": "positive"}
    assert model_config["label2id"] == {"negative": 0, "positive": 1}
    assert model_config["problem_type"] == "single_label_classification"


def test_integer_labels_keep_their_names(tmp_path, tiny_mean_model_dir, integer_label_data):
    run = train(make_config(tmp_path, tiny_mean_model_dir, integer_label_data, train=LEARN))
    model_config = read_json(run.run_dir / "model" / "config.json")
    assert model_config["id2label"] == {"0": "0", "1": "1"}
    assert set(run.metrics["test"]["per_class"]) == {"0", "1"}
    assert {p["label"] for p in run.predict(TEXTS)} <= {"0", "1"}
    assert run.metrics["test"]["accuracy"] >= 0.8
    assert set(pd.read_csv(run.run_dir / "predictions.csv")["predicted_label"]) <= {0, 1}


def test_stock_cls_head_loads_in_a_plain_transformers_pipeline(cls_run):
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(cls_run.run_dir / "model"), device="cpu")
    outputs = classifier(TEXTS)
    expected = cls_run.predict(TEXTS)
    assert [o["label"] for o in outputs] == [p["label"] for p in expected]
    for output, prediction in zip(outputs, expected, strict=True):
        assert output["score"] == pytest.approx(prediction["score"], abs=1e-5)
    assert read_json(cls_run.run_dir / "model" / "config.json")["architectures"] == ["BertForSequenceClassification"]


def test_mean_pooled_head_loads_in_transformers_with_trust_remote_code(mean_run):
    from transformers import AutoModelForSequenceClassification, pipeline

    model_dir = mean_run.run_dir / "model"
    model_config = read_json(model_dir / "config.json")
    assert model_config["pooling"] == "mean"
    assert model_config["model_type"] == "tunewise_pooled_encoder"
    module, _, class_name = model_config["auto_map"]["AutoModelForSequenceClassification"].rpartition(".")
    assert class_name == "PooledModelForSequenceClassification"
    assert (model_dir / f"{module}.py").is_file()  # the modeling code travels with the weights

    classifier = pipeline("text-classification", model=str(model_dir), trust_remote_code=True, device="cpu")
    outputs = classifier(TEXTS)
    expected = mean_run.predict(TEXTS)
    assert [o["label"] for o in outputs] == [p["label"] for p in expected]
    assert {o["label"] for o in outputs} == {"negative", "positive"}
    for output, prediction in zip(outputs, expected, strict=True):
        assert output["score"] == pytest.approx(prediction["score"], abs=1e-5)
    loaded = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True)
    assert type(loaded).__name__ == "PooledModelForSequenceClassification"


def test_mean_pooled_model_without_trust_remote_code_fails_loudly(mean_run):
    from transformers import pipeline

    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("text-classification", model=str(mean_run.run_dir / "model"), device="cpu")


# ------------------------------------------------------------------------------------------ problem types


def test_multi_label(tmp_path, tiny_mean_model_dir, multi_label_data):
    run = train(make_config(tmp_path, tiny_mean_model_dir, multi_label_data, train=LEARN))
    model_config = read_json(run.run_dir / "model" / "config.json")
    assert model_config["problem_type"] == "multi_label_classification"
    assert model_config["id2label"] == {"0": "politics", "1": "sports", "2": "tech"}
    threshold = model_config["tunewise_threshold"]
    assert 0.0 < threshold < 1.0
    assert tunewise.load(run.run_dir).task.threshold == pytest.approx(threshold)
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
    refused = invoke("predict", run.run_dir, "--text", "the film was good")
    assert refused.exit_code == 1 and "sentence pairs" in refused.output
    pair_file = tmp_path / "pairs.csv"
    pd.DataFrame(pairs, columns=["premise", "hypothesis"]).to_csv(pair_file, index=False)
    from_file = invoke("predict", run.run_dir, "--input", pair_file)
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout.splitlines()[0].startswith("premise,hypothesis,predicted_label")


# ------------------------------------------------------------------------------------------ strategies


def test_freeze_backbone_trains_only_the_head(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            strategy={"method": "freeze_backbone"},
            train={"epochs": 1},
        )
    )
    parameters = read_json(run.run_dir / "run.json")["parameters"]
    assert parameters["trainable"] == 32 * 2 + 2  # the linear classifier only
    assert parameters["total"] > 100 * parameters["trainable"]
    pretrained = weights(tiny_mean_model_dir)
    tuned = backbone(run.run_dir)
    assert tuned, "no encoder weights found in the saved model"
    assert_same_weights(tuned, {name: pretrained[name] for name in tuned})


def test_last_n_layers_trains_only_the_top_layers(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            strategy={"method": "last_n_layers", "n_layers": 1},
            train={"epochs": 1},
        )
    )
    pretrained = weights(tiny_mean_model_dir)
    tuned = backbone(run.run_dir)
    frozen = [name for name in tuned if name.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [name for name in tuned if name.startswith("encoder.layer.1.")]
    assert frozen and trained
    assert_same_weights({n: tuned[n] for n in frozen}, {n: pretrained[n] for n in frozen})
    changed = [name for name in trained if not torch.equal(tuned[name], pretrained[name])]
    assert len(changed) == len(trained), f"layer 1 weights unchanged: {set(trained) - set(changed)}"


def test_last_n_layers_beyond_the_model_is_refused_before_anything_is_written(
    tmp_path, tiny_mean_model_dir, single_label_data
):
    config = make_config(
        tmp_path, tiny_mean_model_dir, single_label_data, strategy={"method": "last_n_layers", "n_layers": 5}
    )
    with pytest.raises(ConfigError, match="at most 2") as excinfo:
        train(config)
    assert "n_layers is 5" in str(excinfo.value)
    assert not Path(config["output_dir"]).exists()


def test_lora_saves_a_merged_model_and_the_adapter(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path,
            tiny_mean_model_dir,
            single_label_data,
            strategy={"method": "lora", "lora": {"target_modules": ["query", "value"], "r": 4}},
            train=LEARN,
        )
    )
    parameters = read_json(run.run_dir / "run.json")["parameters"]
    assert 0 < parameters["trainable"] < parameters["total"] / 2

    adapter = run.run_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert any(adapter.glob("adapter_model.*"))
    assert set(read_json(adapter / "adapter_config.json")["target_modules"]) == {"query", "value"}

    merged = weights(run.run_dir / "model")
    assert not [name for name in merged if "lora" in name or "base_model" in name or "modules_to_save" in name]
    pretrained = weights(tiny_mean_model_dir)
    tuned = backbone(run.run_dir)
    assert set(tuned) == {name for name in pretrained if not name.startswith("pooler.")}
    adapted = [name for name in tuned if name.endswith(("query.weight", "value.weight"))]
    untouched = [name for name in tuned if name.endswith(("key.weight", "output.dense.weight"))]
    assert all(not torch.equal(tuned[name], pretrained[name]) for name in adapted), "LoRA updates were not merged"
    assert all(torch.equal(tuned[name], pretrained[name]) for name in untouched)

    loaded = tunewise.load(run.run_dir)  # a plain transformers model: no peft wrapper
    assert "peft" not in type(loaded.model).__module__
    assert [p["label"] for p in loaded.predict(TEXTS)] == [p["label"] for p in run.predict(TEXTS)]


def test_lora_unknown_target_lists_the_choices(tmp_path, tiny_mean_model_dir, single_label_data):
    config = make_config(
        tmp_path,
        tiny_mean_model_dir,
        single_label_data,
        strategy={"method": "lora", "lora": {"target_modules": ["nonexistent"]}},
    )
    with pytest.raises(ConfigError) as excinfo:
        train(config)
    message = str(excinfo.value)
    assert "nonexistent" in message and "Choose among" in message
    for name in ("query", "key", "value", "dense"):
        assert name in message
    assert not Path(config["output_dir"]).exists()


def test_layerwise_lr_decay_slows_the_lower_layers(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from tunewise.models.strategies import parameter_groups

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    names = {id(parameter): name for name, parameter in model.named_parameters()}

    def lr_of(groups: list[dict]) -> dict[str, float]:
        return {names[id(p)]: group["lr"] for group in groups for p in group["params"]}

    rates = lr_of(parameter_groups(model, learning_rate=1.0, weight_decay=0.01, decay=0.5))
    assert len(rates) == len(names)  # every trainable parameter is in exactly one group
    assert rates["bert.embeddings.word_embeddings.weight"] == pytest.approx(0.125)
    assert rates["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(0.25)
    assert rates["bert.encoder.layer.1.attention.self.query.weight"] == pytest.approx(0.5)
    assert rates["classifier.weight"] == pytest.approx(1.0)
    assert rates["bert.pooler.dense.weight"] == pytest.approx(1.0)

    flat = lr_of(parameter_groups(model, learning_rate=1.0, weight_decay=0.01, decay=1.0))
    assert set(flat.values()) == {1.0}

    groups = parameter_groups(model, learning_rate=1.0, weight_decay=0.01, decay=0.5)
    decay_of = {names[id(p)]: group["weight_decay"] for group in groups for p in group["params"]}
    assert decay_of["bert.encoder.layer.0.attention.self.query.bias"] == 0.0
    assert decay_of["bert.embeddings.LayerNorm.weight"] == 0.0
    assert decay_of["bert.encoder.layer.0.attention.self.query.weight"] == 0.01


def test_layerwise_lr_decay_skips_frozen_parameters(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from tunewise.config.schema import StrategyConfig
    from tunewise.models.strategies import apply_strategy, parameter_groups

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    apply_strategy(model, StrategyConfig(method="last_n_layers", n_layers=1))
    grouped = [p for group in parameter_groups(model, 1.0, 0.0, 0.5) for p in group["params"]]
    assert all(p.requires_grad for p in grouped)
    assert len(grouped) == sum(p.requires_grad for p in model.parameters())


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
    assert_same_weights(weights(first.run_dir / "model"), weights(second.run_dir / "model"))
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
    a, b = weights(first.run_dir / "model"), weights(second.run_dir / "model")
    assert any(not torch.equal(a[name], b[name]) for name in a)


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C right after a checkpoint was written."""


RESUME_TRAIN = {"epochs": 3, "learning_rate": 3e-3}  # 33 steps of 11 per epoch; a loss line every 10 steps


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> tunewise.Run:
    folder = tmp_path_factory.mktemp("uninterrupted")
    return train(make_config(folder, tiny_mean_model_dir, single_label_data, train=RESUME_TRAIN))


@pytest.mark.parametrize(
    ("checkpoint_every", "interrupt_after", "resumes_at"),
    [
        (3, 4, 12),  # mid-epoch 2 and between two loss lines (steps 10 and 20)
        (11, 1, 11),  # exactly at the end of epoch 1, before its evaluation ran
    ],
)
def test_resume_matches_an_uninterrupted_run(
    tmp_path,
    monkeypatch,
    tiny_mean_model_dir,
    single_label_data,
    uninterrupted,
    checkpoint_every,
    interrupt_after,
    resumes_at,
):
    config = make_config(
        tmp_path, tiny_mean_model_dir, single_label_data, train={**RESUME_TRAIN, "checkpoint_every": checkpoint_every}
    )
    real_save = training_loop.save_checkpoint
    saved: list[int] = []

    def save_then_crash(folder, step, payload, keep_last):
        path = real_save(folder, step, payload, keep_last)
        saved.append(step)
        if len(saved) == interrupt_after:
            raise Interrupted
        return path

    monkeypatch.setattr(training_loop, "save_checkpoint", save_then_crash)
    with pytest.raises(Interrupted):
        train(config)
    monkeypatch.setattr(training_loop, "save_checkpoint", real_save)
    assert saved[-1] == resumes_at
    run_dir = Path(config["output_dir"])
    assert read_json(run_dir / "run.json")["status"] == "training"
    assert not (run_dir / "model").exists()

    resumed = train(config, resume=True)
    assert_same_weights(weights(resumed.run_dir / "model"), weights(uninterrupted.run_dir / "model"))
    # same losses, learning rates and evaluations (wall-clock seconds differ, of course)
    assert without_timings(resumed.history) == without_timings(uninterrupted.history)
    assert resumed.metrics == uninterrupted.metrics
    record, reference = read_json(run_dir / "run.json"), read_json(uninterrupted.run_dir / "run.json")
    assert record["status"] == "finished"
    assert (record["steps"], record["best_step"]) == (reference["steps"], reference["best_step"])


def test_resume_refuses_changed_data(tmp_path, monkeypatch, tiny_mean_model_dir):
    train_file = tmp_path / "train.csv"
    data = {"train": write_csv(train_file, sentiment_rows(96, seed=1))}
    config = make_config(tmp_path, tiny_mean_model_dir, data, train={"epochs": 1, "checkpoint_every": 3})
    real_save = training_loop.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Interrupted

    monkeypatch.setattr(training_loop, "save_checkpoint", save_then_crash)
    with pytest.raises(Interrupted):
        train(config)
    monkeypatch.setattr(training_loop, "save_checkpoint", real_save)
    write_csv(train_file, sentiment_rows(96, seed=99))  # same file name, other rows
    with pytest.raises(tunewise.TunewiseError, match="data"):
        train(config, resume=True)


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


def test_resume_keeps_only_the_newest_checkpoints(tmp_path, tiny_mean_model_dir, single_label_data):
    run = train(
        make_config(
            tmp_path, tiny_mean_model_dir, single_label_data, train={"epochs": 1, "checkpoint_every": 2, "keep_last": 2}
        )
    )
    checkpoints = sorted(p.name for p in (run.run_dir / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-00000008", "checkpoint-00000010"]


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


# ------------------------------------------------------------------------------------------ run folder protection


@pytest.fixture(scope="module")
def protected_run(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("protected")
    config = make_config(folder, tiny_mean_model_dir, single_label_data, train={"epochs": 1})
    train(config)
    return Path(config["output_dir"]), config


@pytest.fixture
def existing_run(tmp_path, protected_run) -> tuple[Path, dict]:
    """A finished run copied into tmp_path, and its config pointing there."""
    source, config = protected_run
    run_dir = tmp_path / "existing"
    shutil.copytree(source, run_dir)
    return run_dir, {**config, "output_dir": str(run_dir)}


def test_training_into_an_existing_run_is_refused(existing_run):
    run_dir, config = existing_run
    before = (run_dir / "run.json").read_bytes()
    with pytest.raises(ConfigError) as excinfo:
        train(config)
    message = str(excinfo.value)
    assert "--overwrite" in message and "--resume" in message and "this run already" in message
    assert (run_dir / "run.json").read_bytes() == before


def test_a_different_config_into_an_existing_run_is_refused(existing_run):
    _, config = existing_run
    changed = {**config, "train": {**config["train"], "learning_rate": 1e-3}}
    with pytest.raises(ConfigError, match="holds a different run"):
        train(changed)


def test_overwrite_replaces_the_run_and_keeps_user_files(existing_run):
    run_dir, config = existing_run
    (run_dir / "notes.txt").write_text("my notes", encoding="utf-8")
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "stale").write_text("old", encoding="utf-8")
    changed = {**config, "train": {**config["train"], "seed": 5}}
    run = train(changed, overwrite=True)
    assert (run_dir / "notes.txt").read_text(encoding="utf-8") == "my notes"
    assert not (run_dir / "checkpoints" / "stale").exists()
    assert read_json(run_dir / "run.json")["seed"] == 5
    assert read_json(run_dir / "run.json")["status"] == "finished"
    assert run.run_dir == run_dir


def test_overwrite_keeps_the_old_run_when_the_new_config_fails_its_checks(existing_run):
    run_dir, config = existing_run
    before = (run_dir / "metrics.json").read_bytes()
    broken = {**config, "strategy": {"method": "lora", "lora": {"target_modules": ["no_such_module"]}}}
    with pytest.raises(ConfigError, match="no_such_module"):
        train(broken, overwrite=True)
    assert (run_dir / "metrics.json").read_bytes() == before
    assert (run_dir / "model" / "config.json").is_file()


def test_a_folder_with_other_files_is_never_cleared(tmp_path, tiny_mean_model_dir, single_label_data):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "thesis.tex").write_text("precious", encoding="utf-8")
    (run_dir / "model").mkdir()
    (run_dir / "model" / "weights.bin").write_text("also precious", encoding="utf-8")
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(run_dir))
    for kwargs in ({}, {"overwrite": True}):
        with pytest.raises(ConfigError, match="already holds other files") as excinfo:
            train(config, **kwargs)
        assert "thesis.tex" in str(excinfo.value)
    assert (run_dir / "thesis.tex").read_text(encoding="utf-8") == "precious"
    assert (run_dir / "model" / "weights.bin").read_text(encoding="utf-8") == "also precious"


def test_resume_with_a_changed_config_is_refused(existing_run):
    _, config = existing_run
    changed = {**config, "train": {**config["train"], "batch_size": 4}}
    with pytest.raises(ConfigError) as excinfo:
        train(changed, resume=True)
    assert "train.batch_size" in str(excinfo.value)


def test_resume_needs_a_run_and_excludes_overwrite(tmp_path, existing_run, tiny_mean_model_dir, single_label_data):
    _, config = existing_run
    with pytest.raises(ConfigError, match="not both"):
        train(config, resume=True, overwrite=True)
    fresh = make_config(tmp_path, tiny_mean_model_dir, single_label_data, output_dir=str(tmp_path / "never-ran"))
    with pytest.raises(ConfigError, match="holds no run to resume"):
        train(fresh, resume=True)


# ------------------------------------------------------------------------------------------ model and data errors


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


# ------------------------------------------------------------------------------------------ CLI


class Result:
    """A CLI result whose `output` has rich's line wrapping undone, so messages can be matched."""

    def __init__(self, result):
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.output = " ".join(result.output.split())


def invoke(*args: Any) -> Result:
    return Result(CliRunner().invoke(app, [str(arg) for arg in args]))


def test_cli_train_with_a_bad_config_prints_an_error_without_traceback(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: t.csv\ntrain:\n  epoch: 3\n", encoding="utf-8")
    result = invoke("train", path)
    assert result.exit_code == 1
    assert "error:" in result.output
    assert "Did you mean 'epochs'" in result.output
    assert "Traceback" not in result.output
    missing = invoke("train", tmp_path / "missing.yaml")
    assert missing.exit_code == 1 and "Config file not found" in missing.output and "Traceback" not in missing.output


def test_cli_train_with_bad_data_prints_an_error(tmp_path, tiny_mean_model_dir):
    config = make_config(tmp_path, tiny_mean_model_dir, {"train": str(tmp_path / "nope.csv")})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke("train", path)
    assert result.exit_code == 1
    assert "error:" in result.output and "nope.csv" in result.output
    assert "Traceback" not in result.output


def test_cli_train_runs_a_yaml_config_with_overrides(tmp_path, tiny_mean_model_dir, single_label_data):
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = invoke("train", path, "--set", "train.epochs=1", "--set", f"output_dir={tmp_path / 'cli-run'}")
    assert result.exit_code == 0, result.output
    assert "done:" in result.output
    record = read_json(tmp_path / "cli-run" / "run.json")
    assert record["status"] == "finished" and record["steps"] == 11
    again = invoke("train", path, "--set", "train.epochs=1", "--set", f"output_dir={tmp_path / 'cli-run'}")
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_cli_predict_text(mean_run):
    result = invoke("predict", mean_run.run_dir, "--text", POSITIVE_TEXTS[0], "--text", NEGATIVE_TEXTS[0])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    header = lines[0].split(",")
    assert header[:2] == ["text", "predicted_label"]
    assert lines[1].startswith(f"{POSITIVE_TEXTS[0]},positive,")
    assert lines[2].startswith(f"{NEGATIVE_TEXTS[0]},negative,")


def test_cli_predict_needs_exactly_one_input(mean_run, tmp_path):
    result = invoke("predict", mean_run.run_dir)
    assert result.exit_code == 1 and "--input" in result.output and "Traceback" not in result.output
    unknown = invoke("predict", tmp_path, "--text", "hello")
    assert unknown.exit_code == 1 and "not a tunewise run folder" in unknown.output


def test_cli_predict_file_writes_csv_and_refuses_to_overwrite(mean_run, tmp_path):
    source = tmp_path / "inputs.csv"
    pd.DataFrame({"text": TEXTS, "id": range(len(TEXTS))}).to_csv(source, index=False)
    output = tmp_path / "out.csv"
    result = invoke("predict", mean_run.run_dir, "--input", source, "--output", output)
    assert result.exit_code == 0, result.output
    written = pd.read_csv(output)
    assert written["text"].tolist() == TEXTS
    assert written["id"].tolist() == list(range(len(TEXTS)))  # the user's own columns are kept
    assert written["predicted_label"].tolist() == ["positive", "positive", "negative", "negative"]

    output.write_text("keep me", encoding="utf-8")
    again = invoke("predict", mean_run.run_dir, "--input", source, "--output", output)
    assert again.exit_code == 1
    assert "already exists" in again.output and "Traceback" not in again.output
    assert output.read_text(encoding="utf-8") == "keep me"


def test_cli_evaluate_prints_the_metrics_table(mean_run, single_label_data, tmp_path):
    output = tmp_path / "metrics.json"
    result = invoke("evaluate", mean_run.run_dir, "--data", single_label_data["test"], "--output", output)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "f1_macro" in result.output and "test.csv" in result.output
    metrics = read_json(output)
    assert metrics["accuracy"] == pytest.approx(mean_run.metrics["test"]["accuracy"])
    again = invoke("evaluate", mean_run.run_dir, "--data", single_label_data["test"], "--output", output)
    assert again.exit_code == 1 and "already exists" in again.output
