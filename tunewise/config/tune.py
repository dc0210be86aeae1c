"""The `tune:` section: which config fields `tunewise tune` searches, over what, and how trials are judged.

`tunewise train` ignores the section; `tunewise tune` runs one training per trial with the sampled
values written into the config (`tunewise.jobs.tune`). The rules below check the space against the
config it sits in (every key a field of this task, nothing that would make trials incomparable),
and are reported with every other broken rule at once.
"""

from __future__ import annotations

import builtins
import difflib
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from tunewise.config.base import Section
from tunewise.config.rules import Rule, rule

RANGE_KINDS = ("log_uniform", "uniform", "int")
KINDS = (*RANGE_KINDS, "choice")
SPEC_FORMS = (
    "{log_uniform: [lo, hi]}, {uniform: [lo, hi]}, {int: [lo, hi]} (log: true for a log scale), {choice: [a, b]}"
)

EXAMPLE = """tune:
  space:
    train.learning_rate: {log_uniform: [1.0e-5, 1.0e-3]}
    train.warmup_ratio: {uniform: [0.0, 0.2]}
    train.batch_size: {choice: [16, 32]}"""

# Fields a trial must not change: where runs go, and what makes trials' validation scores comparable (the
# task, its targets, which rows are validation, the score itself).
FIXED_FIELDS = {
    "task": "the task",
    "output_dir": "where the study writes its trials",
    "train.seed": "the split of validation from train and the initialisation every trial shares",
    "data.train": "the data",
    "data.validation": "the data",
    "data.test": "the data",
    "data.validation_ratio": "which rows are validation",
    "data.text_column": "what the model reads",
    "data.label_column": "what the model learns",
    "data.problem_type": "what the model learns and how it is scored",
    "train.early_stopping.metric": "the score trials are compared by (set tune.metric instead)",
}


class ParamSpec(Section):
    """One searched field: exactly one of a float range, a log-scale float range, an integer range, or choices."""

    log_uniform: tuple[float, float] | None = Field(
        default=None, description="[lo, hi]: floats drawn on a log scale (learning rates); 0 < lo < hi."
    )
    uniform: tuple[float, float] | None = Field(default=None, description="[lo, hi]: floats drawn evenly; lo < hi.")
    int: tuple[builtins.int, builtins.int] | None = Field(
        default=None, description="[lo, hi]: whole numbers from lo to hi, both included; lo < hi."
    )
    log: bool = Field(default=False, description="With int: draw on a log scale (then lo > 0).")
    choice: list[str | builtins.int | float | bool | None] | None = Field(
        default=None, description="[a, b, ...]: one of these values (strings, numbers, true/false, null)."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            found = f"got {' and '.join(given)}" if given else "got none of them"
            raise ValueError(f"each tune.space entry is exactly one of {SPEC_FORMS}; {found}")
        if self.log and given != ["int"]:
            raise ValueError("log: true goes with int; for floats on a log scale write {log_uniform: [lo, hi]}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    @property
    def values(self) -> Any:
        """The range [lo, hi] or the list of choices."""
        return getattr(self, self.kind)

    def __repr__(self) -> str:  # as the user wrote it, for error messages that quote the space
        return repr({self.kind: list(self.values), **({"log": True} if self.log else {})})


class TuneConfig(Section):
    space: dict[str, ParamSpec] = Field(
        default_factory=dict,
        description="Config fields to search, by dotted path, each with its range or choices, e.g. "
        "train.learning_rate: {log_uniform: [1.0e-5, 1.0e-3]}, train.batch_size: {choice: [16, 32]}, "
        "strategy.lora.r: {int: [4, 32], log: true}. Fields outside it keep the config's values.",
    )
    metric: str = Field(
        default="auto",
        description="Validation metric trials are judged by, each by its best evaluation; auto: the task's selection "
        "metric (train.early_stopping.metric). Set here, it also picks each trial's best model.",
    )
    direction: Literal["auto", "maximize", "minimize"] = Field(
        default="auto", description="auto: the metric's own direction (maximize f1_macro, minimize loss or mse)."
    )
    sampler: Literal["tpe", "random"] = Field(
        default="tpe",
        description="How trials pick values: tpe (Optuna's Tree-structured Parzen Estimator, after startup_trials "
        "random ones) or random.",
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        default="median",
        description="Stop unpromising trials early: median (below the median of earlier trials at the same step, "
        "once startup_trials have finished), hyperband, or none.",
    )
    seed: int | None = Field(default=None, description="Seed of the sampler; null: train.seed.")
    startup_trials: int = Field(
        default=5,
        ge=0,
        description="Trials drawn at random before TPE models the space, and finished before the median pruner "
        "stops any trial.",
    )


# ------------------------------------------------------------------------------------------ rules


def _space(config: Any) -> dict[str, ParamSpec]:
    tune = getattr(config, "tune", None)
    return tune.space if tune is not None else {}


def _ranges(config: Any) -> list[tuple[str, ParamSpec, Any, Any]]:
    return [(key, spec, *spec.values) for key, spec in _space(config).items() if spec.kind in RANGE_KINDS]


def _listed(problems: list[str]) -> str | None:
    return "; ".join(problems) if problems else None


@rule("tune", "tune.space")
def ranges_are_ordered(config: Any) -> str | None:
    return _listed(
        [
            f"{key}: {spec.kind} [{lo}, {hi}] needs lo below hi; write [{min(lo, hi)}, {max(lo, hi)}]"
            if lo != hi
            else f"{key}: {spec.kind} [{lo}, {hi}] is one value; widen the range, or set {key} in the config instead"
            for key, spec, lo, hi in _ranges(config)
            if lo >= hi
        ]
    )


@rule("tune", "tune.space")
def log_ranges_are_positive(config: Any) -> str | None:
    return _listed(
        [
            f"{key}: a log scale needs lo > 0 (got {lo}); start the range above 0, e.g. [{hi / 100:g}, {hi}]"
            if hi > 0
            else f"{key}: a log scale needs lo > 0 (got {lo}); use uniform for this range"
            for key, spec, lo, hi in _ranges(config)
            if (spec.kind == "log_uniform" or spec.log) and lo <= 0
        ]
    )


@rule("tune", "tune.space")
def choices_are_given(config: Any) -> str | None:
    empty = [key for key, spec in _space(config).items() if spec.kind == "choice" and not spec.choice]
    return _listed([f"{key}: choice needs at least one value, e.g. {{choice: [a, b]}}" for key in empty])


@rule("tune", "tune.space")
def space_names_fields_of_this_task(config: Any) -> str | None:
    return _listed([problem for key in _space(config) if (problem := _field_problem(config, key)) is not None])


def _field_problem(config: Any, key: str) -> str | None:
    """Why `key` is not one value of this config, or None: the walk goes through the config itself, so a key
    inside a section that is off (train.early_stopping: null) is named as such."""
    node: Any = config
    walked: list[str] = []
    for part in key.split("."):
        if node is None:
            return f"{key}: {'.'.join(walked)} is null in this config; set it to search its fields"
        fields = type(node).model_fields if isinstance(node, BaseModel) else {}
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {'.'.join([*walked, close[0]])}?)" if close else ""
            return f"{key} is not a field of {config.task} configs{hint}"
        walked.append(part)
        node = getattr(node, part)
    if isinstance(node, BaseModel):
        return f"{key} is a section; search one of its fields, e.g. {key}.{next(iter(type(node).model_fields))}"
    return None


@rule("tune", "tune.space")
def space_leaves_trials_comparable(config: Any) -> str | None:
    fixed = [key for key in _space(config) if key in FIXED_FIELDS or key == "tune" or key.startswith("tune.")]
    return _listed(
        [f"{key} cannot be searched: it fixes {FIXED_FIELDS.get(key, 'the study itself')}; remove it" for key in fixed]
    )


@rule("tune", "train.early_stopping")
def trials_keep_their_best_evaluation(config: Any) -> str | None:
    if getattr(config, "tune", None) is None or config.train.early_stopping is not None:
        return None
    return (
        "tunewise tune judges each trial by its best validation and keeps that model, which early stopping "
        "selects; set train.early_stopping (a large patience, e.g. {patience: 1000}, never stops early)"
    )


@rule("tune", "tune.metric")
def one_selection_metric(config: Any) -> str | None:
    tune, stopping = getattr(config, "tune", None), config.train.early_stopping
    if tune is None or stopping is None or "auto" in (tune.metric, stopping.metric) or tune.metric == stopping.metric:
        return None
    return (
        f"trials are judged by tune.metric and keep their best model by train.early_stopping.metric "
        f"({stopping.metric!r}); set only one of them, or the same metric in both"
    )


TUNE_RULES: tuple[Rule, ...] = (
    ranges_are_ordered,
    log_ranges_are_positive,
    choices_are_given,
    space_names_fields_of_this_task,
    space_leaves_trials_comparable,
    trials_keep_their_best_evaluation,
    one_selection_metric,
)
