"""The interface every task implements: four declared pieces, each a small Protocol (no inheritance).

    task.facts()   what the task declares: name, label space, metrics, capabilities (tunewise.types)
    task.data      reading, checking and encoding the user's data
    task.model     finding, building, saving and loading the model
    task.scoring   running the model over a split, and turning its outputs into metrics and predictions

Shared code (preparation, the data check, training, fairness, privacy, the report, serving) calls
these pieces and asks `facts().capabilities` what applies, never a task's name. A task's pieces
share the state it learns (the label space from `data.learn`, settings fitted by
`scoring.calibrate`), which `model.save` writes into the saved model and `model.restore` reads back
(`model.load` through it).
`mypy` checks every registered task against `Task` (tunewise/tasks/__init__.py), so a piece that
drifts from its Protocol fails in CI, not in a user's run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from torch import nn

from tunewise.types import (
    CheckpointHints,
    EncodedSplit,
    Finding,
    ImageExplanationTarget,
    ModelSource,
    Outputs,
    Processor,
    Purpose,
    TaskFacts,
    TextExplanationTarget,
)


class TaskData(Protocol):
    """The user's data: read and validated, the label space learnt, rows encoded for the model."""

    def read(self, source: str, split: str, labelled: bool = True) -> pd.DataFrame:
        """Read and validate one data file; errors name the file, the row and the fix. The frame has
        a `_row` column with each row's position in the file, for messages."""
        ...

    def learn(self, train: pd.DataFrame) -> None:
        """Learn the label space (names, problem type) from the training rows."""
        ...

    def check(self, frame: pd.DataFrame, split: str, source: str) -> None:
        """Refuse evaluation rows whose labels the model cannot represent."""
        ...

    def findings(self, frames: dict[str, pd.DataFrame], processor: Any, max_length: int) -> list[Finding]:
        """The data check's task-specific findings (invalid tag sequences, unmatched answers, unreadable
        images, ...), beside the shared text, duplicate, leakage and personal-data checks."""
        ...

    def from_inputs(self, inputs: Any) -> pd.DataFrame:
        """`predict()`'s raw inputs (texts, pairs, questions, image paths) as the frame `encode` takes."""
        ...

    def resolve(self, config: Any) -> Any:
        """The config with what reading the data settled written in (an auto problem type, a detected tag
        scheme), so the saved config replays exactly; unchanged when the task settles nothing."""
        ...

    def encode(
        self, frame: pd.DataFrame, processor: Any, max_length: int, purpose: Purpose, use_cache: bool = False
    ) -> EncodedSplit:
        """Model inputs per row, with labels unless `purpose` is predict. `train` marks the split the
        model learns from (image augmentation applies there only); `use_cache` keeps token ids on disk
        for the next run (`tunewise.data.token_cache`)."""
        ...


class TaskModel(Protocol):
    """The model: where it comes from, the pretrained backbone with this task's head, the saved form."""

    def source(self, name: str) -> ModelSource:
        """Where `model:` points (built-in name, local folder or hub id); a clear error when nowhere."""
        ...

    def processor(self, source: ModelSource) -> Processor:
        """The tokenizer (or image processor) that prepares inputs for this model."""
        ...

    def build(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> nn.Module:
        """The pretrained backbone with a fresh head for the learnt label space. The model takes the
        encoded batch as keyword arguments and returns an output with `.loss` (when labels are given)
        and `.logits` (or `.start_logits` / `.end_logits`)."""
        ...

    def save(self, model: nn.Module, processor: Processor, folder: Path) -> None:
        """Write `folder` so it loads in plain transformers (or timm), with the task's fitted settings."""
        ...

    def load(self, folder: Path) -> nn.Module:
        """A model saved by `save`, without executing any remote code; restores the fitted settings
        (through `restore`, so a model and an export of it are read back the same way)."""
        ...

    def restore(self, folder: Path) -> None:
        """The fitted settings of a saved model, without its weights: the label space, the multi-label
        threshold, the tag scheme, the answer settings, read from the folder's config.json. An exported
        model (ONNX) brings its own weights and needs only these for its outputs to mean what they did."""
        ...


class TaskScoring(Protocol):
    """What the model says about a split, and what that is worth."""

    def run(self, model: nn.Module, processor: Any, split: EncodedSplit) -> Outputs:
        """The model's outputs for every row (scores and loss; generated text for generative tasks, which
        need the processor to turn tokens back into text)."""
        ...

    def calibrate(self, outputs: Outputs, split: EncodedSplit) -> None:
        """Fit post-hoc settings on validation outputs (e.g. the multi-label threshold)."""
        ...

    def metrics(self, outputs: Outputs, split: EncodedSplit) -> dict[str, Any]:
        """Task metrics of the outputs against the split's labels."""
        ...

    def present(self, outputs: Outputs, split: EncodedSplit) -> pd.DataFrame:
        """Human-readable predictions, one row per input row of the frame that was encoded."""
        ...


class TextGeneration(Protocol):
    """What a generative task (capability `generation`) adds for the safety and memorisation audits:
    examples it did not read from the user's files (canaries), the trained answer of each row, how
    likely the model finds an answer, how it continues one, and how it answers plain requests."""

    def examples(self, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
        """(prompt, answer) pairs as rows of the training frame's form, ready for `data.encode`."""
        ...

    def answers(self, frame: pd.DataFrame) -> list[tuple[str, str]]:
        """Each row's prompt as text and the answer the model is trained to give (the last, for conversations)."""
        ...

    def answer_log_likelihoods(
        self, model: nn.Module, processor: Any, frame: pd.DataFrame, max_length: int
    ) -> np.ndarray:
        """log p(answer | prompt) of each row, summed over the answer's tokens (natural log)."""
        ...

    def continue_answers(
        self,
        model: nn.Module,
        processor: Any,
        frame: pd.DataFrame,
        prefixes: Sequence[str],
        max_length: int,
        max_new_tokens: int,
    ) -> list[str]:
        """What the model writes after each row's prompt and the start of its answer (`prefixes`), greedily."""
        ...

    def respond(
        self, model: nn.Module, processor: Any, prompts: Sequence[str], max_length: int, max_new_tokens: int
    ) -> list[str]:
        """The model's answers to plain requests (as `predict` would render them), greedily."""
        ...


class TextExplanation(Protocol):
    """What a task that reads text (capability `explanations`) tells `tunewise.explain`: which scores of
    the model explain each row's prediction (the predicted or a chosen label, each predicted entity, the
    answer's start and end), with the tokens' character offsets that map attributions back to words."""

    def targets(
        self, model: nn.Module, processor: Any, frame: pd.DataFrame, max_length: int, label: str | None = None
    ) -> list[TextExplanationTarget]:
        """The targets of every row of `frame` (as `data.read` or `data.from_inputs` made it), in row
        order; `label` explains that label instead of the predicted one (an error names the labels
        when it is not one of them)."""
        ...


class ImageExplanation(Protocol):
    """What an image task (capability `explanations`) tells `tunewise.explain`: each row's image as the
    model takes it and the class to explain (predicted, or `label`)."""

    def targets(
        self, model: nn.Module, processor: Any, frame: pd.DataFrame, max_length: int, label: str | None = None
    ) -> list[ImageExplanationTarget]:
        """One target per row of `frame`, in row order."""
        ...


class Task(Protocol):
    """A task: the facts it declares and its three working pieces."""

    @property
    def data(self) -> TaskData: ...

    @property
    def model(self) -> TaskModel: ...

    @property
    def scoring(self) -> TaskScoring: ...

    def facts(self) -> TaskFacts:
        """The task's declared facts, with the label space learnt so far."""
        ...
