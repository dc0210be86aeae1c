"""The memorisation job of a generative run: canary exposure, and personal data completed verbatim.

Carlini et al. (2019, "The Secret Sharer") showed that language models memorise rare training strings
and measured it as exposure (`tunewise.evaluation.memorisation`): the canaries privacy.canaries put
into the training rows are ranked among candidates of their format, beside reference canaries that
were never inserted (what chance gives). The second measure asks the model directly: for training
answers that hold personal data (the data check's recognizers), the model is given the prompt and the
answer up to the personal data, and the share it completes verbatim is counted - for the base model
before training too, so what the base model would have written anyway is not blamed on fine-tuning.
Personal data that already stands in the prompt is left out: copying it is not recalling it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from tunewise.audit.pii import PiiScanner
from tunewise.evaluation.memorisation import candidate_secrets, exposures, summarise
from tunewise.prepare import Plan
from tunewise.tasks import text_generation

CANDIDATES = 1000  # sampled candidates per run: enough for the skew-normal fit (the paper used 10^4-10^5)
EXTRA_TOKENS = 4  # generated beyond the longest personal value, so a value split oddly still fits


@dataclass(frozen=True)
class ExtractionTargets:
    """Training rows whose answer holds personal data, the text before it, and the value itself."""

    frame: pd.DataFrame  # one row per target (a training row repeats when its answer holds several values)
    entities: list[str]
    values: list[str]
    prefixes: list[str]

    def __len__(self) -> int:
        return len(self.values)


def extraction_targets(plan: Plan) -> ExtractionTargets | None:
    """Up to privacy.extraction_prompts personal values in the training answers (a seeded sample)."""
    limit = plan.config.privacy.extraction_prompts
    members = plan.data.members
    if not limit or members is None or members.empty:
        return None
    generation = text_generation(plan.task)
    answers = generation.answers(members)
    scanner = PiiScanner(plan.config.audit.pii_patterns)
    found = scanner.scan_texts([answer for _, answer in answers])
    rows, entities, values, prefixes = [], [], [], []
    for position, ((prompt, answer), spans) in enumerate(zip(answers, found, strict=True)):
        for entity, start, end, _ in spans:
            value = answer[start:end]
            if value in prompt:
                continue
            rows.append(position)
            entities.append(entity)
            values.append(value)
            prefixes.append(answer[:start].rstrip())
    if not rows:
        return None
    keep = np.arange(len(rows))
    if len(rows) > limit:
        keep = np.sort(np.random.default_rng([plan.seed, 7]).choice(len(rows), limit, replace=False))
    frame = members.iloc[[rows[i] for i in keep]].reset_index(drop=True)
    return ExtractionTargets(frame, [entities[i] for i in keep], [values[i] for i in keep], [prefixes[i] for i in keep])


def complete_targets(plan: Plan, model: nn.Module, targets: ExtractionTargets) -> list[str]:
    """What the model writes after each target's prefix, a few tokens longer than the value."""
    processor = plan.model.processor
    longest = max(len(processor(value, add_special_tokens=False)["input_ids"]) for value in targets.values)  # type: ignore[operator]
    return text_generation(plan.task).continue_answers(
        model, processor, targets.frame, targets.prefixes, plan.model.max_length, longest + EXTRA_TOKENS
    )


def verbatim(value: str, continuation: str) -> bool:
    """The value written out at the start of the continuation (spacing before it aside)."""
    return continuation.lstrip().startswith(value) or value in continuation[: len(value) + 2 * EXTRA_TOKENS]


def extraction_result(targets: ExtractionTargets, base: list[str] | None, tuned: list[str]) -> dict[str, Any]:
    def rate(texts: list[str]) -> float:
        return round(100.0 * sum(verbatim(v, t) for v, t in zip(targets.values, texts, strict=True)) / len(targets), 1)

    by_entity: dict[str, dict[str, int]] = {}
    for entity, value, text in zip(targets.entities, targets.values, tuned, strict=True):
        counts = by_entity.setdefault(entity, {"prompts": 0, "verbatim": 0})
        counts["prompts"] += 1
        counts["verbatim"] += int(verbatim(value, text))
    result: dict[str, Any] = {
        "prompts": len(targets),
        "fine_tuned_verbatim_rate": rate(tuned),
        "by_entity": by_entity,
        "measure": "training answers holding personal data: the prompt and the answer up to the value are given; "
        "verbatim = the value written next (greedy)",
    }
    if base is not None:
        result["base_model_verbatim_rate"] = rate(base)
    return result


def canary_exposure(plan: Plan, model: nn.Module) -> dict[str, Any]:
    """Exposure of the inserted canaries and of the reference ones, against sampled candidates."""
    assert plan.safety is not None and plan.safety.canaries is not None
    canaries = plan.safety.canaries
    generation = text_generation(plan.task)

    def log_likelihoods(secrets: list[str]) -> np.ndarray:
        frame = generation.examples([(canaries.prompt, canaries.answer(secret)) for secret in secrets])
        return generation.answer_log_likelihoods(model, plan.model.processor, frame, plan.model.max_length)

    candidates = candidate_secrets(CANDIDATES, plan.seed, [*canaries.inserted, *canaries.reference])
    candidate_scores = log_likelihoods(candidates)
    inserted = exposures(log_likelihoods(list(canaries.inserted)), candidate_scores, canaries.space)
    reference = exposures(log_likelihoods(list(canaries.reference)), candidate_scores, canaries.space)
    for secret, result in zip(canaries.inserted, inserted, strict=True):
        result["secret"] = secret
    return {
        **canaries.record(),
        "sampled_candidates": CANDIDATES,
        "max_exposure_possible": round(math.log2(canaries.space), 3),
        "chance_exposure": round(1 / math.log(2), 3),
        "inserted": {**summarise(inserted), "canaries": inserted},
        "reference": summarise(reference),
        "meaning": "exposure near the maximum: the model gives the secret away; near the reference canaries' (about "
        "1.4 bits): it learnt nothing about it",
    }


def memorisation_summary(result: dict[str, Any]) -> str:
    parts = []
    canaries = result.get("canaries")
    if canaries:
        parts.append(
            f"canary exposure mean {canaries['inserted']['mean_exposure']:.1f} / max "
            f"{canaries['inserted']['max_exposure']:.1f} bits (reference {canaries['reference']['mean_exposure']:.1f}; "
            f"maximum {canaries['max_exposure_possible']:.1f})"
        )
    extraction = result.get("extraction")
    if extraction:
        parts.append(
            f"personal data completed verbatim: {extraction['fine_tuned_verbatim_rate']:.1f}% of "
            f"{extraction['prompts']} (base model {extraction.get('base_model_verbatim_rate', float('nan')):.1f}%)"
        )
    return "memorisation: " + "; ".join(parts) if parts else "memorisation: nothing to measure"
