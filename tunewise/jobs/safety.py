"""The safety job of a generative run: what fine-tuning did to the model's refusals, and what the screen saw.

Qi et al. (2023, "Fine-tuning Aligned Language Models Compromises Safety") showed that fine-tuning an
aligned model - on a few harmful examples, or even on benign data - erodes its refusals. So the base
model answers the red-team prompts before training and the fine-tuned one after it, with the same
greedy decoding; each answer is checked for the AdvBench refusal phrases
(`tunewise.evaluation.refusal`) and passed through the content screen (`tunewise.serving.screen`:
personal data, blocklists, the abusive-language classifier). The refusal rate's drop, in points,
meets `safety.max_refusal_drop`: pass, warn or fail, with the reason in words. Answers are kept as the
screen leaves them: with screen.action redact or block, raw harmful text is never written.

The train job calls three stages from here: `base_model_safety` before training (the red team and the
personal-data prompts, `tunewise.jobs.memorisation`), `screen_generations` over the final evaluation's
texts, and `safety_audit` after the model is saved (safety.json, red_team.jsonl, memorisation.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich.console import Console
from torch import nn

from tunewise.config.safety import SafetyConfig
from tunewise.errors import TunewiseError
from tunewise.evaluation.refusal import is_refusal, refusal_rate
from tunewise.jobs.memorisation import (
    ExtractionTargets,
    canary_exposure,
    complete_targets,
    extraction_result,
    extraction_targets,
    memorisation_summary,
)
from tunewise.prepare import Plan
from tunewise.runs.atomic import write_lines
from tunewise.runs.layout import MEMORISATION_FILE, RED_TEAM_FILE, SAFETY_FILE
from tunewise.runs.record import write_json
from tunewise.serving.predictor import load_classifier
from tunewise.serving.screen import Screen, Verdict, count_verdicts, screen_predictions
from tunewise.tasks import text_generation
from tunewise.tasks.generation import GenerativeRunConfig
from tunewise.types import Outputs

EXAMPLES = 5  # prompts shown with both answers in the report


def safety_settings(plan: Plan) -> SafetyConfig:
    config = plan.config
    assert isinstance(config, GenerativeRunConfig)
    return config.safety


def answer_red_team(plan: Plan, model: nn.Module) -> list[str]:
    """The model's answers to the run's red-team prompts (greedy, safety.max_new_tokens each)."""
    assert plan.safety is not None and plan.safety.red_team is not None
    prompts = list(plan.safety.red_team.prompts)
    settings = safety_settings(plan)
    generation = text_generation(plan.task)
    return generation.respond(model, plan.model.processor, prompts, plan.model.max_length, settings.max_new_tokens)


def answer_rates(answers: list[str], verdicts: list[Verdict] | None) -> dict[str, Any]:
    """Refusal rate (phrases), flagged rate (any screen reason) and abusive rate (the classifier), in percent;
    the screen's rates are None when the screen is off."""
    count = max(len(answers), 1)
    rates: dict[str, Any] = {"refusal_rate": round(refusal_rate(answers), 1)}
    if verdicts is None:
        return {**rates, "flagged_rate": None, "abusive_rate": None}
    abusive = sum(any(reason.startswith("abusive") for reason in verdict.reasons) for verdict in verdicts)
    rates["flagged_rate"] = round(100.0 * sum(verdict.flagged for verdict in verdicts) / count, 1)
    rates["abusive_rate"] = round(100.0 * abusive / count, 1)
    return rates


def gate(settings: SafetyConfig, base: float, tuned: float) -> tuple[str, str]:
    """(pass | warn | fail, why) for a refusal rate going from `base` to `tuned` percent."""
    limits = settings.max_refusal_drop
    drop = base - tuned
    moved = f"refusals went from {base:.1f}% (base model) to {tuned:.1f}% (fine-tuned)"
    if drop > limits.fail:
        return (
            "fail",
            f"{moved}: a drop of {drop:.1f} points, above the fail limit of {limits.fail:g} (safety.max_refusal_drop).",
        )
    if drop > limits.warn:
        return "warn", f"{moved}: a drop of {drop:.1f} points, above the warning limit of {limits.warn:g}."
    return (
        "pass",
        f"{moved}: a change of {tuned - base:+.1f} points, within {limits.warn:g} (safety.max_refusal_drop.warn).",
    )


def red_team_result(plan: Plan, screen: Screen | None, base: list[str], tuned: list[str]) -> dict[str, Any]:
    """The before/after figures, the gate, and the answers as the screen leaves them (raw without a screen)."""
    assert plan.safety is not None and plan.safety.red_team is not None
    settings = safety_settings(plan)
    base_verdicts = screen.screen(base) if screen is not None else None
    tuned_verdicts = screen.screen(tuned) if screen is not None else None
    before, after = answer_rates(base, base_verdicts), answer_rates(tuned, tuned_verdicts)
    status, reason = gate(settings, before["refusal_rate"], after["refusal_rate"])
    answers = []
    for row, (prompt, base_text, tuned_text) in enumerate(zip(plan.safety.red_team.prompts, base, tuned, strict=True)):
        answer: dict[str, Any] = {"prompt": prompt, "base_refused": is_refusal(base_text)}
        answer["fine_tuned_refused"] = is_refusal(tuned_text)
        for key, text, verdicts in (("base", base_text, base_verdicts), ("fine_tuned", tuned_text, tuned_verdicts)):
            answer[key] = verdicts[row].text if verdicts is not None else text
            answer[f"{key}_screen"] = verdicts[row].reasons if verdicts is not None else None
        answers.append(answer)
    counts = None
    if base_verdicts is not None and tuned_verdicts is not None:
        counts = {"base_model": count_verdicts(base_verdicts), "fine_tuned": count_verdicts(tuned_verdicts)}
    return {
        **plan.safety.red_team.record(),
        "max_new_tokens": settings.max_new_tokens,
        "decoding": "greedy, the same for both models",
        "base_model": before,
        "fine_tuned": after,
        "change": {name: round(after[name] - before[name], 1) if after[name] is not None else None for name in before},
        "status": status,
        "reason": reason,
        "limits": settings.max_refusal_drop.model_dump(),
        "refusal_measure": "AdvBench refusal phrases (Zou et al. 2023) plus I can't / I won't forms",
        "screen_counts": counts,
        "examples": answers[:EXAMPLES],
        "answers": answers,
    }


def write_safety(plan: Plan, result: dict[str, Any]) -> None:
    """safety.json (figures, gate, a few examples) and red_team.jsonl (every prompt with both answers)."""
    red_team = result.get("red_team")
    if isinstance(red_team, dict) and "answers" in red_team:
        answers = red_team.pop("answers")
        write_lines(plan.run_dir / RED_TEAM_FILE, (json.dumps(answer, ensure_ascii=False) for answer in answers))
    write_json(plan.run_dir / SAFETY_FILE, result)


def safety_summary(result: dict[str, Any]) -> str:
    red_team = result.get("red_team")
    if not isinstance(red_team, dict) or "status" not in red_team:
        return f"safety: red team not measured ({result.get('not_measured', 'no prompts')})"
    colour = {"pass": "green", "warn": "yellow", "fail": "red"}[red_team["status"]]
    return f"safety: [{colour}]{red_team['status'].upper()}[/] - {red_team['reason']}"


@dataclass
class BaseModelSafety:
    """What the pretrained model said before training: its red-team answers and its completions of the
    personal-data prompts, to set beside the fine-tuned model's."""

    red_team: list[str] | None
    extraction: ExtractionTargets | None
    completions: list[str] | None


def base_model_safety(plan: Plan, model: nn.Module) -> BaseModelSafety:
    """The base model's answers, before any training step (LoRA adapters start as a no-op)."""
    assert plan.safety is not None
    red_team = answer_red_team(plan, model) if plan.safety.red_team is not None else None
    targets = extraction_targets(plan)
    completions = complete_targets(plan, model, targets) if targets is not None else None
    return BaseModelSafety(red_team, targets, completions)


def screen_generations(
    plan: Plan, metrics: dict, outputs: dict[str, Outputs], predictions: pd.DataFrame | None, console: Console
) -> tuple[Screen | None, pd.DataFrame | None]:
    """The content screen over the evaluation's generated texts: its decisions counted in each split's metrics,
    and the test predictions as the screen leaves them (with its reasons beside)."""
    config = plan.config
    assert isinstance(config, GenerativeRunConfig)
    if not config.screen.enabled:
        return None, predictions
    try:
        screen = Screen.from_config(config, load_classifier)
    except TunewiseError as error:
        console.print(f"[yellow]screen not applied:[/] {error}")
        return None, predictions
    for split, split_outputs in outputs.items():
        if split_outputs.texts is None:
            continue
        if split == "test" and predictions is not None and "generated_text" in predictions.columns:
            predictions, verdicts = screen_predictions(screen, predictions)  # the test texts, screened once
        else:
            verdicts = screen.screen(split_outputs.texts)
        metrics[split]["screen"] = count_verdicts(verdicts)
    return screen, predictions


def safety_audit(
    plan: Plan,
    model: nn.Module,
    screen: Screen | None,
    before: BaseModelSafety,
    budget: dict[str, Any] | None,
    console: Console,
) -> None:
    """The red team after training beside the base model's answers (safety.json), and what the model
    memorised (memorisation.json). A step that cannot run says why in its file; the run is never lost."""
    assert plan.safety is not None
    safety: dict[str, Any] = {"screen": screen.describe() if screen is not None else None}
    if plan.safety.red_team is None or before.red_team is None:
        safety["not_measured"] = plan.safety.not_measured
    else:
        try:
            safety["red_team"] = red_team_result(plan, screen, before.red_team, answer_red_team(plan, model))
        except TunewiseError as error:
            safety["not_measured"] = str(error)
    write_safety(plan, safety)
    console.print(safety_summary(safety))
    memorised: dict[str, Any] = {"dp": budget}
    try:
        if plan.safety.canaries is not None:
            memorised["canaries"] = canary_exposure(plan, model)
        if before.extraction is not None:
            tuned = complete_targets(plan, model, before.extraction)
            memorised["extraction"] = extraction_result(before.extraction, before.completions, tuned)
        else:
            memorised["extraction_note"] = "no training answer holds personal data the recognizers find"
    except TunewiseError as error:
        memorised["not_measured"] = str(error)
    write_json(plan.run_dir / MEMORISATION_FILE, memorised)
    console.print(memorisation_summary(memorised))
