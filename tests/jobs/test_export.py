"""The export job (`tunewise export RUN --format onnx [--quantize int8]`) and loading its folder.

Every encoder task is exported from a tiny run and must predict as the PyTorch run does (the same
labels, tags and answers; scores within 1e-4) on inputs of another batch size and length than the
trace's. The int8 gate is shown refusing a real export (its measured drop, above a tolerance set just
below it), and every bad input is refused with the file and the fix.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import yaml
from conftest import FILLERS, NEGATIVE, POSITIVE, SUBJECTS, invoke_cli, make_config, read_json, write_jsonl

import tunewise
from tunewise.errors import ConfigError, ExportRefused
from tunewise.inference import collate
from tunewise.jobs.export import export_run
from tunewise.runs.exports import export_folder
from tunewise.serving.onnx_model import OnnxModel

LEARN = {"epochs": 2, "learning_rate": 3e-3}  # enough to export; cls_run learns the templates
TEXTS = ["the film was really great overall", "the hotel was rather terrible honestly", "awful"]
PAIRS = [("the film was good", "the movie is very great"), ("the song was bad", "our trip is so lovely"), ("a", "b")]
TOPICS = ["news about the match and the vote", "news about the laptop today", "news about the robot"]
SENTENCES = ["i loved the laptop at lunch", "the senate was very good", "you see it"]
QUESTIONS = [
    ("what was the prize ?", "the film was very good . the prize was lovely . the show was bad ."),
    ("what was the prize ?", "the prize was awful ."),
    ("what was the prize ?", "the song was so great . our trip was quite poor . the prize was superb . the end ."),
]
EXPORT_FIELDS = {
    "format",
    "quantization",
    "model_file",
    "run_dir",
    "task",
    "inputs",
    "outputs",
    "opset",
    "data",
    "gate",
    "max_abs_logit_difference",
    "metrics",
    "speed",
    "file_bytes",
    "hardware",
    "versions",
    "exported_at",
}


def train(tmp_path_factory: pytest.TempPathFactory, name: str, model: Path | str, data: dict, **overrides: Any):
    folder = tmp_path_factory.mktemp(name)
    overrides["train"] = {**LEARN, **overrides.get("train", {})}
    return tunewise.train(make_config(folder, model, data, **overrides), show_progress=False)


# ------------------------------------------------------------------------------------------ the tiny runs


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_model_dir, single_label_data):
    """The stock [CLS] head, string labels; trained until it classifies the test rows (~100 %), so the
    int8 gate has something to lose."""
    return train(tmp_path_factory, "export-cls", tiny_model_dir, single_label_data, train={"epochs": 5})


@pytest.fixture(scope="module")
def mean_run(tmp_path_factory, tiny_mean_model_dir, single_label_data):
    """tunewise's mean-pooled head (saved as remote code)."""
    return train(tmp_path_factory, "export-mean", tiny_mean_model_dir, single_label_data)


@pytest.fixture(scope="module")
def pair_lora_run(tmp_path_factory, tiny_model_dir, pair_data):
    """Sentence pairs, trained with LoRA (model/ holds the merged weights), by a tokenizer that returns
    token_type_ids as BERT's own does (the tiny one's model_input_names leave them out)."""
    model_dir = tmp_path_factory.mktemp("export-pair-model") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    settings = read_json(model_dir / "tokenizer_config.json")
    settings["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    (model_dir / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    data = {**pair_data, "text_column": "premise", "text_pair_column": "hypothesis"}
    return train(tmp_path_factory, "export-pairs", model_dir, data, strategy={"method": "lora"})


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, tiny_model_dir, multi_label_data):
    return train(tmp_path_factory, "export-multi", tiny_model_dir, multi_label_data)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory, tiny_model_dir, regression_data):
    return train(tmp_path_factory, "export-regression", tiny_model_dir, regression_data)


def ner_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    context = ["i", "loved", "the", "film", "at", "lunch", "and", "you", "see", "it", "was", "very", "good"]
    rows = []
    for _ in range(n):
        kind, word = rng.choice([("TECH", w) for w in ("laptop", "chip", "robot")] + [("POL", "senate")])
        before, after = rng.sample(context, rng.randint(1, 3)), rng.sample(context, rng.randint(0, 2))
        rows.append(
            {"tokens": [*before, word, *after], "tags": ["O"] * len(before) + [f"B-{kind}"] + ["O"] * len(after)}
        )
    return rows


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("export-ner-data")
    data = {
        "train": write_jsonl(folder / "train.jsonl", ner_rows(64, 1)),
        "test": write_jsonl(folder / "test.jsonl", ner_rows(24, 2)),
    }
    return train(tmp_path_factory, "export-ner", tiny_model_dir, data, task="token-classification")


def qa_rows(n: int, seed: int) -> list[dict]:
    """'... the prize was <word> .' among filler sentences; the answer is the word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        parts = [f"{rng.choice(SUBJECTS)} was {rng.choice(FILLERS)} {rng.choice(POSITIVE)} ." for _ in range(2)]
        word = rng.choice(POSITIVE + NEGATIVE)
        prefix = " ".join(parts) + " the prize was "
        rows.append(
            {
                "question": "what was the prize ?",
                "context": f"{prefix}{word} .",
                "answers": [{"text": word, "answer_start": len(prefix)}],
            }
        )
    return rows


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("export-qa-data")
    data = {
        "train": write_jsonl(folder / "train.jsonl", qa_rows(64, 1)),
        "test": write_jsonl(folder / "test.jsonl", qa_rows(20, 2)),
    }
    return train(
        tmp_path_factory,
        "export-qa",
        tiny_model_dir,
        {"max_length": 48, **data},
        task="question-answering",
        question_answering={"stride": 16},
    )


@pytest.fixture(scope="module")
def image_data(tmp_path_factory) -> dict[str, str]:
    """Noisy squares whose dominant channel is their class, as ImageFolder trees."""
    from PIL import Image

    root = tmp_path_factory.mktemp("export-images")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 12), ("test", 6)):
        for channel, colour in enumerate(("red", "green")):
            (root / split / colour).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 90, (40, 40, 3))
                pixels[..., channel] += 150
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / colour / f"{i}.png")
    return {"train": str(root / "train"), "test": str(root / "test")}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, image_data):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = tmp_path_factory.mktemp("export-weights") / "tiny.safetensors"
    save_file(timm.create_model("test_efficientnet").state_dict(), str(weights))
    return train(
        tmp_path_factory,
        "export-image",
        weights,
        image_data,
        task="image-classification",
        image={"architecture": "test_efficientnet", "image_size": 32},
    )


def export_of(run_dir: Path) -> dict:
    """The run's fp32 export (RUN/export/onnx), made once per run and shared by the tests that read it."""
    record = run_dir / "export" / "onnx" / "export.json"
    return read_json(record) if record.is_file() else export_run(run_dir)


@pytest.fixture(scope="module")
def cls_export(cls_run) -> dict:
    return export_of(cls_run.run_dir)


# ------------------------------------------------------------------------------------------ parity, every task


def assert_same_predictions(left: Any, right: Any, path: str = "") -> None:
    """Equal labels, tags, answers and offsets; scores and probabilities within 1e-4."""
    if isinstance(left, dict):
        assert left.keys() == right.keys(), path
        for key in left:
            assert_same_predictions(left[key], right[key], f"{path}.{key}")
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right), path
        for i, (a, b) in enumerate(zip(left, right, strict=True)):
            assert_same_predictions(a, b, f"{path}[{i}]")
    elif isinstance(left, float):
        assert left == pytest.approx(right, abs=1e-4), path
    else:
        assert left == right, path


def assert_other_shapes_run(export: Path, run_dir: Path, inputs: Any) -> None:
    """Three rows of another length than the trace's two: the graph has no frozen dimension."""
    onnx_model, pytorch = tunewise.load(export), tunewise.load(run_dir, device="cpu")
    encoded = onnx_model.encode(onnx_model.task.data.from_inputs(inputs), "predict")
    batch = collate(encoded, np.arange(len(encoded))[:3])
    assert next(iter(batch.values())).shape[0] == 3
    got, expected = onnx_model.model(**batch), pytorch.model(**batch)
    for name in ("logits", "start_logits", "end_logits"):
        if getattr(expected, name, None) is not None:
            assert torch.allclose(getattr(got, name), getattr(expected, name).detach(), atol=1e-4), name
    assert got.loss is None


PARITY_CASES = {
    "cls_run": TEXTS,
    "mean_run": TEXTS,
    "pair_lora_run": PAIRS,
    "multi_label_run": TOPICS,
    "regression_run": TEXTS,
    "ner_run": SENTENCES,
    "qa_run": QUESTIONS,
    "image_run": None,  # the test images
}


@pytest.mark.parametrize("run_name", list(PARITY_CASES))
def test_every_encoder_task_exports_and_predicts_as_pytorch(request, run_name: str, image_data) -> None:
    run = request.getfixturevalue(run_name)
    inputs = PARITY_CASES[run_name]
    if inputs is None:
        inputs = [str(path) for path in sorted(Path(image_data["test"]).rglob("*.png"))[:3]]
    result = export_of(run.run_dir)
    export = run.run_dir / "export" / "onnx"
    assert read_json(export / "export.json") == json.loads(json.dumps(result))
    assert result["max_abs_logit_difference"]["onnx_fp32"] < 1e-4
    assert result["gate"]["accepted"] and result["gate"]["drop"] == pytest.approx(0.0, abs=1e-6)
    pytorch = tunewise.load(run.run_dir, device="cpu")
    loaded = tunewise.load(export)
    assert isinstance(loaded.model, OnnxModel)
    assert_same_predictions(loaded.predict(inputs), pytorch.predict(inputs))
    assert_other_shapes_run(export, run.run_dir, inputs)
    assert loaded.facts.label_names == pytorch.facts.label_names


def test_the_export_folder_is_self_contained(cls_run, cls_export, tmp_path) -> None:
    """model.onnx, export.json, config.yaml, the model card and model/ without weights: it loads with the run
    folder gone."""
    export = cls_run.run_dir / "export" / "onnx"
    names = sorted(p.name for p in export.iterdir())
    assert names == ["config.yaml", "export.json", "model", "model.onnx", "model_card.md"]
    assert (export / "model_card.md").read_text() == (cls_run.run_dir / "model_card.md").read_text()
    kept = {p.name for p in (export / "model").iterdir()}
    assert "config.json" in kept and "tokenizer.json" in kept
    assert not any(name.endswith((".safetensors", ".bin")) for name in kept)
    moved = tmp_path / "moved"
    shutil.copytree(export, moved)
    expected = tunewise.load(export).predict(TEXTS)
    assert_same_predictions(tunewise.load(moved).predict(TEXTS), expected)
    assert_same_predictions(tunewise.load(moved / "model").predict(TEXTS), expected)  # its model/ folder too


def test_export_json_records_parity_metrics_sizes_speed_and_the_rows(cls_run, cls_export, single_label_data) -> None:
    result = cls_export
    assert EXPORT_FIELDS <= result.keys()
    assert result["data"] == {
        "split": "test",
        "source": single_label_data["test"],
        "rows": 40,
        "changed_since_training": [],
    }
    assert result["inputs"] == ["input_ids", "attention_mask"] and result["outputs"] == ["logits"]
    assert result["gate"]["metric"] == "f1_macro" and result["gate"]["higher_is_better"]
    assert result["metrics"]["pytorch"]["accuracy"] == pytest.approx(cls_run.metrics["test"]["accuracy"])
    assert result["metrics"]["onnx_fp32"]["f1_macro"] == pytest.approx(result["metrics"]["pytorch"]["f1_macro"])
    assert (
        result["file_bytes"]["pytorch_safetensors"] == (cls_run.run_dir / "model" / "model.safetensors").stat().st_size
    )
    assert result["file_bytes"]["onnx_fp32"] == (cls_run.run_dir / "export" / "onnx" / "model.onnx").stat().st_size
    for engine in ("pytorch", "onnx_fp32"):
        assert result["speed"][engine]["latency_batch1_ms"] > 0
        assert result["speed"][engine]["throughput_batch32_rows_per_s"] > 0
    assert result["speed"]["threads"] >= 1 and isinstance(result["hardware"]["vnni"], (bool, type(None)))
    assert {"torch", "onnx", "onnxruntime", "onnxscript"} <= result["versions"].keys()


def test_evaluate_and_predict_file_run_on_the_export(cls_run, cls_export, single_label_data) -> None:
    loaded = tunewise.load(cls_run.run_dir / "export" / "onnx")
    metrics, predictions = loaded.evaluate(single_label_data["test"])
    assert metrics["accuracy"] == pytest.approx(cls_run.metrics["test"]["accuracy"])
    assert metrics["loss"] is None  # an export returns scores only
    assert list(predictions.columns[:3]) == ["text", "label", "predicted_label"]
    assert len(loaded.predict_file(single_label_data["test"])) == 40


def test_lora_runs_export_the_merged_model(pair_lora_run) -> None:
    """model/ holds the merged weights (the adapter is kept apart in adapter/), so the graph has no LoRA weights."""
    export_of(pair_lora_run.run_dir)
    export = pair_lora_run.run_dir / "export" / "onnx"
    assert (pair_lora_run.run_dir / "adapter").is_dir()
    graph = onnx.load(str(export / "model.onnx"))
    assert not [w.name for w in graph.graph.initializer if "lora" in w.name.lower()]
    assert "token_type_ids" in [node.name for node in graph.graph.input]


def test_export_restores_the_fitted_multi_label_threshold(multi_label_run) -> None:
    pytorch = tunewise.load(multi_label_run.run_dir, device="cpu")
    export_of(multi_label_run.run_dir)
    loaded = tunewise.load(multi_label_run.run_dir / "export" / "onnx")
    assert loaded.task.labels.threshold == pytorch.task.labels.threshold
    assert loaded.task.labels.problem_type == "multi_label"


# ------------------------------------------------------------------------------------------ int8 and its gate


def test_int8_export_is_measured_and_accepted_within_the_tolerance(regression_run) -> None:
    """A regression run's int8 export: mse's change is the drop (lower is better), in mse's own units."""
    run_dir = regression_run.run_dir
    result = export_run(run_dir, quantize="int8")
    int8 = run_dir / "export" / "onnx-int8"
    gate, metrics = result["gate"], result["metrics"]
    assert result["quantization"] == "int8" and gate["accepted"] and gate["max_drop"] == 1.0
    assert gate["metric"] == "mse" and not gate["higher_is_better"] and gate["unit"] == "mse units"
    assert gate["drop"] == pytest.approx(metrics["onnx_int8"]["mse"] - metrics["pytorch"]["mse"])
    assert gate["after"] == metrics["onnx_int8"]["mse"]
    assert 0 < result["max_abs_logit_difference"]["onnx_int8"] < 0.5
    assert result["max_abs_logit_difference"]["onnx_fp32"] < 1e-4
    assert result["file_bytes"]["onnx_int8"] < result["file_bytes"]["onnx_fp32"]
    assert set(result["speed"]) >= {"pytorch", "onnx_fp32", "onnx_int8"}
    graph = onnx.load(str(int8 / "model.onnx"))
    assert "MatMulInteger" in {node.op_type for node in graph.graph.node}  # the folder holds the int8 model
    assert export_folder(run_dir) == int8  # the server takes the int8 export when there is one
    assert len(tunewise.load(int8).predict(TEXTS)) == len(TEXTS)


def test_int8_export_that_loses_too_much_is_refused_with_its_numbers(cls_run, cls_export, tmp_path) -> None:
    """An outlier weight in an embedding row no input uses leaves PyTorch's scores as they were, but int8's
    one scale per weight matrix then rounds every other embedding to nothing (a real int8 failure, as
    with outlier features in large models). The export is refused with the measured numbers, and the
    export already in the folder it was to replace is left as it was."""
    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "run"
    shutil.copytree(cls_run.run_dir, run_dir)
    weights = load_file(str(run_dir / "model" / "model.safetensors"))
    embeddings = next(name for name in weights if name.endswith("word_embeddings.weight"))
    mask = tunewise.load(run_dir, device="cpu").processor.mask_token_id  # never in the data's texts
    weights[embeddings][mask] = 1e4
    save_file(weights, str(run_dir / "model" / "model.safetensors"), metadata={"format": "pt"})
    previous = (run_dir / "export" / "onnx" / "export.json").read_bytes()

    with pytest.raises(ExportRefused) as refused:
        export_run(run_dir, output=run_dir / "export" / "onnx", quantize="int8", overwrite=True)
    gate = refused.value.result["gate"]
    assert gate["before"] == pytest.approx(cls_export["gate"]["before"])  # PyTorch scores as before the outlier
    assert gate["before"] > 0.9 and gate["drop"] > 10 * gate["max_drop"]
    message = str(refused.value)
    for number in (f"{gate['before']:.4f}", f"{gate['after']:.4f}", f"drop of {gate['drop']:.4g} points", "allows 1."):
        assert number in message
    assert "f1_macro on its 40 test rows" in message and "Nothing was written" in message
    assert (run_dir / "export" / "onnx" / "export.json").read_bytes() == previous
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == ["onnx"]  # no int8 or half-written folder


def test_export_folder_prefers_int8_then_fp32_and_says_how_to_export(cls_run, cls_export, tmp_path) -> None:
    assert export_folder(cls_run.run_dir) == cls_run.run_dir / "export" / "onnx"
    with pytest.raises(ConfigError, match=r"tunewise export .* --format onnx` first"):
        export_folder(tmp_path)


# ------------------------------------------------------------------------------------------ what is refused


def test_generative_runs_are_refused_with_what_to_use_instead(tmp_path, tiny_gpt2_dir) -> None:
    run_dir = tmp_path / "lm-run"
    shutil.copytree(tiny_gpt2_dir, run_dir / "model")
    config = make_config(tmp_path, tiny_gpt2_dir, {"train": "unused.jsonl", "max_length": 32}, task="causal-lm")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"causal-lm run, which generates text.*encoder tasks.*optimum-cli"):
        export_run(run_dir)


def test_an_existing_export_is_replaced_only_with_overwrite(cls_run, cls_export, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"already holds an export\. Pass --overwrite"):
        export_run(cls_run.run_dir)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"already holds other files \(notes\.txt\).*will not clear it"):
        export_run(cls_run.run_dir, output=other, overwrite=True)
    assert (other / "notes.txt").read_text(encoding="utf-8") == "keep me"
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="is a file"):
        export_run(cls_run.run_dir, output=tmp_path / "file")


def test_paths_that_are_not_runs_and_bad_options_are_refused(cls_run, cls_export, tmp_path) -> None:
    with pytest.raises(ConfigError, match="not a tunewise run folder"):
        export_run(tmp_path)
    with pytest.raises(ConfigError, match="is an export folder; point `tunewise export` at the run folder"):
        export_run(cls_run.run_dir / "export" / "onnx")
    with pytest.raises(ConfigError, match="--format 'tflite'"):
        export_run(cls_run.run_dir, format="tflite")
    with pytest.raises(ConfigError, match="--quantize 'int4'"):
        export_run(cls_run.run_dir, quantize="int4")
    with pytest.raises(ConfigError, match="--max-drop -1"):
        export_run(cls_run.run_dir, quantize="int8", max_drop=-1)


def test_a_model_the_exporter_cannot_trace_is_a_config_error(cls_run, tmp_path, monkeypatch) -> None:
    def fails(*args: Any, **kwargs: Any) -> None:
        raise torch.onnx.errors.OnnxExporterError("aten::weird has no ONNX translation")

    monkeypatch.setattr(torch.onnx, "export", fails)
    with pytest.raises(
        ConfigError, match=r"BertForSequenceClassification model cannot be exported to ONNX \(aten::weird"
    ):
        export_run(cls_run.run_dir, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda folder: (folder / "model.onnx").unlink(),
            r"incomplete export: .*model\.onnx \(the exported model\) is missing",
        ),
        (
            lambda folder: (folder / "model.onnx").write_bytes(b"not a graph"),
            r"model\.onnx cannot be run by ONNX Runtime",
        ),
        (lambda folder: (folder / "model" / "config.json").unlink(), r"model/config\.json \(the label maps"),
        (lambda folder: (folder / "export.json").unlink(), r"holds model\.onnx but no export\.json"),
        (lambda folder: (folder / "model" / "config.json").write_text("{}"), r"model/config\.json cannot be read"),
    ],
)
def test_a_broken_export_is_a_config_error_naming_the_file(cls_run, cls_export, tmp_path, damage, message) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(cls_run.run_dir / "export" / "onnx", broken)
    damage(broken)
    with pytest.raises(ConfigError, match=message) as error:
        tunewise.load(broken)
    assert "tunewise export RUN --format onnx --overwrite" in str(error.value)


def test_an_export_runs_on_the_cpu_only(cls_run, cls_export) -> None:
    with pytest.raises(ConfigError, match="runs on the CPU"):
        tunewise.load(cls_run.run_dir / "export" / "onnx", device="cuda")


def test_cli_export_prints_the_gate_and_sizes_and_refusals_are_one_message(cls_run, tmp_path) -> None:
    result = invoke_cli("export", cls_run.run_dir, "--output", tmp_path / "cli-export")
    assert result.exit_code == 0, result.output
    assert "(PyTorch) ->" in result.output and "within --max-drop 1" in result.output and "MB" in result.output
    assert (tmp_path / "cli-export" / "export.json").is_file()
    refused = invoke_cli("export", cls_run.run_dir, "--format", "tflite")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "tflite" in refused.output
