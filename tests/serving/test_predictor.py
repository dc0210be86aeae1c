"""Serving a trained run: `tunewise.load`, predict and evaluate, the labels stored in the saved model,
the saved model in plain transformers (stock head, and the mean-pooled head as remote code), and the
CLI `predict` and `evaluate` commands.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import invoke_cli, make_config, read_json

import tunewise
from tunewise.errors import ConfigError
from tunewise.prepare.defaults import cpu_computes_bf16

# Texts in the training templates' style, so a trained tiny model classifies them confidently.
POSITIVE_TEXTS = ["the film was really great overall", "this book was so excellent today"]
NEGATIVE_TEXTS = ["the movie was very awful again", "the hotel was rather terrible honestly"]
TEXTS = POSITIVE_TEXTS + NEGATIVE_TEXTS
LEARN = {"epochs": 5, "learning_rate": 3e-3}  # enough for the tiny models to reach ~100% on the templates


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_model_dir, single_label_data) -> tunewise.Run:
    """String labels, stock [CLS] head (the model folder declares no pooling)."""
    folder = tmp_path_factory.mktemp("cls-run")
    return tunewise.train(make_config(folder, tiny_model_dir, single_label_data, train=LEARN), show_progress=False)


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory, tiny_mean_model_dir, single_label_data) -> tunewise.Run:
    """String labels, mean-pooled head (the model folder has 1_Pooling/config.json)."""
    folder = tmp_path_factory.mktemp("mean-run")
    config = make_config(folder, tiny_mean_model_dir, single_label_data, train=LEARN)
    return tunewise.train(config, show_progress=False)


# ------------------------------------------------------------------------------------------ load, predict, evaluate


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


@pytest.mark.skipif(not cpu_computes_bf16(), reason="a CPU without bf16 in hardware predicts in fp32")
def test_a_run_trained_in_bf16_is_evaluated_as_training_scored_it(tmp_path, tiny_mean_model_dir, single_label_data):
    """The train job scores its test rows under the bf16 autocast Accelerate leaves on the model; the loaded model
    predicts under the same autocast, so its metrics are the run's, not fp32's slightly different ones."""
    config = make_config(tmp_path, tiny_mean_model_dir, single_label_data, train={**LEARN, "precision": "bf16"})
    run = tunewise.train(config, show_progress=False)
    metrics, _ = tunewise.load(run.run_dir).evaluate(single_label_data["test"])
    assert metrics["loss"] == pytest.approx(run.metrics["test"]["loss"], rel=1e-5)


def test_string_labels_are_stored_as_id2label(mean_run):
    model_config = read_json(mean_run.run_dir / "model" / "config.json")
    assert model_config["id2label"] == {"0": "negative", "1": "positive"}
    assert model_config["label2id"] == {"negative": 0, "positive": 1}
    assert model_config["problem_type"] == "single_label_classification"
    assert tunewise.load(mean_run.run_dir).task.labels.names == ["negative", "positive"]


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


# ------------------------------------------------------------------------------------------ CLI


def test_cli_predict_text(mean_run):
    result = invoke_cli("predict", mean_run.run_dir, "--text", POSITIVE_TEXTS[0], "--text", NEGATIVE_TEXTS[0])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    header = lines[0].split(",")
    assert header[:2] == ["text", "predicted_label"]
    assert lines[1].startswith(f"{POSITIVE_TEXTS[0]},positive,")
    assert lines[2].startswith(f"{NEGATIVE_TEXTS[0]},negative,")


def test_cli_predict_needs_exactly_one_input(mean_run, tmp_path):
    result = invoke_cli("predict", mean_run.run_dir)
    assert result.exit_code == 1 and "--input" in result.output and "Traceback" not in result.output
    unknown = invoke_cli("predict", tmp_path, "--text", "hello")
    assert unknown.exit_code == 1 and "not a tunewise run folder" in unknown.output


def test_cli_predict_file_writes_csv_and_refuses_to_overwrite(mean_run, tmp_path):
    source = tmp_path / "inputs.csv"
    pd.DataFrame({"text": TEXTS, "id": range(len(TEXTS))}).to_csv(source, index=False)
    output = tmp_path / "out.csv"
    result = invoke_cli("predict", mean_run.run_dir, "--input", source, "--output", output)
    assert result.exit_code == 0, result.output
    written = pd.read_csv(output)
    assert written["text"].tolist() == TEXTS
    assert written["id"].tolist() == list(range(len(TEXTS)))  # the user's own columns are kept
    assert written["predicted_label"].tolist() == ["positive", "positive", "negative", "negative"]

    output.write_text("keep me", encoding="utf-8")
    again = invoke_cli("predict", mean_run.run_dir, "--input", source, "--output", output)
    assert again.exit_code == 1
    assert "already exists" in again.output and "Traceback" not in again.output
    assert output.read_text(encoding="utf-8") == "keep me"


def test_cli_evaluate_prints_the_metrics_table(mean_run, single_label_data, tmp_path):
    output = tmp_path / "metrics.json"
    result = invoke_cli("evaluate", mean_run.run_dir, "--data", single_label_data["test"], "--output", output)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "f1_macro" in result.output and "test.csv" in result.output
    metrics = read_json(output)
    assert metrics["accuracy"] == pytest.approx(mean_run.metrics["test"]["accuracy"])
    again = invoke_cli("evaluate", mean_run.run_dir, "--data", single_label_data["test"], "--output", output)
    assert again.exit_code == 1 and "already exists" in again.output
