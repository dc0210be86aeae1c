"""The types every stage shares, in one leaf module that imports nothing else from tunewise.

They are the vocabulary between the stages: what a task declares about itself (`TaskFacts`,
`Capabilities`), where a model comes from (`ModelSource`, `CheckpointHints`), data ready for a model
(`EncodedSplit`), what a model produced for it (`Outputs`), and what the data check found (`Finding`).
Keeping them here, not inside the stage that happens to make them, is what lets the layers below
the jobs import each other in one direction only (see the import-linter contract in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

LABEL_PAD = -100  # ignored by cross-entropy; pads per-token labels
SPLITS = ("train", "validation", "test")
# why a frame is encoded: train (the rows learnt from), validate (evaluated during training, so a
# generative task generates for a sample only), evaluate (scored once, whole), predict (no labels)
Purpose = Literal["train", "validate", "evaluate", "predict"]
Severity = Literal["error", "warning", "note"]
EXAMPLE_ROWS = 5

# A model's raw outputs for a split: one array [rows, ...] when every row has one output of one shape
# (classification), or one array per row, trimmed to its length, when the model scores every token
# ([tokens, classes] for NER, [tokens, 2] start/end scores for question answering); None when only the
# loss is kept (a language model's vocabulary-wide logits would not fit in memory).
Logits = np.ndarray | list[np.ndarray] | None


# ------------------------------------------------------------------------------------------ tasks


@dataclass(frozen=True)
class Capabilities:
    """What shared code may do with a task. It asks these, never the task's name or problem type."""

    stratified_split: bool = False  # a held-out validation split keeps the label proportions
    class_labels: bool = False  # one class per row: class balance and label noise are audited, data.balance applies
    fairness: bool = False  # groups, identity terms and counterfactual swaps apply (one text, one class per row)
    private_training: bool = False  # DP-SGD (Opacus) can train it
    membership_inference: bool = False  # per-row losses exist for the membership-inference audit
    generation: bool = False  # predictions are generated text, not scores
    zero_shot: bool = False  # the pretrained model already does the task: its scores before fine-tuning are a baseline
    truncates: bool = True  # inputs longer than max_length are cut (False: read whole, e.g. in windows)
    # the task measures its own lengths (seq2seq: source and target apart; chat: whole rendered conversations),
    # so the shared count of its text columns' tokens against max_length, as one text or a pair, is not reported
    measures_own_lengths: bool = False
    reads_text: bool = True  # inputs are texts (False: images)
    explanations: bool = False  # the task has an `explanation` piece: attributions of its predictions (explain/)


@dataclass(frozen=True)
class TextExplanationTarget:
    """One thing to explain in one encoded text row: a score of the model's output, and the tokens it
    came from. A task's `explanation` piece makes these; `tunewise.explain` attributes the score to the
    tokens (Captum) and merges the tokens into the user's words through `offsets`.

    The score is read from `out = activation(model(**features).<output>[0])` and averaged: `out[classes[0]]`
    for a row-level output (`positions` empty: the predicted or chosen class of a text), `out[p, c]` over
    `zip(positions, classes)` for per-token classes (each token's tag of a named entity), `out[p]` over
    `positions` when `classes` is empty (the answer's start or end token, softmax over the sequence)."""

    row: int  # position of the row in the frame that was explained
    name: str  # what is explained, in words: a label, "PER: Barack Obama", "answer start"
    features: dict[str, torch.Tensor]  # one encoded sequence, [1, length]: input_ids, attention_mask, token_type_ids
    output: str  # the model output read: "logits", "start_logits" or "end_logits"
    positions: tuple[int, ...]  # token positions whose scores are averaged; () for a row-level output
    classes: tuple[int, ...]  # the class read (one per position for token outputs); () when there is no class axis
    activation: Literal["softmax", "sigmoid", "identity"]  # over the last axis: the output as what is explained
    offsets: tuple[tuple[int, int], ...]  # each token's character span in its text; (0, 0) for special tokens
    sequence_ids: tuple[int | None, ...]  # which of `texts` each token is from; None for special tokens
    texts: tuple[str, ...]  # the row's text(s): one, a (text, pair), or a (question, context)
    probability: float  # the explained score on the whole input


@dataclass(frozen=True)
class ImageExplanationTarget:
    """One image and the class of it to explain; `tunewise.explain` attributes the class's probability to
    the pixels (Captum) and overlays the heat map on the image it reads from `path`."""

    row: int
    name: str  # the label explained
    pixel_values: torch.Tensor  # [1, channels, height, width], as the model takes it
    index: int  # the class in the logits
    path: str  # the image file, for the overlay
    probability: float


@dataclass(frozen=True)
class TaskFacts:
    """What a task says about itself once it has learnt its label space from the training rows."""

    name: str
    problem_type: str
    text_columns: tuple[str, ...]  # raw text inputs, for the text checks (empty for images)
    label_names: tuple[str, ...]
    targets: str  # what the model learns to predict, in words, for the model card
    metrics: tuple[str, ...]  # scalar metrics it reports on validation, usable to pick the best model
    default_metric: str
    capabilities: Capabilities

    def record(self) -> dict[str, Any]:
        """The facts as run.json keeps them, so the report and the card never rebuild the task."""
        return {
            "name": self.name,
            "problem_type": self.problem_type,
            "text_columns": list(self.text_columns),
            "label_names": list(self.label_names),
            "targets": self.targets,
            "metrics": list(self.metrics),
            "default_metric": self.default_metric,
            "capabilities": dict(self.capabilities.__dict__),
        }


# ------------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: `location` is a local folder or file, or a hub id."""

    name: str
    location: str
    is_local: bool
    family: str = "transformer"  # picks the defaults that learn (prepare.defaults): transformer or cnn


@dataclass(frozen=True)
class CheckpointHints:
    """What a checkpoint says about how it should be used (None: it does not say)."""

    pooling: str | None = None
    max_length: int | None = None
    fp16_overflows: bool = False  # activations overflow float16 (T5-family models): train in bf16 or fp32


class Processor(Protocol):
    """What turns raw inputs into model inputs: a transformers tokenizer, or an image processor."""

    @property
    def pad_token_id(self) -> int | None: ...

    def save_pretrained(self, folder: Any) -> Any: ...


# ------------------------------------------------------------------------------------------ data


@dataclass
class EncodedSplit:
    """Model inputs per row, and one label (or label sequence) per row.

    Text rows are variable-length id sequences, padded per batch (`inference.collate`) with
    `pad_token_id`. Inputs that are not token sequences (images) come from `loader`, which builds the
    batch's input tensors from row indices. `labels` go to the model under `label_keys`: one key takes
    the whole label (a class, a label sequence), several keys take one column each of a [rows, keys]
    array (question answering: start_positions, end_positions). `meta` holds per-row facts the task
    needs to map outputs back to the user's data (offsets, word ids, example ids); it never reaches
    the model."""

    sequences: dict[str, list]  # column -> one id sequence (list or int array) per row
    labels: list | np.ndarray | None
    # False for packed rows: their position_ids restart at each example, which is how the model
    # keeps examples apart (an explicit mask would switch that detection off)
    attention_mask: bool = True
    fixed_shape: bool = False  # every row has the same shape (packed rows, images): batches of one shape
    label_keys: tuple[str, ...] = ("labels",)
    meta: dict[str, list] = field(default_factory=dict)
    loader: Callable[[np.ndarray], dict[str, torch.Tensor]] | None = None
    rows: int | None = None  # the row count when there are no sequences (loader inputs)
    pad_token_id: int = 0
    # labels are the input ids: the model predicts each token from those before it and shifts the labels, so
    # a row's first label is never scored (what a row adds to the mean loss: inference.loss_terms)
    shifted_labels: bool = False
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if "input_ids" in self.sequences:
            self.lengths = np.fromiter((len(ids) for ids in self.sequences["input_ids"]), dtype=np.int64)
        else:  # inputs of one size: every row counts as length 1
            count = self.rows if self.rows is not None else len(self.labels if self.labels is not None else [])
            self.lengths = np.ones(count, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass
class Outputs:
    """What a model produced for one encoded split, as the task's scoring needs it."""

    logits: Logits = None
    loss: float | None = None  # mean loss over rows (or labelled tokens), when the split has labels
    probabilities: np.ndarray | None = None  # class probabilities per row (classifiers): fairness reads them
    row_losses: np.ndarray | None = None  # each row's loss (classifiers): the membership-inference attack's input
    texts: list[str] | None = None  # generated text per row (generative tasks)

    @property
    def answers(self) -> bool:
        """Whether there is a prediction per row to present (a language model's evaluation keeps only its loss)."""
        return self.logits is not None or self.texts is not None


# ------------------------------------------------------------------------------------------ the data check


@dataclass
class Finding:
    """One thing the data check found. `rows` are user-visible row numbers (a few examples, not all)."""

    check: str
    severity: Severity
    message: str
    fix: str = ""
    split: str | None = None
    count: int = 0
    rows: list[int] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rows = [int(row) for row in self.rows[:EXAMPLE_ROWS]]
