"""The small interface every task implements (a Protocol: no implementation inheritance).

A task knows its data format, its label space, its model head, how to turn rows into model inputs,
and how to score and present model outputs. Everything else (splitting, strategies, the training
loop, checkpoints, the run folder, the report, the CLI) is shared machinery that calls these methods.

Outputs reach a task as `logits`: one array [rows, ...] when every row has one output of one shape
(classification), or a list with one array per row, trimmed to that row's length, when the model
scores every token ([tokens, classes] for NER, [tokens, 2] start/end scores for question answering).
The EncodedSplit that produced them comes along, with the per-row `meta` the task stored while
encoding (offsets, word ids, example ids), so outputs can be mapped back to the user's text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from torch import nn

from tunewise.audit.findings import Finding
from tunewise.models.registry import CheckpointHints, ModelSource
from tunewise.training.batching import EncodedSplit

Logits = np.ndarray | list[np.ndarray] | None


class Task(Protocol):
    name: str
    problem_type: str
    text_columns: list[str]  # raw text input columns, for the text checks ([] for images)
    label_names: list[str]
    keeps_logits: bool  # False: evaluation keeps only the loss (a language model's logits are too big)
    # False: inputs longer than max_length are read whole (question answering's overlapping windows),
    # so the data check and the model card say nothing is cut
    truncates: bool
    targets: str  # what the model learns to predict, in words, for the model card (e.g. "label column `label`")

    # ----- model source --------------------------------------------------------------------------
    def resolve_source(self, name: str) -> ModelSource:
        """Where `model:` points (built-in name, local folder or hub id); a clear error when nowhere."""

    def load_tokenizer(self, source: ModelSource) -> Any:
        """What turns raw inputs into model inputs: a transformers tokenizer, or an image processor.
        It must offer `save_pretrained(folder)` and `pad_token_id` (None when nothing is padded)."""

    # ----- data ------------------------------------------------------------------------------------
    def read_split(self, source: str, split: str, with_labels: bool = True) -> pd.DataFrame:
        """Read and validate one data file; errors name the file, the row and the fix. The frame has
        a `_row` column with each row's position in the file, for messages."""

    def fit_labels(self, train: pd.DataFrame) -> None:
        """Learn the label space (names, problem type) from the training rows."""

    def check_split(self, frame: pd.DataFrame, split: str, source: str) -> None:
        """Refuse evaluation rows whose labels the model cannot represent."""

    def audit_findings(self, frames: dict[str, pd.DataFrame], tokenizer: Any, max_length: int) -> list[Finding]:
        """The data check's task-specific findings (invalid tag sequences, unmatched answers, unreadable
        images, ...), beside the shared text, duplicate, leakage and personal-data checks."""

    def stratifies(self) -> bool:
        """Whether a held-out validation split keeps the label proportions (classes, not numbers)."""

    def metric_names(self) -> list[str]:
        """Scalar metrics this task reports, usable for best-model selection."""

    def default_metric(self) -> str: ...

    # ----- model -----------------------------------------------------------------------------------
    def build_model(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> nn.Module:
        """The pretrained backbone with a fresh head for this task's label space. The model takes the
        encoded batch as keyword arguments and returns an output with `.loss` (when labels are given)
        and `.logits` (or `.start_logits` / `.end_logits`)."""

    def load_trained(self, model_dir: Path) -> nn.Module:
        """A model saved by a finished run (`model/`), without executing any remote code."""

    def restore(self, model_config: Any) -> None:
        """Recover the label space from a saved model's config (for predict/evaluate)."""

    def save_settings(self, model_config: Any) -> None:
        """Store task settings (label names, threshold) in the saved model's config."""

    # ----- encoding --------------------------------------------------------------------------------
    def encode(
        self,
        frame: pd.DataFrame,
        tokenizer: Any,
        max_length: int,
        use_cache: bool = False,
        training: bool = False,
    ) -> EncodedSplit:
        """Model inputs per row and labels, when the frame has them. `use_cache` keeps token ids on
        disk for the next run (see `tunewise.data.token_cache`); `training` marks the split the model
        learns from (image augmentation applies there only)."""

    def frame_from_inputs(self, inputs: Any) -> pd.DataFrame:
        """`predict()`'s raw inputs (texts, pairs, questions, image paths) as the frame `encode` takes."""

    # ----- outputs ---------------------------------------------------------------------------------
    def compute_metrics(self, logits: Logits, split: EncodedSplit, loss: float | None = None) -> dict[str, Any]:
        """Task metrics from the outputs (and the mean loss, for tasks scored by it, e.g. perplexity)."""

    def calibrate(self, logits: Logits, split: EncodedSplit) -> None:
        """Fit post-hoc settings on validation outputs (e.g. the multi-label threshold)."""

    def present(self, logits: Logits, split: EncodedSplit) -> pd.DataFrame:
        """Human-readable predictions, one row per input row of the frame that was encoded."""
