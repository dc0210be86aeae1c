"""The task registry: adding a task is its module plus one line in TASKS.

Each entry pairs a task's config class (which fixes `task:` and adds the task's own section) with
the class that builds the task from it. `load_config` validates a YAML file against the class its
`task:` names; `make_task` builds the task from a validated config. Typing TASKS as `TaskEntry` is
what makes mypy check every registered task against the `Task` Protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.config.parsing import parse_config
from tunewise.config.sections import RunConfig
from tunewise.errors import ConfigError
from tunewise.tasks.base import (
    ImageExplanation,
    Task,
    TaskData,
    TaskModel,
    TaskScoring,
    TextExplanation,
    TextGeneration,
)
from tunewise.tasks.causal_lm import CausalLMConfig, CausalLMTask
from tunewise.tasks.image_classification import ImageClassificationConfig, ImageClassificationTask
from tunewise.tasks.question_answering import QuestionAnsweringConfig, QuestionAnsweringTask
from tunewise.tasks.seq2seq import Seq2SeqConfig, Seq2SeqTask
from tunewise.tasks.text_classification import TextClassificationConfig, TextClassificationTask
from tunewise.tasks.token_classification import TokenClassificationConfig, TokenClassificationTask


@dataclass(frozen=True)
class TaskEntry:
    config: type[RunConfig]
    build: Callable[[Any], Task]


TASKS: dict[str, TaskEntry] = {
    "text-classification": TaskEntry(TextClassificationConfig, TextClassificationTask),
    "causal-lm": TaskEntry(CausalLMConfig, CausalLMTask),
    "token-classification": TaskEntry(TokenClassificationConfig, TokenClassificationTask),
    "question-answering": TaskEntry(QuestionAnsweringConfig, QuestionAnsweringTask),
    "image-classification": TaskEntry(ImageClassificationConfig, ImageClassificationTask),
    "seq2seq": TaskEntry(Seq2SeqConfig, Seq2SeqTask),
}
CONFIG_CLASSES: dict[str, type[RunConfig]] = {name: entry.config for name, entry in TASKS.items()}


def load_config(source: str | Path | dict | RunConfig, overrides: list[str] | None = None) -> RunConfig:
    """A validated run config from a YAML path, a dict or a config, with `--set` overrides applied."""
    return parse_config(source, overrides, CONFIG_CLASSES)


def make_task(config: RunConfig) -> Task:
    return TASKS[config.task].build(config)


def text_generation(task: Task) -> TextGeneration:
    """The generation piece of a task whose capabilities say it generates text (`task.generation`)."""
    facts = task.facts()
    piece = getattr(task, "generation", None)
    if not facts.capabilities.generation or piece is None:
        raise ConfigError(f"a {facts.name} model does not generate text; this audit applies to generative tasks.")
    return piece


def explanation(task: Task) -> TextExplanation | ImageExplanation:
    """The explanation piece of a task whose capabilities say it explains its predictions (`task.explanation`)."""
    facts = task.facts()
    piece = getattr(task, "explanation", None)
    if not facts.capabilities.explanations or piece is None:
        raise ConfigError(
            f"a {facts.name} model cannot explain its predictions; explanations exist for text classification, "
            "token classification, question answering and image classification."
        )
    return piece


__all__ = [
    "CONFIG_CLASSES",
    "TASKS",
    "ImageExplanation",
    "Task",
    "TaskData",
    "TaskEntry",
    "TaskModel",
    "TaskScoring",
    "TextExplanation",
    "TextGeneration",
    "explanation",
    "load_config",
    "make_task",
    "text_generation",
]
