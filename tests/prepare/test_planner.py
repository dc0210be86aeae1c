"""What preparation promises (tunewise.prepare): every problem found before any work and reported together;
each data file parsed once, the tokenizer and the base weights loaded once per command; and a plan, and a
resolved config.yaml, in which no `auto` is left."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import make_config, sentiment_rows, story_rows, write_csv, write_jsonl
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

import tunewise
import tunewise.data.readers as readers
import tunewise.tasks.text_classification as text_classification
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.prepare import Plan, prepare
from tunewise.training.settings import TrainingSettings

# the only setting that stays `auto` in a resolved config: the LoRA targets are read from the model's
# modules when the model is built, after preparation
STILL_AUTO = {"strategy.lora.target_modules"}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Train, validation and test CSVs of the sentiment rows, each its own file."""
    folder = tmp_path / "data"
    folder.mkdir()
    sizes = {"train": 60, "validation": 20, "test": 20}
    return {
        split: write_csv(folder / f"{split}.csv", sentiment_rows(n, seed=i))
        for i, (split, n) in enumerate(sizes.items())
    }


def with_unseen_test_label(tmp_path: Path) -> str:
    rows = sentiment_rows(20, seed=5)
    rows[3]["label"] = "neutral"  # the training data has only positive and negative
    return write_csv(tmp_path / "test-unseen.csv", rows)


class Calls:
    """Counts the calls of functions replaced in place, by key."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def wrap(self, original: Any, key: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[key(*args, **kwargs)] += 1
            return original(*args, **kwargs)

        return counted

    def with_prefix(self, prefix: str) -> dict[str, int]:
        return {key.removeprefix(prefix): n for key, n in self.counts.items() if key.startswith(prefix)}


def _resolved(path: Any) -> str:
    return str(Path(path).resolve())


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Counts, wherever each is looked up at call time:

    - parse:<file>: text classification's reader (`read_table` as the task module imported it);
    - bytes:<file>: every local data file the readers parse (`readers._read_file`, behind every read_table);
    - hash:<file>: a data file hashed again after its read (`readers._hash_file`, behind file_fingerprint);
    - tokenizer / tokenizer:<folder>: the task's tokenizer loader, and transformers' AutoTokenizer;
    - weights:<folder>: pretrained weights loaded by any transformers model class (PreTrainedModel.from_pretrained,
      which AutoModel and AutoModelForSequenceClassification delegate to), and auto:<class>:<folder> for those two.
    """
    counter = Calls()
    monkeypatch.setattr(
        text_classification,
        "read_table",
        counter.wrap(text_classification.read_table, lambda source, *a, **k: f"parse:{_resolved(source)}"),
    )
    monkeypatch.setattr(
        readers, "_read_file", counter.wrap(readers._read_file, lambda path, *a, **k: f"bytes:{_resolved(path)}")
    )
    monkeypatch.setattr(
        readers, "_hash_file", counter.wrap(readers._hash_file, lambda path, *a, **k: f"hash:{_resolved(path)}")
    )
    monkeypatch.setattr(
        text_classification,
        "load_text_tokenizer",
        counter.wrap(text_classification.load_text_tokenizer, lambda *a, **k: "tokenizer"),
    )
    monkeypatch.setattr(
        AutoTokenizer,
        "from_pretrained",
        counter.wrap(AutoTokenizer.from_pretrained, lambda location, *a, **k: f"tokenizer:{_resolved(location)}"),
    )
    for auto_class in (AutoModel, AutoModelForSequenceClassification):
        monkeypatch.setattr(
            auto_class,
            "from_pretrained",
            counter.wrap(
                auto_class.from_pretrained,
                lambda location, *a, name=auto_class.__name__, **k: f"auto:{name}:{_resolved(location)}",
            ),
        )
    load_weights = PreTrainedModel.__dict__["from_pretrained"].__func__

    def counted_weights(cls: type, location: Any, *args: Any, **kwargs: Any) -> Any:
        counter.counts[f"weights:{_resolved(location)}"] += 1
        return load_weights(cls, location, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(counted_weights))
    return counter


# ------------------------------------------------------------------------------------------ (a) every problem at once


def test_independent_data_problems_are_reported_together_before_any_model_work(
    tmp_path: Path, tiny_model_dir: Path, files: dict[str, str], calls: Calls
) -> None:
    missing = tmp_path / "data" / "validation-missing.csv"
    data = {"train": files["train"], "validation": str(missing), "test": with_unseen_test_label(tmp_path)}
    config = make_config(tmp_path, tiny_model_dir, data, audit={"before_training": True})
    with pytest.raises(DataError) as error:
        tunewise.train(config, show_progress=False)
    message = str(error.value)
    assert message.startswith("2 problems, all to fix before training:")
    listed = message.splitlines()[1:]
    assert len(listed) == 2
    assert str(missing) in listed[0] and "file not found" in listed[0]
    assert "'neutral'" in listed[1] and "never occur in training" in listed[1] and "row 5" in listed[1]
    assert not (tmp_path / "run").exists()  # the output_dir was not even created
    assert calls.with_prefix("weights:") == {}  # no model was built


def test_data_and_model_problems_are_reported_together(tmp_path: Path, files: dict[str, str], calls: Calls) -> None:
    missing_model = tmp_path / "no-such-model"
    data = {"train": files["train"], "validation": str(tmp_path / "nope.csv"), "test": with_unseen_test_label(tmp_path)}
    with pytest.raises(TunewiseError) as error:
        tunewise.train(make_config(tmp_path, missing_model, data), show_progress=False)
    message = str(error.value)
    assert type(error.value) is TunewiseError  # a DataError and a ConfigError: the class they share
    assert message.startswith("3 problems, all to fix before training:")
    assert (
        "nope.csv" in message
        and "'neutral'" in message
        and f"model: the folder {missing_model} does not exist" in message
    )
    assert not (tmp_path / "run").exists()


def test_each_problem_is_listed_once(tmp_path: Path, tiny_model_dir: Path, files: dict[str, str]) -> None:
    """An output_dir that is a file, and a missing validation file: two problems, each named once."""
    occupied = tmp_path / "a-file"
    occupied.write_text("not a folder\n", encoding="utf-8")
    data = {"train": files["train"], "validation": str(tmp_path / "nope.csv")}
    with pytest.raises(TunewiseError) as error:
        tunewise.train(make_config(tmp_path, tiny_model_dir, data, output_dir=str(occupied)), show_progress=False)
    message = str(error.value)
    assert message.count(f"output_dir {occupied} is a file, not a folder") == 1, message
    assert message.startswith("2 problems, all to fix before training:"), message


def test_a_single_problem_raises_as_itself(tmp_path: Path, tiny_model_dir: Path, files: dict[str, str]) -> None:
    missing = tmp_path / "nope.csv"
    config = make_config(tmp_path, tiny_model_dir, {"train": files["train"], "validation": str(missing)})
    with pytest.raises(DataError) as error:
        tunewise.train(config, show_progress=False)
    with pytest.raises(DataError) as direct:
        readers.read_table(str(missing), "validation", ["text"], "label")
    assert str(error.value) == str(direct.value)  # the reader's own message, not a list of one
    config = make_config(tmp_path, tiny_model_dir, files, train={"early_stopping": {"metric": "mse"}})
    with pytest.raises(ConfigError, match=r"^train\.early_stopping\.metric 'mse' is not reported"):
        tunewise.train(config, show_progress=False)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ (b) once per command


@pytest.mark.parametrize("model_fixture", ["tiny_model_dir", "tiny_mean_model_dir"])
def test_train_parses_each_file_once_and_loads_tokenizer_and_weights_once(
    tmp_path: Path, files: dict[str, str], calls: Calls, model_fixture: str, request: pytest.FixtureRequest
) -> None:
    """With the data check on, the check, the training and every audit after it share one read of each
    file, one tokenizer and one load of the pretrained weights."""
    model_dir = _resolved(request.getfixturevalue(model_fixture))
    config = make_config(
        tmp_path, model_dir, {**files, "dedupe": True}, audit={"before_training": True}, train={"epochs": 1}
    )
    run = tunewise.train(config, show_progress=False)
    assert (run.run_dir / "audit" / "audit.json").is_file()  # the data check ran
    paths = sorted(_resolved(path) for path in files.values())
    assert calls.with_prefix("parse:") == dict.fromkeys(paths, 1)
    assert calls.with_prefix("bytes:") == dict.fromkeys(paths, 1)
    assert calls.with_prefix("hash:") == {}  # the fingerprints come from the read itself
    assert calls.counts["tokenizer"] == 1
    assert calls.with_prefix("tokenizer:") == {model_dir: 1}
    assert calls.with_prefix("weights:") == {model_dir: 1}
    auto_class = "AutoModelForSequenceClassification" if model_fixture == "tiny_model_dir" else "AutoModel"
    assert calls.with_prefix("auto:") == {f"{auto_class}:{model_dir}": 1}  # the stock head, or the pooled one


def test_check_parses_each_file_once_and_loads_no_weights(
    tmp_path: Path, tiny_model_dir: Path, files: dict[str, str], calls: Calls
) -> None:
    result = tunewise.check(make_config(tmp_path, tiny_model_dir, files), output=tmp_path / "audit")
    assert result.audit_file.is_file()
    paths = sorted(_resolved(path) for path in files.values())
    assert calls.with_prefix("parse:") == dict.fromkeys(paths, 1)
    assert calls.with_prefix("bytes:") == dict.fromkeys(paths, 1)
    assert calls.with_prefix("hash:") == {}
    assert calls.counts["tokenizer"] == 1 and calls.with_prefix("tokenizer:") == {_resolved(tiny_model_dir): 1}
    assert calls.with_prefix("weights:") == {}  # the data check needs the tokenizer only


# ------------------------------------------------------------------------------------------ (c) no auto left


def autos(node: Any, prefix: str = "") -> list[str]:
    """The dotted paths of every value `auto` in a nested config."""
    if isinstance(node, dict):
        return [path for key, value in node.items() for path in autos(value, f"{prefix}{key}.")]
    if isinstance(node, list):
        return [path for i, value in enumerate(node) for path in autos(value, f"{prefix}{i}.")]
    return [prefix.rstrip(".")] if node == "auto" else []


AUTO_DATA = {"max_length": "auto"}
ALL_AUTO = {
    "strategy": {"method": "auto", "pooling": "auto"},
    "train": {"epochs": "auto", "batch_size": "auto", "learning_rate": "auto", "precision": "auto", "compile": "auto"},
}


@pytest.mark.parametrize("private", [False, True], ids=["plain", "dp"])
def test_the_resolved_config_yaml_has_no_auto_left(
    tmp_path: Path, tiny_mean_model_dir: Path, files: dict[str, str], private: bool
) -> None:
    overrides: dict[str, Any] = {"privacy": {"dp": {"epsilon": 8.0}}} if private else {}
    config = make_config(tmp_path, tiny_mean_model_dir, {**files, "dedupe": True, **AUTO_DATA}, **ALL_AUTO, **overrides)
    requested = autos(tunewise.load_config(config).model_dump(mode="json"))
    assert {"data.max_length", "train.batch_size", "strategy.method", "train.early_stopping.metric"} <= set(requested)
    run = tunewise.train(config, show_progress=False)
    resolved = yaml.safe_load((run.run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert resolved["strategy"] == {**resolved["strategy"], "method": "full", "pooling": "mean"}
    assert resolved["train"]["early_stopping"]["metric"] == "f1_macro"
    assert isinstance(resolved["train"]["batch_size"], int) and isinstance(resolved["train"]["learning_rate"], float)
    if private:
        assert isinstance(resolved["privacy"]["dp"]["delta"], float)
    left = sorted(set(autos(resolved)) - STILL_AUTO)
    assert not left, f"config.yaml still says auto at {left}"
    assert resolved["data"]["problem_type"] == "single_label"  # what the task learnt from the labels


def test_a_causal_lm_plan_has_no_auto_left(tmp_path: Path, tiny_gpt2_dir: Path) -> None:
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", story_rows(40, seed=1)),
        "test": write_jsonl(tmp_path / "test.jsonl", story_rows(10, seed=2)),
    }
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "tell me a secret"}])
    config = make_config(
        tmp_path, tiny_gpt2_dir, {**data, **AUTO_DATA}, task="causal-lm", safety={"prompts": prompts}, **ALL_AUTO
    )
    plan = prepare(tunewise.load_config(config))
    assert plan.config.safety.prompt_column == "prompt" and plan.config.screen.flag_labels == []
    assert set(autos(plan.config.model_dump(mode="json"))) <= STILL_AUTO
    assert autos(plan.requested.model_dump(mode="json"))  # what the user asked for is kept as asked
    assert not (tmp_path / "run").exists()  # preparing writes nothing


def ner_rows(n: int, seed: int) -> list[dict]:
    """Sentences of words and BIO tags: a subject (B-/I-ITEM) and a sentiment word."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        subject = rng.choice(["the film", "the movie", "this book", "the hotel"]).split()
        words = [*subject, "was", rng.choice(["good", "bad", "great", "awful"])]
        rows.append({"tokens": words, "tags": ["B-ITEM", *["I-ITEM"] * (len(subject) - 1), "O", "O"]})
    return rows


def test_a_token_classification_plan_has_no_auto_left(tmp_path: Path, tiny_model_dir: Path) -> None:
    """ner.scheme auto is detected from the data files (BIO here): the resolved config says which."""
    data = {
        "train": write_jsonl(tmp_path / "train.jsonl", ner_rows(40, seed=1)),
        "test": write_jsonl(tmp_path / "test.jsonl", ner_rows(10, seed=2)),
    }
    config = make_config(tmp_path, tiny_model_dir, {**data, **AUTO_DATA}, task="token-classification", **ALL_AUTO)
    plan = prepare(tunewise.load_config(config))
    left = sorted(set(autos(plan.config.model_dump(mode="json"))) - STILL_AUTO)
    assert not left, f"the resolved config still says auto at {left}"


# ------------------------------------------------------------------------------------------ (d) a concrete plan


def test_prepare_returns_a_plan_of_concrete_training_settings(
    tmp_path: Path, tiny_mean_model_dir: Path, files: dict[str, str]
) -> None:
    raw = make_config(tmp_path, tiny_mean_model_dir, {**files, "dedupe": True, **AUTO_DATA}, **ALL_AUTO)
    config = tunewise.load_config(raw)
    plan = prepare(config)
    assert isinstance(plan, Plan) and plan.training is not None
    settings = plan.training.settings
    assert isinstance(settings, TrainingSettings)
    concrete = {
        "batch_size": int,
        "learning_rate": float,
        "epochs": float,
        "steps_per_epoch": int,
        "total_steps": int,
        "gradient_accumulation": int,
        "weight_decay": float,
        "warmup_ratio": float,
        "scheduler": str,
        "layerwise_lr_decay": float,
        "mixed_precision": str,
        "seed": int,
        "checkpoint_every": int,
        "keep_last": int,
        "compile": bool,
    }
    for name, kind in concrete.items():
        value = getattr(settings, name)
        assert type(value) is kind, f"{name} is {value!r} ({type(value).__name__}), not {kind.__name__}"
    assert settings.batch_size == 32 and settings.mixed_precision in ("no", "bf16", "fp16")  # CPU: 32
    assert settings.learning_rate == pytest.approx(1e-4)  # full fine-tuning at batch 32
    assert settings.total_steps >= 1 and 3.0 <= settings.epochs <= 10.0
    assert settings.selection is not None and settings.selection.metric == "f1_macro"
    assert settings.eval_every is None and settings.privacy is None
    assert type(plan.model.max_length) is int and plan.model.max_length == 128  # the tiny tokenizer's limit
    assert plan.model.pooling == "mean" and plan.model.method == "full"
    # the resolved config says what the loop uses
    assert plan.config.train.batch_size == settings.batch_size
    assert plan.config.train.learning_rate == settings.learning_rate
    assert plan.config.train.epochs == settings.epochs
    assert plan.config.train.compile is settings.compile
    assert plan.config.data.max_length == plan.model.max_length
    assert plan.requested.train.batch_size == "auto"  # the request is kept as written
    assert set(plan.training.encoded) == {"train", "validation", "test"}
    assert not (tmp_path / "run").exists()


def test_examples_per_row_counts_the_examples_packed_into_each_row() -> None:
    from tunewise.prepare.planner import examples_per_row
    from tunewise.types import EncodedSplit

    ids = [np.arange(6), np.arange(4)]
    packed = EncodedSplit(
        {"input_ids": ids, "position_ids": [np.array([0, 1, 2, 0, 1, 0]), np.array([0, 1, 0, 1])]},
        [row.copy() for row in ids],
        attention_mask=False,
    )
    assert examples_per_row(packed) == 2.5
    assert examples_per_row(EncodedSplit({"input_ids": ids}, [row.copy() for row in ids])) == 1.0
