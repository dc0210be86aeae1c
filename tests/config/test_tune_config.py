"""The `tune:` section: the forms of a search-space entry, its rules (each message naming the entry and the fix,
all reported at once), and that `tunewise train`'s configs carry the section through unchanged."""

from __future__ import annotations

import pytest
import yaml

from tunewise.config.parsing import dump_config
from tunewise.errors import ConfigError
from tunewise.tasks import load_config


def with_tune(tune: dict, **extra) -> dict:
    return {"data": {"train": "train.csv"}, "tune": tune, **extra}


def error_of(source: dict) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(source)
    return str(raised.value)


def test_every_form_of_an_entry_loads_and_round_trips_through_config_yaml():
    space = {
        "train.learning_rate": {"log_uniform": [1e-5, 1e-3]},
        "train.warmup_ratio": {"uniform": [0.0, 0.2]},
        "strategy.lora.r": {"int": [4, 32], "log": True},
        "strategy.method": {"choice": ["full", "lora"]},
        "train.max_grad_norm": {"choice": [1.0, None]},
    }
    config = load_config(with_tune({"space": space, "sampler": "random", "pruner": "hyperband"}))
    assert config.tune is not None
    assert {key: spec.kind for key, spec in config.tune.space.items()} == {
        "train.learning_rate": "log_uniform",
        "train.warmup_ratio": "uniform",
        "strategy.lora.r": "int",
        "strategy.method": "choice",
        "train.max_grad_norm": "choice",
    }
    assert config.tune.space["strategy.lora.r"].log and config.tune.metric == "auto" and config.tune.seed is None
    assert load_config(yaml.safe_load(dump_config(config))).tune == config.tune  # config.yaml of a train run


def test_without_a_tune_section_the_config_is_as_before():
    assert load_config({"data": {"train": "train.csv"}}).tune is None


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (
            {"uniform": [0, 1], "choice": [1]},
            "tune.space: each tune.space entry is exactly one of {log_uniform: [lo, hi]}, {uniform: [lo, hi]}, "
            "{int: [lo, hi]} (log: true for a log scale), {choice: [a, b]}; got uniform and choice",
        ),
        ({}, "got none of them"),
        ({"uniform": [0.0, 0.2], "log": True}, "log: true goes with int; for floats on a log scale write {log_uniform"),
        ({"ranged": [0, 1]}, "tune.space.ranged: unknown field"),
        ({"uniform": [0.1]}, "tune.space.uniform"),
    ],
)
def test_an_entry_of_no_known_form_is_refused(entry, fragment):
    assert fragment in error_of(with_tune({"space": {"train.warmup_ratio": entry}}))


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        (
            {"train.learning_rate": {"log_uniform": [1e-3, 1e-5]}},
            "tune.space: train.learning_rate: log_uniform [0.001, 1e-05] needs lo below hi; write [1e-05, 0.001]",
        ),
        ({"train.batch_size": {"int": [8, 8]}}, "train.batch_size: int [8, 8] is one value; widen the range"),
        (
            {"train.weight_decay": {"log_uniform": [0.0, 0.1]}},
            "train.weight_decay: a log scale needs lo > 0 (got 0.0); start the range above 0, e.g. [0.001, 0.1]",
        ),
        ({"strategy.lora.r": {"int": [0, 16], "log": True}}, "strategy.lora.r: a log scale needs lo > 0 (got 0)"),
        ({"strategy.method": {"choice": []}}, "strategy.method: choice needs at least one value"),
        (
            {"train.learnin_rate": {"uniform": [0.0, 1.0]}},
            "train.learnin_rate is not a field of text-classification configs (did you mean train.learning_rate?)",
        ),
        ({"ner.label_all_tokens": {"choice": [True]}}, "ner.label_all_tokens is not a field of text-classification"),
        (
            {"strategy.lora": {"choice": [1]}},
            "strategy.lora is a section; search one of its fields, e.g. strategy.lora.r",
        ),
        ({"output_dir": {"choice": ["a", "b"]}}, "output_dir cannot be searched: it fixes where the study writes"),
        ({"train.seed": {"int": [0, 3]}}, "train.seed cannot be searched"),
        ({"data.test": {"choice": ["a.csv"]}}, "data.test cannot be searched: it fixes the data; remove it"),
        ({"tune.sampler": {"choice": ["tpe", "random"]}}, "tune.sampler cannot be searched: it fixes the study itself"),
    ],
)
def test_a_space_that_cannot_be_searched_names_the_entry_and_the_fix(space, fragment):
    assert fragment in error_of(with_tune({"space": space}))


def test_every_problem_of_the_space_is_reported_at_once():
    space = {
        "train.learning_rate": {"log_uniform": [1e-3, 1e-5]},
        "train.learnin_rate": {"uniform": [0.0, 1.0]},
        "output_dir": {"choice": ["a"]},
        "strategy.method": {"choice": []},
    }
    message = error_of(with_tune({"space": space}))
    assert message.startswith("config has 4 problem(s):")
    for fragment in ("needs lo below hi", "is not a field", "output_dir cannot be searched", "choice needs at least"):
        assert fragment in message


def test_tuning_needs_early_stopping_to_keep_each_trials_best_model():
    message = error_of(with_tune({"space": {}}, train={"early_stopping": None}))
    assert "train.early_stopping: tunewise tune judges each trial by its best validation" in message
    assert "{patience: 1000}" in message
    fields_of_a_section_that_is_off = {"train.early_stopping.patience": {"int": [1, 3]}}
    message = error_of(with_tune({"space": fields_of_a_section_that_is_off}, train={"early_stopping": None}))
    assert "train.early_stopping.patience: train.early_stopping is null in this config; set it" in message


def test_one_metric_judges_trials_and_picks_their_models():
    message = error_of(with_tune({"metric": "accuracy"}, train={"early_stopping": {"metric": "f1_macro"}}))
    assert "tune.metric: trials are judged by tune.metric and keep their best model by train.early_stopping" in message
    assert load_config(with_tune({"metric": "accuracy"}, train={"early_stopping": {"metric": "accuracy"}})).tune


def test_unknown_keys_of_the_section_are_refused():
    assert "tune.samplr: unknown field. Did you mean 'sampler'?" in error_of(with_tune({"samplr": "tpe"}))
    assert "tune.pruner" in error_of(with_tune({"pruner": "asha"}))
