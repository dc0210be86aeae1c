"""Encoded datasets and the batches built from them.

Short texts padded to a fixed length waste most of the compute on padding, so batches group
examples of similar length (sorted within shuffled "mega-batches", as Trainer's
`group_by_length` does) and are padded only to their longest row. Batch order is a pure function
of (seed, epoch), which is what makes exact resume possible: a resumed run rebuilds the epoch's
batch list and skips the batches it has already seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

LABEL_PAD = -100  # ignored by cross-entropy; pads per-token labels


@dataclass
class EncodedSplit:
    """Model inputs per row, and one label (or label sequence) per row.

    Text rows are variable-length id sequences, padded per batch by `collate`. Inputs that are not
    token sequences (images) come from `loader`, which builds the batch's input tensors from row
    indices. `labels` go to the model under `label_keys`: one key takes the whole label (a class, a
    label sequence), several keys take one column each of a [rows, keys] array (question answering:
    start_positions, end_positions). `meta` holds per-row facts the task needs to map outputs back
    to the user's data (offsets, word ids, example ids); it never reaches the model."""

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
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if "input_ids" in self.sequences:
            self.lengths = np.fromiter((len(ids) for ids in self.sequences["input_ids"]), dtype=np.int64)
        else:  # inputs of one size: every row counts as length 1
            count = self.rows if self.rows is not None else len(self.labels if self.labels is not None else [])
            self.lengths = np.ones(count, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def token_level(self) -> bool:
        """Whether the model scores every token (outputs are then kept per row, trimmed to its length)."""
        return "input_ids" in self.sequences and self.labels is not None and not isinstance(self.labels, np.ndarray)


def length_grouped_batches(
    lengths: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    group_factor: int = 50,
    sample_weights: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Shuffle, sort by length within groups of `group_factor` batches, then shuffle the batches.

    With `sample_weights` (oversampling) the epoch draws as many rows as the split holds, with
    replacement, each with probability proportional to its weight."""
    rng = np.random.default_rng([seed, epoch])
    if sample_weights is None:
        order = rng.permutation(len(lengths))
    else:
        order = rng.choice(len(lengths), size=len(lengths), replace=True, p=sample_weights / sample_weights.sum())
    group = batch_size * group_factor
    batches: list[np.ndarray] = []
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class weights n / (classes x class count), scikit-learn's "balanced": each class then
    carries the same total weight, whatever its size."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return len(labels) / (n_classes * np.maximum(counts, 1.0))


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Longest-first batches for evaluation and prediction: least padding, order restored by index."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(
    split: EncodedSplit,
    indices: np.ndarray,
    pad_token_id: int,
    pad_to_multiple_of: int = 1,
    per_row_positions: bool = False,
    token_types: bool = False,
) -> dict:
    """Pad the rows `indices` to their longest length; labels that are sequences pad with LABEL_PAD.

    Padded position ids are 0, which starts a new (ignored) example in a packed row. DP-SGD needs
    `per_row_positions` (position ids, and with `token_types` token-type ids, as full [rows, length]
    tensors: Opacus computes each row's embedding gradients from its own ids)."""
    if split.loader is not None:
        batch = split.loader(indices)
        if split.labels is not None:
            batch.update(_label_columns(split, indices, 1))
        return batch
    longest = int(split.lengths[indices].max())
    if pad_to_multiple_of > 1:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    batch = {}
    for name, rows in split.sequences.items():
        pad = pad_token_id if name == "input_ids" else 0
        batch[name] = _pad([rows[i] for i in indices], longest, pad)
    if split.attention_mask:
        batch["attention_mask"] = (
            torch.arange(longest).unsqueeze(0) < torch.from_numpy(split.lengths[indices]).unsqueeze(1)
        ).long()
    if per_row_positions and "position_ids" not in batch:
        batch["position_ids"] = torch.arange(longest).expand(len(indices), longest).contiguous()
    if token_types and "token_type_ids" not in batch:
        batch["token_type_ids"] = torch.zeros(len(indices), longest, dtype=torch.long)
    if split.labels is not None:
        batch.update(_label_columns(split, indices, longest))
    return batch


def _label_columns(split: EncodedSplit, indices: np.ndarray, longest: int) -> dict[str, torch.Tensor]:
    labels = _labels(split.labels, indices, longest)
    if len(split.label_keys) == 1:
        return {split.label_keys[0]: labels}
    return {key: labels[:, column] for column, key in enumerate(split.label_keys)}


def _pad(rows: list[list[int]], length: int, value: int) -> torch.Tensor:
    out = np.full((len(rows), length), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def _labels(labels: list | np.ndarray, indices: np.ndarray, longest: int) -> torch.Tensor:
    if isinstance(labels, np.ndarray):
        return torch.from_numpy(labels[indices])
    return _pad([labels[i] for i in indices], longest, LABEL_PAD)
