"""Rules that need the task's learnt facts or the data itself, checked in preparation, before any work.

The config's own rules (one field against another) are checked when it is loaded
(`tunewise.config.rules`); these need to know what the task can do (its capabilities, its metrics,
its labels) or what columns the data has. Each is one named function that returns the problem,
with what to change, or None; `check_task_rules` runs every one so all are reported together.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from tunewise.config.sections import RunConfig
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.explain.results import IMAGE_METHODS, METHODS
from tunewise.types import TaskFacts

TaskRule = Callable[[RunConfig, TaskFacts, dict[str, pd.DataFrame]], TunewiseError | None]


def selection_metric_is_reported(config: RunConfig, facts: TaskFacts, frames: dict) -> TunewiseError | None:
    stopping = config.train.early_stopping
    if stopping is None or stopping.metric == "auto" or stopping.metric in facts.metrics:
        return None
    return ConfigError(
        f"train.early_stopping.metric {stopping.metric!r} is not reported for {facts.name} ({facts.problem_type}). "
        f"Choose one of: {', '.join(facts.metrics)}."
    )


def balance_needs_classes(config: RunConfig, facts: TaskFacts, frames: dict) -> TunewiseError | None:
    if config.data.balance == "none" or facts.capabilities.class_labels:
        return None
    return ConfigError(
        f"data.balance {config.data.balance} balances the classes of single-label classification; this data is "
        f"{facts.problem_type}. Set data.balance: none."
    )


def dp_is_supported(config: RunConfig, facts: TaskFacts, frames: dict) -> TunewiseError | None:
    if config.privacy.dp is None or facts.capabilities.private_training:
        return None
    return ConfigError(
        f"privacy.dp supports text-classification and causal-lm (LoRA) for now, not {facts.name}; remove privacy.dp."
    )


def fairness_settings_apply(config: RunConfig, facts: TaskFacts, frames: dict) -> TunewiseError | None:
    fairness = config.fairness
    mitigations = fairness.group_column or fairness.augment or fairness.reweight_groups or fairness.threshold_optimizer
    if not mitigations or facts.capabilities.fairness:
        return None
    return ConfigError(
        "fairness settings (group_column, augment, reweight_groups, threshold_optimizer) apply to single-label "
        "classification of one text column; remove them for this task."
    )


def positive_label_is_a_label(config: RunConfig, facts: TaskFacts, frames: dict) -> TunewiseError | None:
    positive = config.fairness.positive_label
    if not (facts.capabilities.fairness and config.fairness.enabled) or positive is None:
        return None
    if positive in facts.label_names:
        return None
    return ConfigError(
        f"fairness.positive_label {positive!r} is not a label of this data; choose one of: "
        f"{', '.join(facts.label_names)}."
    )


def group_column_is_in_the_data(config: RunConfig, facts: TaskFacts, frames: dict) -> TunewiseError | None:
    """The group column must stand in every split that uses it: the scored one, train for reweighting,
    validation for the threshold optimizer."""
    fairness, column = config.fairness, config.fairness.group_column
    if not facts.capabilities.fairness or column is None or not frames:
        return None
    scored = "test" if "test" in frames else "validation"
    needed = {scored: fairness.enabled, "train": fairness.reweight_groups, "validation": fairness.threshold_optimizer}
    for name, required in needed.items():
        if required and name in frames and column not in frames[name].columns:
            source = getattr(config.data, name) or f"{config.data.train} (held out)"
            columns = ", ".join(c for c in frames[name].columns if c != "_row")
            return DataError(
                f"{source}: fairness.group_column {column!r} is not a column of the {name} data. Add it (one group "
                f"per row, e.g. gender) or correct the name; columns: {columns}."
            )
    return None


def canaries_need_generation(config: RunConfig, facts: TaskFacts, frames: dict) -> TunewiseError | None:
    """Canaries are secrets in generated text: only a model that writes text can give them away."""
    if not config.privacy.canaries or facts.capabilities.generation:
        return None
    return ConfigError(
        f"privacy.canaries measure what a text-generating model memorised; a {facts.name} model does not generate "
        "text. Set privacy.canaries: 0 (the membership-inference audit measures what a classifier leaks)."
    )


def explanations_are_supported(config: RunConfig, facts: TaskFacts, frames: dict) -> TunewiseError | None:
    if config.explain.enabled is not True or facts.capabilities.explanations:
        return None
    return ConfigError(
        f"explain.enabled: true, but a {facts.name} model cannot explain its predictions (explanations exist for "
        "text classification, token classification, question answering and image classification). Set "
        "explain.enabled: auto (it turns itself off where it does not apply) or false."
    )


def explain_method_fits_the_inputs(config: RunConfig, facts: TaskFacts, frames: dict) -> TunewiseError | None:
    """Grad-CAM needs a convolutional feature map (images); the token methods need tokens (text)."""
    explain = config.explain
    if explain.method == "auto" or explain.enabled is False or not facts.capabilities.explanations:
        return None
    reads_text = facts.capabilities.reads_text
    methods = METHODS if reads_text else IMAGE_METHODS
    if explain.method in methods:
        return None
    return ConfigError(
        f"explain.method {explain.method} does not apply to a model that reads {'text' if reads_text else 'images'}; "
        f"choose auto or one of: {', '.join(methods)}."
    )


TASK_RULES: tuple[TaskRule, ...] = (
    selection_metric_is_reported,
    balance_needs_classes,
    dp_is_supported,
    fairness_settings_apply,
    positive_label_is_a_label,
    group_column_is_in_the_data,
    canaries_need_generation,
    explanations_are_supported,
    explain_method_fits_the_inputs,
)


def check_task_rules(config: RunConfig, facts: TaskFacts, frames: dict[str, pd.DataFrame]) -> list[TunewiseError]:
    return [problem for rule in TASK_RULES if (problem := rule(config, facts, frames)) is not None]


def raise_all(problems: list[TunewiseError]) -> None:
    """Nothing, or one error listing every problem: the class they share (ConfigError, DataError), if any."""
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    kinds = {type(problem) for problem in problems}
    kind = kinds.pop() if len(kinds) == 1 else TunewiseError
    listed = "\n".join(f"  - {problem}" for problem in problems)
    raise kind(f"{len(problems)} problems, all to fix before training:\n{listed}")
