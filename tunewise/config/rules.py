"""Cross-field rules of a run config: one named function per rule, one message that says what to change.

A rule reads the validated config and returns None when it holds, or the problem in words. Rules
are grouped by concern (privacy and fairness here; each task's own beside its config section in
`tunewise/tasks/`), and a config class lists the rules it obeys in `rules`. `enforce` runs every one
and reports all the problems together, each at the field it names, so one look at the error lists
everything to fix. Rules that need the data or the task's learnt label space (a metric the task does
not report, a column the data lacks) run later, in `tunewise.prepare.rules`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

RULE_ERROR = "rule"  # the pydantic error type of a broken rule


@dataclass(frozen=True)
class Rule:
    """A named cross-field check: `check(config)` is None when the rule holds, else what to change."""

    name: str
    concern: str  # data, privacy, fairness, or the task it belongs to
    field: str  # the dotted field the problem is reported at
    check: Callable[[Any], str | None]


def rule(concern: str, field: str) -> Callable[[Callable[[Any], str | None]], Rule]:
    """Decorator: the function becomes a `Rule` named after it."""

    def register(check: Callable[[Any], str | None]) -> Rule:
        return Rule(check.__name__, concern, field, check)

    return register


def enforce(config: Any, rules: Sequence[Rule]) -> None:
    """Run every rule; raise one ValidationError holding every broken rule, each at its field."""
    broken = [(item, message) for item in rules if (message := item.check(config)) is not None]
    if not broken:
        return
    details = [
        InitErrorDetails(
            type=PydanticCustomError(RULE_ERROR, "{message}", {"message": message, "rule": item.name}),
            loc=tuple(item.field.split(".")),
            input=_value_at(config, item.field),
        )
        for item, message in broken
    ]
    raise ValidationError.from_exception_data(type(config).__name__, details)


def _value_at(config: Any, dotted: str) -> Any:
    return reduce(lambda node, name: getattr(node, name, None), dotted.split("."), config)


# ------------------------------------------------------------------------------------------ privacy


@rule("privacy", "train.gradient_accumulation")
def dp_samples_whole_batches(config: Any) -> str | None:
    if config.privacy.dp is not None and config.train.gradient_accumulation != 1:
        return (
            "privacy.dp samples each step's batch as a whole; instead of train.gradient_accumulation, set "
            "train.batch_size to the logical batch and privacy.dp.max_physical_batch_size to what fits in memory"
        )
    return None


@rule("privacy", "train.precision")
def dp_trains_in_fp32(config: Any) -> str | None:
    if config.privacy.dp is not None and config.train.precision in ("bf16", "fp16"):
        return "privacy.dp trains in fp32 (Opacus's per-example gradients); set train.precision: auto"
    return None


@rule("privacy", "train.compile")
def dp_runs_uncompiled(config: Any) -> str | None:
    if config.privacy.dp is not None and config.train.compile is True:
        return "privacy.dp does not run compiled (Opacus's hooks); set train.compile: auto or false"
    return None


@rule("privacy", "privacy.dp")
def dp_samples_rows_uniformly(config: Any) -> str | None:
    if config.privacy.dp is not None and (config.data.balance != "none" or config.fairness.reweight_groups):
        return (
            "privacy.dp samples every row with the same probability, as its accounting assumes, and uses the "
            "model's own loss: set data.balance: none and fairness.reweight_groups: false"
        )
    return None


# ------------------------------------------------------------------------------------------ fairness


@rule("fairness", "fairness.threshold_optimizer")
def threshold_optimizer_needs_test(config: Any) -> str | None:
    if config.fairness.threshold_optimizer and config.data.test is None:
        return "fairness.threshold_optimizer fits on validation and is judged on test: add data.test"
    return None


@rule("fairness", "fairness.group_column")
def group_mitigations_need_groups(config: Any) -> str | None:
    fairness = config.fairness
    if (fairness.reweight_groups or fairness.threshold_optimizer) and fairness.group_column is None:
        return "fairness.reweight_groups and threshold_optimizer need fairness.group_column (one group per row)"
    return None


COMMON_RULES: tuple[Rule, ...] = (
    dp_samples_whole_batches,
    dp_trains_in_fp32,
    dp_runs_uncompiled,
    dp_samples_rows_uniformly,
    threshold_optimizer_needs_test,
    group_mitigations_need_groups,
)
