"""The small interface every task implements (a Protocol: no implementation inheritance).

A task knows its data format, its label space, its model head, how to turn rows into token ids,
and how to score and present model outputs. Everything else (splitting, strategies, the training
loop, checkpoints, the run folder, the CLI) is shared machinery that calls these methods.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunewise.models.registry import CheckpointHints, ModelSource
from tunewise.training.batching import EncodedSplit


class Task(Protocol):
    name: str
    problem_type: str
    text_columns: list[str]  # the input columns, for checks that read the raw texts
    keeps_logits: bool  # False: evaluation keeps only the loss (a language model's logits are too big)

    def read_split(self, source: str, split: str, with_labels: bool = True) -> pd.DataFrame:
        """Read and validate one data file; errors name the file, the row and the fix."""

    def fit_labels(self, train: pd.DataFrame) -> None:
        """Learn the label space (names, problem type) from the training rows."""

    def check_split(self, frame: pd.DataFrame, split: str, source: str) -> None:
        """Refuse evaluation rows whose labels the model cannot represent."""

    def stratifies(self) -> bool:
        """Whether a held-out validation split keeps the label proportions (classes, not numbers)."""

    def metric_names(self) -> list[str]:
        """Scalar metrics this task reports, usable for best-model selection."""

    def default_metric(self) -> str: ...

    def build_model(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        """The pretrained backbone with a fresh head for this task's label space."""

    def restore(self, model_config: Any) -> None:
        """Recover the label space from a saved model's config (for predict/evaluate)."""

    def encode(
        self, frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_length: int, use_cache: bool = False
    ) -> EncodedSplit:
        """Token ids per row (unpadded) and labels, when the frame has them; `use_cache` keeps the token
        ids on disk for the next run (training data), see `tunewise.data.token_cache`."""

    def compute_metrics(self, logits: np.ndarray | None, labels: Any, loss: float | None = None) -> dict[str, Any]:
        """Task metrics from the outputs (and the mean loss, for tasks scored by it, e.g. perplexity)."""

    def calibrate(self, logits: np.ndarray, labels: Any) -> None:
        """Fit post-hoc settings on validation outputs (e.g. the multi-label threshold)."""

    def present(self, logits: np.ndarray) -> pd.DataFrame:
        """Human-readable predictions, one row per input."""

    def save_settings(self, model_config: Any) -> None:
        """Store task settings (label names, threshold) in the saved model's config."""
