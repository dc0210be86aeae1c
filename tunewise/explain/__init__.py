"""Explanations of predictions: which words (or pixels) moved each prediction, by Captum attributions,
and how faithful those attributions are (a deletion test).

    explain_frame(model, processor, task, frame, max_length, settings)   one list of explanations per row
    explain_targets(model, targets, settings)                            one explanation per target
    measure_faithfulness(model, targets, explanations)                   ERASER's deletion test -> Faithfulness

What to explain comes from the task (`tasks.explanation(task).targets`: the predicted or a chosen label,
each predicted entity, an answer's start and end); how, from `ExplainSettings` (the method and its cost).
Text targets become `WordAttribution`s (`text`, over `attribution` and `words`), image targets `HeatMap`s
(`images`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from torch import nn

from tunewise.explain.faithfulness import Faithfulness, measure_faithfulness
from tunewise.explain.results import Explanation, HeatMap, Word, WordAttribution
from tunewise.explain.settings import ExplainSettings
from tunewise.explain.text import explain_text
from tunewise.tasks import Task, explanation
from tunewise.types import ImageExplanationTarget, TextExplanationTarget

__all__ = [
    "ExplainSettings",
    "Explanation",
    "Faithfulness",
    "HeatMap",
    "Word",
    "WordAttribution",
    "explain_frame",
    "explain_targets",
    "measure_faithfulness",
]


def explain_targets(
    model: nn.Module,
    targets: Sequence[TextExplanationTarget | ImageExplanationTarget],
    settings: ExplainSettings,
) -> list[Explanation]:
    """One explanation per target, in the targets' order: text targets are attributed to their words,
    image targets to their pixels."""
    images = [target for target in targets if isinstance(target, ImageExplanationTarget)]
    if not images:
        return [
            explain_text(model, target, settings) for target in targets if isinstance(target, TextExplanationTarget)
        ]
    if len(images) < len(targets):
        raise ValueError("explain_targets takes the targets of one task: all text, or all images")
    from tunewise.explain.images import explain_images  # only image tasks need it (and its dependencies)

    return list(explain_images(model, images, settings))


def explain_frame(
    model: nn.Module, processor: Any, task: Task, frame: pd.DataFrame, max_length: int, settings: ExplainSettings
) -> list[list[Explanation]]:
    """Each row's explanations, one list per row of `frame` (as `task.data.read` or `from_inputs` made it):
    a classifier's one label (or each predicted label), every predicted entity (none when the row has
    none), a question's answer start and end."""
    targets: Sequence[TextExplanationTarget | ImageExplanationTarget] = explanation(task).targets(
        model, processor, frame, max_length, label=settings.label
    )
    rows: list[list[Explanation]] = [[] for _ in range(len(frame))]
    for target, explained in zip(targets, explain_targets(model, targets, settings), strict=True):
        rows[target.row].append(explained)
    return rows
