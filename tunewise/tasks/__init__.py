"""Task registry: adding a task is one module plus one line here."""

from __future__ import annotations

from tunewise.config.schema import RunConfig
from tunewise.tasks.base import Task
from tunewise.tasks.causal_lm import CausalLMTask
from tunewise.tasks.image_classification import ImageClassificationTask
from tunewise.tasks.question_answering import QuestionAnsweringTask
from tunewise.tasks.text_classification import TextClassificationTask
from tunewise.tasks.token_classification import TokenClassificationTask

TASKS: dict[str, type] = {
    "text-classification": TextClassificationTask,
    "causal-lm": CausalLMTask,
    "token-classification": TokenClassificationTask,
    "question-answering": QuestionAnsweringTask,
    "image-classification": ImageClassificationTask,
}


def make_task(config: RunConfig) -> Task:
    return TASKS[config.task](config)


__all__ = ["TASKS", "Task", "make_task"]
