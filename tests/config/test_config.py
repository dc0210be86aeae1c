"""Tests for tunewise.config: validation messages, --set overrides, YAML loading and `tunewise init`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from tunewise.cli import app
from tunewise.config.parsing import apply_override, dump_config
from tunewise.config.sections import DataConfig, RunConfig, StrategyConfig, TrainConfig
from tunewise.errors import ConfigError
from tunewise.tasks import CONFIG_CLASSES, load_config
from tunewise.tasks.image_classification import ImageClassificationConfig
from tunewise.tasks.text_classification import TextClassificationConfig, TextClassificationData


def minimal(**extra) -> dict:
    return {"data": {"train": "train.csv"}, **extra}


def error_of(source, overrides=None) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_config(source, overrides)
    return str(excinfo.value)


# ------------------------------------------------------------------------------------------ validation


def test_minimal_config_gets_documented_defaults():
    config = load_config(minimal())
    assert isinstance(config, RunConfig) and isinstance(config, TextClassificationConfig)
    assert config.task == "text-classification"
    assert config.model == "minilm-l6"
    assert config.data.text_column == "text" and config.data.label_column == "label"
    assert config.data.max_length == "auto" and config.train.epochs == "auto"
    assert config.strategy.method == "auto"  # full for text models, resolved in preparation
    assert config.train.early_stopping is not None and config.train.early_stopping.metric == "auto"


@pytest.mark.parametrize(
    ("raw", "field", "suggestion"),
    [
        ({"data": {"train": "t.csv", "text_colum": "body"}}, "data.text_colum", "text_column"),
        ({"data": {"train": "t.csv"}, "train": {"epoch": 3}}, "train.epoch", "epochs"),
        ({"data": {"train": "t.csv"}, "strategy": {"metod": "lora"}}, "strategy.metod", "method"),
        ({"data": {"train": "t.csv"}, "strategy": {"lora": {"rank": 4}}}, "strategy.lora.rank", None),
        ({"data": {"train": "t.csv"}, "ouput_dir": "runs/x"}, "ouput_dir", "output_dir"),
        (
            {"data": {"train": "t.csv"}, "train": {"early_stopping": {"patiense": 3}}},
            "train.early_stopping.patiense",
            "patience",
        ),
    ],
)
def test_unknown_field_names_the_field_and_suggests_the_right_one(raw, field, suggestion):
    message = error_of(raw)
    assert f"{field}: unknown field" in message
    if suggestion:
        assert f"Did you mean {suggestion!r}?" in message
    assert "Known fields:" in message


def test_unknown_field_without_close_match_gives_no_suggestion():
    message = error_of(minimal(train={"zzzzzz": 1}))
    assert "train.zzzzzz: unknown field" in message
    assert "Did you mean" not in message


@pytest.mark.parametrize(
    ("section", "values", "fragment"),
    [
        ("train", {"epochs": 0}, "train.epochs: epochs must be a positive number"),
        ("train", {"epochs": -1.5}, "train.epochs"),
        ("train", {"epochs": True}, "train.epochs"),
        ("train", {"batch_size": 0}, "train.batch_size"),
        ("train", {"learning_rate": 5}, "train.learning_rate: learning_rate must be between 0 and 1"),
        ("train", {"eval_every": 0}, "train.eval_every"),
        ("train", {"precision": "fp8"}, "train.precision"),
        ("train", {"scheduler": "exponential"}, "train.scheduler"),
        ("train", {"warmup_ratio": 1.0}, "train.warmup_ratio"),
        ("data", {"max_length": 4}, "data.max_length: max_length must be at least 8"),
        ("data", {"validation_ratio": 0.7}, "data.validation_ratio"),
        ("data", {"problem_type": "ranking"}, "data.problem_type"),
        ("strategy", {"method": "adapter"}, "strategy.method"),
        ("strategy", {"layerwise_lr_decay": 1.5}, "strategy.layerwise_lr_decay"),
        ("strategy", {"n_layers": 0}, "strategy.n_layers"),
        ("strategy", {"pooling": "sum"}, "strategy.pooling"),
    ],
)
def test_bad_values_name_field_and_value(section, values, fragment):
    raw = minimal()
    raw.setdefault(section, {}).update(values)
    message = error_of(raw)
    assert fragment in message
    assert "got " in message  # the offending value is quoted back


def test_every_problem_is_reported_at_once():
    message = error_of(minimal(train={"epochs": 0, "batch_size": 0, "learning_rate": 5}))
    assert "3 problem(s)" in message
    for field in ("train.epochs", "train.batch_size", "train.learning_rate"):
        assert field in message


def test_missing_train_data_is_reported():
    assert "data.train: required field is missing" in error_of({"data": {}})
    assert "data: required field is missing" in error_of({})


def test_unknown_task_lists_the_known_ones():
    message = error_of(minimal(task="summarisation"))
    assert "unknown task 'summarisation'" in message
    assert "text-classification" in message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (
            {"train": "t.csv", "text_pair_column": "text"},
            "data.text_pair_column: must name a different column than data.text_column (now 'text').",
        ),
        (
            {"train": "t.csv", "label_column": "text"},
            "data.label_column: must differ from the text column(s) (now 'text').",
        ),
    ],
)
def test_cross_field_checks(data, fragment):
    assert fragment in error_of({"data": data})


def test_config_error_is_a_tunewise_error():
    from tunewise.errors import TunewiseError

    with pytest.raises(TunewiseError):
        load_config({"data": {"train": "x"}, "bogus": 1})


# ------------------------------------------------------------------------------------------ overrides


@pytest.mark.parametrize(
    ("override", "path", "expected"),
    [
        ("train.epochs=3", ("train", "epochs"), 3),
        ("train.learning_rate=0.0001", ("train", "learning_rate"), 1e-4),
        ("train.early_stopping=null", ("train", "early_stopping"), None),
        ("strategy.lora.target_modules=[query, value]", ("strategy", "lora", "target_modules"), ["query", "value"]),
        ("data.max_length=auto", ("data", "max_length"), "auto"),
        ("output_dir=runs/a=b", ("output_dir",), "runs/a=b"),  # only the first '=' separates
        ("data.validation=", ("data", "validation"), None),
        ("train.max_grad_norm= 0.5 ", ("train", "max_grad_norm"), 0.5),
    ],
)
def test_apply_override_parses_yaml_values(override, path, expected):
    raw = {"data": {"train": "t.csv"}, "train": {"epochs": 1}}
    apply_override(raw, override)
    node = raw
    for part in path:
        node = node[part]
    assert node == expected


def test_scientific_notation_overrides_validate_as_numbers():
    # PyYAML reads `1e-4` (no dot) as a string; validation must still turn it into the number
    config = load_config(minimal(), ["train.learning_rate=1e-4", "train.weight_decay=1e-2", "strategy.lora.alpha=3e1"])
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert config.train.weight_decay == pytest.approx(0.01)
    assert config.strategy.lora.alpha == pytest.approx(30.0)


def test_apply_override_creates_nested_sections():
    raw: dict = {"data": {"train": "t.csv"}}
    apply_override(raw, "strategy.lora.r=4")
    assert raw["strategy"] == {"lora": {"r": 4}}
    assert load_config(raw).strategy.lora.r == 4


def test_apply_override_keeps_unparseable_yaml_as_text():
    raw: dict = {}
    apply_override(raw, "output_dir=runs/[x")
    assert raw["output_dir"] == "runs/[x"


@pytest.mark.parametrize("override", ["train.epochs", "=3", " =3", "no-equals-sign"])
def test_malformed_override_is_refused(override):
    with pytest.raises(ConfigError, match=r"must look like section\.field=value"):
        apply_override({}, override)


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="'epochs' is a value, not a section"):
        apply_override({"train": {"epochs": 3}}, "train.epochs.x=1")


def test_overrides_apply_before_validation():
    config = load_config(minimal(train={"epochs": 0}), ["train.epochs=2", "strategy.method=lora"])
    assert config.train.epochs == 2.0
    assert config.strategy.method == "lora"
    assert "train.epochs" in error_of(minimal(), ["train.epochs=0"])
    assert "Did you mean 'epochs'" in error_of(minimal(), ["train.epoch=2"])


def test_early_stopping_can_be_disabled_with_null():
    assert load_config(minimal(), ["train.early_stopping=null"]).train.early_stopping is None


def test_overrides_do_not_mutate_the_callers_dict():
    raw = {"data": {"train": "t.csv"}, "train": {"epochs": 3}}
    before = copy.deepcopy(raw)
    load_config(raw, ["train.epochs=1", "data.test=x.csv"])
    assert raw == before


def test_runconfig_source_round_trips():
    config = load_config(minimal(train={"epochs": 2}))
    again = load_config(config, ["train.batch_size=4"])
    assert again.train.epochs == 2 and again.train.batch_size == 4
    assert config.train.batch_size == "auto"  # the source config is not changed


def test_dump_config_round_trips_through_yaml():
    config = load_config(minimal(strategy={"method": "lora", "lora": {"target_modules": ["query"]}}))
    assert load_config(yaml.safe_load(dump_config(config))) == config


# ------------------------------------------------------------------------------------------ YAML files


def test_missing_yaml_file(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    message = error_of(missing)
    assert "Config file not found" in message and str(missing) in message
    assert "tunewise init" in message


def test_invalid_yaml(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  train: [unclosed\n  test: x\n", encoding="utf-8")
    message = error_of(path)
    assert "is not valid YAML" in message and str(path) in message


@pytest.mark.parametrize("content", ["- a\n- b\n", "just a string\n", ""])
def test_yaml_that_is_not_a_mapping(tmp_path: Path, content: str):
    path = tmp_path / "list.yaml"
    path.write_text(content, encoding="utf-8")
    assert "must hold a mapping of settings" in error_of(path)


def test_non_utf8_yaml(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("data:\n  train: caf\xe9.csv\n".encode("latin-1"))
    assert "not UTF-8" in error_of(path)


def test_yaml_errors_name_the_file(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  train: t.csv\ntrain:\n  epoch: 3\n", encoding="utf-8")
    message = error_of(path)
    assert message.startswith(f"{path} has 1 problem(s)")
    assert "Did you mean 'epochs'" in message


def test_relative_data_paths_resolve_beside_the_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.csv").write_text("text,label\na,b\n", encoding="utf-8")
    (folder / "data" / "test.csv").write_text("text,label\na,b\n", encoding="utf-8")
    path = folder / "run.yaml"
    path.write_text(
        "data:\n  train: data/train.csv\n  test: data/test.csv\n  validation: data/missing.csv\noutput_dir: runs/x\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    assert Path(config.data.train) == folder / "data" / "train.csv"
    assert Path(config.data.test) == folder / "data" / "test.csv"
    assert config.data.validation == "data/missing.csv"  # exists nowhere: left as written for a clear data error
    assert config.output_dir == "runs/x"  # output_dir is relative to where the user runs, not the YAML


def test_relative_data_paths_prefer_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\nbeside,x\n", encoding="utf-8")
    (tmp_path / "train.csv").write_text("text,label\ncwd,x\n", encoding="utf-8")
    (folder / "run.yaml").write_text("data:\n  train: train.csv\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config(folder / "run.yaml").data.train == "train.csv"


def test_example_config_is_valid_and_points_at_bundled_data():
    example = Path(__file__).resolve().parents[2] / "examples" / "sms_spam.yaml"
    config = load_config(example)
    assert Path(config.data.train).is_file()
    assert Path(config.data.test).is_file()
    assert config.model == "minilm-l6"


# ------------------------------------------------------------------------------------------ tunewise init


def test_init_prints_a_commented_config_that_validates(tmp_path: Path):
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.lstrip().startswith("#")
    assert sum(line.lstrip().startswith("#") for line in text.splitlines()) > 20  # every field is documented
    raw = yaml.safe_load(text)
    assert set(raw) == set(TextClassificationConfig.model_fields)  # every section, generated from the schema
    train_file = tmp_path / "train.csv"
    train_file.write_text("text,label\na,b\n", encoding="utf-8")
    raw["data"]["train"] = str(train_file)
    config = load_config(raw)
    assert config == load_config(
        {"data": {"train": str(train_file), "test": "data/test.csv"}, "output_dir": "runs/my-run"}
    )
    path = tmp_path / "from-init.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_config(path, [f"data.train={train_file}"]).data.train == str(train_file)


def test_init_documents_every_schema_field():
    text = CliRunner().invoke(app, ["init"]).stdout
    raw = yaml.safe_load(text)

    def keys(model, node, prefix=""):
        for name in model.model_fields:
            assert name in node, f"{prefix}{name} missing from `tunewise init`"

    keys(TextClassificationConfig, raw)
    keys(TextClassificationData, raw["data"], "data.")
    keys(DataConfig, raw["data"], "data.")
    keys(StrategyConfig, raw["strategy"], "strategy.")
    keys(TrainConfig, raw["train"], "train.")


# ------------------------------------------------------------------------------------------ rules and tasks


def test_every_broken_cross_field_rule_is_reported_in_one_error():
    raw = {
        "data": {"train": "t.csv", "text_pair_column": "text"},
        "train": {"gradient_accumulation": 2, "precision": "bf16"},
        "privacy": {"dp": {}},
    }
    message = error_of(raw)
    assert message.startswith("config has 3 problem(s):")
    lines = [line.strip() for line in message.splitlines()[1:]]
    assert len(lines) == 3 and all(line.startswith("- ") for line in lines)
    assert any(
        line.startswith("- train.gradient_accumulation: privacy.dp samples each step's batch as a whole")
        and line.endswith("(now 2).")
        for line in lines
    ), lines
    assert (
        "- train.precision: privacy.dp trains in fp32 (Opacus's per-example gradients); set train.precision: "
        "auto (now 'bf16')." in lines
    )
    assert "- data.text_pair_column: must name a different column than data.text_column (now 'text')." in lines


def test_a_config_obeying_every_rule_loads():
    raw = {"data": {"train": "t.csv", "text_pair_column": "hypothesis"}, "privacy": {"dp": {}}}
    config = load_config(raw)
    assert config.privacy.dp is not None and config.data.text_pair_column == "hypothesis"


@pytest.mark.parametrize(
    ("raw", "field", "task", "owner"),
    [
        (
            {"data": {"train": "t.csv", "prompt_column": "prompt"}},
            "data.prompt_column",
            "text-classification",
            "causal-lm",
        ),
        ({"data": {"train": "t.csv", "packing": True}}, "data.packing", "text-classification", "causal-lm"),
        (
            {"task": "causal-lm", "data": {"train": "t.csv", "text_pair_column": "b"}},
            "data.text_pair_column",
            "causal-lm",
            "text-classification",
        ),
        (
            {"task": "causal-lm", "data": {"train": "t.csv", "problem_type": "regression"}},
            "data.problem_type",
            "causal-lm",
            "text-classification",
        ),
        (
            {"data": {"train": "t.csv"}, "ner": {"tags_column": "tags"}},
            "ner",
            "text-classification",
            "token-classification",
        ),
        ({"data": {"train": "t.csv"}, "image": {}}, "image", "text-classification", "image-classification"),
        (
            {"task": "image-classification", "data": {"train": "imgs"}, "question_answering": {}},
            "question_answering",
            "image-classification",
            "question-answering",
        ),
    ],
)
def test_a_field_of_another_task_names_the_task_it_belongs_to(raw, field, task, owner):
    message = error_of(raw)
    assert (
        f"{field}: not a setting of task {task}; it belongs to task {owner}. Remove it, or set task: {owner}."
        in message
    )
    assert "unknown field" not in message


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("text-clasification", "text-classification"),
        ("causal_lm", "causal-lm"),
        ("image-classifcation", "image-classification"),
    ],
)
def test_unknown_task_suggests_the_close_name(typed, meant):
    message = error_of(minimal(task=typed))
    assert f"task: unknown task {typed!r}. Did you mean {meant!r}?" in message
    for name in CONFIG_CLASSES:
        assert name in message


def test_each_task_name_loads_its_own_config_class():
    for name, config_class in CONFIG_CLASSES.items():
        config = load_config({"task": name, "data": {"train": "t.csv"}})
        assert type(config) is config_class and config.task == name
    assert load_config({"task": "image-classification", "data": {"train": "x"}}).model == "efficientnet-lite0"


# ------------------------------------------------------------------------------------------ init per task


def test_init_for_image_classification_prints_a_template_of_that_task(tmp_path: Path):
    result = CliRunner().invoke(app, ["init", "--task", "image-classification"])
    assert result.exit_code == 0, result.output
    raw = yaml.safe_load(result.stdout)
    assert set(raw) == set(ImageClassificationConfig.model_fields)
    assert raw["task"] == "image-classification" and "image" in raw
    assert raw["model"] == "efficientnet-lite0"
    images = tmp_path / "images"
    images.mkdir()
    raw["data"]["train"] = str(images)
    config = ImageClassificationConfig.model_validate(raw)  # the task's own class, not only load_config
    assert load_config(raw) == config
    assert config.image == ImageClassificationConfig.model_fields["image"].get_default(call_default_factory=True)


@pytest.mark.parametrize("task", list(CONFIG_CLASSES))
def test_init_template_of_every_task_validates_against_its_class(task: str, tmp_path: Path):
    result = CliRunner().invoke(app, ["init", "--task", task])
    assert result.exit_code == 0, result.output
    config_class = CONFIG_CLASSES[task]
    raw = yaml.safe_load(result.stdout)
    assert set(raw) == set(config_class.model_fields)
    raw["data"]["train"] = str(tmp_path / "train.csv")
    config = config_class.model_validate(raw)
    assert config.task == task


def test_init_with_an_unknown_task_exits_1_and_lists_the_tasks():
    result = CliRunner().invoke(app, ["init", "--task", "nope"])
    output = " ".join(result.output.split())  # rich wraps the message at the terminal width
    assert result.exit_code == 1
    assert "--task 'nope' is not a task" in output
    assert f"choose one of: {', '.join(CONFIG_CLASSES)}." in output
    assert "Traceback" not in output and result.stdout == ""


def _section_classes(annotation) -> list[type[BaseModel]]:
    """Every pydantic model inside a field's annotation: X, X | None, dict[str, X], list[X], ..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in get_args(annotation) for model in _section_classes(argument)]


def test_every_field_of_every_task_config_has_a_description():
    missing: list[str] = []
    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        seen.add(model)
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                missing.append(f"{model.__name__}: {prefix}{name}")
            for section in _section_classes(field.annotation):
                walk(section, f"{prefix}{name}.")

    for config_class in CONFIG_CLASSES.values():
        walk(config_class, "")
    assert not missing, f"fields without a description: {missing}"
    # the walk reached the nested sections, including those inside containers and optional ones
    names = {model.__name__ for model in seen}
    assert {"DataConfig", "LoraConfig", "EarlyStoppingConfig", "DPConfig", "Threshold", "ImageSection"} <= names
