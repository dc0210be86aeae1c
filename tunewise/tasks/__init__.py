"""Task registry: adding a task is one module plus one line here."""

from __future__ import annotations

from tunewise.config.schema import RunConfig
from tunewise.tasks.base import Task
from tunewise.tasks.causal_lm import CausalLMTask
from tunewise.tasks.text_classification import TextClassificationTask

TASKS: dict[str, type] = {
    "text-classification": TextClassificationTask,
    "causal-lm": CausalLMTask,
}


def make_task(config: RunConfig) -> Task:
    return TASKS[config.task](config)


__all__ = ["TASKS", "Task", "make_task"]
