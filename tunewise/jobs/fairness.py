"""The fairness job: group, identity-term and counterfactual views of a trained classifier, and mitigations.

It runs on the model and the frames in memory, right after the final evaluation, and reuses that
evaluation's class probabilities: only the counterfactual texts (identity words swapped) are new to
the model. Every score comes from the same float32 forward pass, so a swap's probability change is
the model's and never arithmetic noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from tunewise.evaluation.fairness import fairness_report, threshold_optimizer_effect
from tunewise.prepare import Plan
from tunewise.types import Outputs


def measure_fairness(plan: Plan, model: nn.Module, outputs: dict[str, Outputs]) -> dict[str, Any]:
    """fairness.json: every view that applies on the test split (else validation), and mitigation effects."""
    config, facts, frames = plan.config, plan.facts, plan.data.frames
    fairness, column = config.fairness, config.fairness.group_column
    split = "test" if "test" in frames else "validation"
    frame = frames[split]
    label_names = list(facts.label_names)

    def probabilities(texts: list[str]) -> np.ndarray:
        frame = plan.task.data.from_inputs(texts)
        encoded = plan.task.data.encode(frame, plan.model.processor, plan.model.max_length, "predict")
        scores = plan.task.scoring.run(model, plan.model.processor, encoded).probabilities
        assert scores is not None
        return scores

    report = fairness_report(
        fairness,
        frame[config.data.text_column].astype(str).tolist(),
        _labels(plan, split),
        _probabilities(outputs[split]),
        label_names,
        frame[column] if column else None,
        probabilities,
        seed=config.train.seed,
    )
    report["split"] = split
    if fairness.threshold_optimizer and report.get("positive_label") is not None:
        positive = label_names.index(report["positive_label"])
        views = [
            (
                _probabilities(outputs[name])[:, positive],
                (_labels(plan, name) == positive).astype(int),
                frames[name][column],
            )
            for name in ("validation", "test")
        ]
        report["threshold_optimizer"] = threshold_optimizer_effect(views[0], views[1], seed=config.train.seed)
    return report


def fairness_summary(report: dict[str, Any]) -> str:
    failing = [c for c in report["checks"] if c["status"] != "pass"]
    details = "; ".join(f"{c['figure']} {c['value']:.3f} > {c[c['status']]}" for c in failing[:3])
    return f"fairness ({report['split']}): {report['status']}" + (f" - {details}" if details else "")


def _labels(plan: Plan, split: str) -> np.ndarray:
    """Class indices of a split's rows, as encoded for the model."""
    assert plan.training is not None
    return np.asarray(plan.training.encoded[split].labels, dtype=int)


def _probabilities(outputs: Outputs) -> np.ndarray:
    assert outputs.probabilities is not None, "fairness applies to classifiers, whose outputs have probabilities"
    return outputs.probabilities
