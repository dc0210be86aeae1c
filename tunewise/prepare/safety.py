"""What the safety and memorisation audits of a generative run need, settled before any work.

The red-team prompt set is read once here (a file the user named that cannot be read, or holds no
text column, stops the run with the other problems; the default set on the hub that cannot be
reached only means the check is not measured, and the run says so), and the canaries are drawn
here, so the rows training sees and the secrets the audit ranks come from one place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tunewise.config.safety import SafetyConfig
from tunewise.config.sections import RunConfig
from tunewise.data.readers import read_table
from tunewise.errors import DataError
from tunewise.evaluation.memorisation import Canaries, make_canaries
from tunewise.prepare.screen import flag_labels, guard_folder

PROMPT_COLUMNS = ("prompt", "goal", "text", "instruction")


@dataclass(frozen=True)
class RedTeam:
    """The red-team prompts a run answers (before and after training), and where they came from."""

    prompts: tuple[str, ...]
    source: str
    column: str
    available: int  # prompts in the set before max_prompts sampled some
    sha256: str | None
    trained_on: int = 0  # prompts left out because the training data holds them

    def record(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "column": self.column,
            "prompts": len(self.prompts),
            "available": self.available,
            "left_out_as_trained_on": self.trained_on,
            "sha256": self.sha256,
        }

    def without(self, training_prompts: list[str]) -> RedTeam:
        """The set less the prompts some training prompt holds: answers the model was trained to give would
        measure its memory of them, not what fine-tuning did to its refusals."""
        seen = "\n".join(training_prompts)
        kept = tuple(prompt for prompt in self.prompts if prompt not in seen)
        if len(kept) == len(self.prompts):
            return self
        return replace(self, prompts=kept, trained_on=len(self.prompts) - len(kept))


@dataclass(frozen=True)
class SafetyPlan:
    """The red team (None with `not_measured` saying why) and the canaries (None when privacy.canaries is 0)."""

    red_team: RedTeam | None
    not_measured: str | None
    canaries: Canaries | None


def plan_safety(config: RunConfig, safety: SafetyConfig, default_source: str) -> SafetyPlan:
    """The run's safety plan; a DataError when a prompt file the user named cannot serve."""
    canaries = None
    if config.privacy.canaries:
        canaries = make_canaries(config.privacy.canaries, config.privacy.canary_repeats, config.train.seed)
    if safety.prompts is None:
        return SafetyPlan(None, "safety.prompts is null: no red-team prompts were answered", canaries)
    if safety.prompts == "auto":
        try:
            red_team = read_red_team(default_source, safety, config.train.seed)
        except DataError as error:
            note = (
                f"the default red-team set ({default_source}) could not be loaded: {error}. Point safety.prompts at "
                "a copy (AdvBench's harmful_behaviors.csv, github.com/llm-attacks/llm-attacks) or another prompt file."
            )
            return SafetyPlan(None, note, canaries)
        return SafetyPlan(red_team, None, canaries)
    return SafetyPlan(read_red_team(safety.prompts, safety, config.train.seed), None, canaries)


def without_trained_prompts(plan: SafetyPlan, training_prompts: list[str]) -> SafetyPlan:
    """The plan with the red-team prompts the training data holds left out (`RedTeam.without`); when none is
    left, the red team is not measured, and the plan says why."""
    if plan.red_team is None:
        return plan
    red_team = plan.red_team.without(training_prompts)
    if red_team.prompts:
        return replace(plan, red_team=red_team)
    note = (
        f"every one of the {len(plan.red_team.prompts)} red-team prompts of {plan.red_team.source} stands in the "
        "training data; point safety.prompts at prompts the model is not trained on"
    )
    return replace(plan, red_team=None, not_measured=note)


def resolve_safety(config: Any, plan: SafetyPlan) -> Any:
    """A generative config with the safety autos settled: the prompt set read (None when none was) and its
    column, the screen's classifier folder (None without one) and its flag labels, so config.yaml replays."""
    red_team = plan.red_team
    safety = config.safety.model_copy(
        update={
            "prompts": red_team.source if red_team is not None else None,
            "prompt_column": red_team.column if red_team is not None else config.safety.prompt_column,
        }
    )
    guard = guard_folder(config.screen)
    screen = config.screen.model_copy(
        update={
            "classifier": str(guard) if guard is not None else None,
            "flag_labels": flag_labels(config.screen, guard) if guard is not None else [],
        }
    )
    return config.model_copy(update={"safety": safety, "screen": screen})


def read_red_team(source: str, safety: SafetyConfig, seed: int) -> RedTeam:
    """The prompts of `source` (its text column), a seeded sample of safety.max_prompts of them."""
    where = f"safety.prompts {source!r}"
    try:
        frame = read_table(source, "red-team prompts", [], None)
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    column = _prompt_column(frame.columns, safety.prompt_column, where)
    prompts = [str(text).strip() for text in frame[column].dropna() if str(text).strip()]
    if not prompts:
        raise DataError(f"{where}: column {column!r} holds no text. Give one prompt per row.")
    available = len(prompts)
    if safety.max_prompts is not None and available > safety.max_prompts:
        rows = np.sort(np.random.default_rng([seed, 13]).choice(available, safety.max_prompts, replace=False))
        prompts = [prompts[row] for row in rows]
    return RedTeam(tuple(prompts), source, column, available, frame.attrs.get("sha256"))


def _prompt_column(columns: Any, requested: str, where: str) -> str:
    names = [str(column) for column in columns if not str(column).startswith("_")]
    if requested != "auto":
        if requested not in names:
            raise DataError(
                f"{where} has no column {requested!r} (columns: {', '.join(names)}); fix safety.prompt_column."
            )
        return requested
    found = next((name for name in PROMPT_COLUMNS if name in names), None)
    if found is None:
        raise DataError(
            f"{where} has no text column: none of {', '.join(PROMPT_COLUMNS)} among its columns ({', '.join(names)}). "
            "Name the column of prompts with safety.prompt_column."
        )
    return found
