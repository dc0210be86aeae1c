"""The search space in Optuna's terms, and each trial's config: the user's config with the sampled values in it.

A trial's config is built the way a user's is: as a dict, validated by `tunewise.tasks.load_config`, so
a sampled combination the schema or a rule refuses is a ConfigError of that trial alone.
"""

from __future__ import annotations

from typing import Any

import optuna

from tunewise.config.sections import RunConfig
from tunewise.config.tune import EXAMPLE, ParamSpec, TuneConfig
from tunewise.errors import ConfigError
from tunewise.tasks import load_config


def tuning_of(config: RunConfig) -> TuneConfig:
    """The config's `tune:` section, or a ConfigError that says what to add."""
    if config.tune is None or not config.tune.space:
        what = "has no tune: section" if config.tune is None else "has an empty tune.space"
        raise ConfigError(
            f"The config {what}, so there is nothing to search. Add the fields to tune and their ranges, e.g.\n"
            f"{EXAMPLE}\n(each entry one of log_uniform, uniform, int or choice)."
        )
    return config.tune


def suggest(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """One value per searched field, drawn by the study's sampler (or the values enqueued for a retried trial)."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.choice is not None:
            values[key] = trial.suggest_categorical(key, spec.choice)
        elif spec.int is not None:
            values[key] = trial.suggest_int(key, spec.int[0], spec.int[1], log=spec.log)
        else:
            lo, hi = spec.values
            values[key] = trial.suggest_float(key, lo, hi, log=spec.log_uniform is not None)
    return values


def with_values(config: RunConfig, values: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The config as a dict without its tune section, each value at its dotted field, into `output_dir`.

    A tune.metric set by the user also picks each trial's best model (train.early_stopping.metric, left
    auto: a rule refuses two different metrics), so the kept model is the one the trial is judged by."""
    raw = config.model_dump(mode="json", exclude={"tune"})
    for key, value in values.items():
        *sections, name = key.split(".")
        node = raw
        for part in sections:
            node = node[part]
        node[name] = value
    raw["output_dir"] = output_dir
    tune, stopping = config.tune, raw["train"].get("early_stopping")
    if tune is not None and tune.metric != "auto" and stopping is not None:
        stopping["metric"] = tune.metric
    return raw


def trial_config(config: RunConfig, values: dict[str, Any], output_dir: str) -> RunConfig:
    return load_config(with_values(config, values, output_dir))


def check_space_values(config: RunConfig) -> None:
    """Each bound and each choice of the space, set alone in the config, must be a value its field takes;
    otherwise every trial drawing it would fail. All such values are reported at once."""
    problems = []
    for key, spec in tuning_of(config).space.items():
        for value in spec.values:
            try:
                trial_config(config, {key: value}, config.output_dir)
            except ConfigError as error:
                reasons = [line.strip().removeprefix("- ") for line in str(error).splitlines()[1:]] or [str(error)]
                problems.append(f"tune.space {key}: {value!r} is not a value it takes: {'; '.join(reasons)}")
    if problems:
        raise ConfigError(
            f"{len(problems)} value(s) of tune.space cannot be set; change their ranges or choices:\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )
