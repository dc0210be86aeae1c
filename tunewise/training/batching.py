"""Encoded datasets and the batches built from them.

Short texts padded to a fixed length waste most of the compute on padding, so batches group
examples of similar length (sorted within shuffled "mega-batches", as Trainer's
`group_by_length` does) and are padded only to their longest row. Batch order is a pure function
of (seed, epoch), which is what makes exact resume possible: a resumed run rebuilds the epoch's
batch list and skips the batches it has already seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

LABEL_PAD = -100  # ignored by cross-entropy; pads per-token labels


@dataclass
class EncodedSplit:
    """Tokenised rows: variable-length sequence columns, and one label (or label sequence) per row."""

    sequences: dict[str, list]  # column -> one id sequence (list or int array) per row
    labels: list | np.ndarray | None
    # False for packed rows: their position_ids restart at each example, which is how the model
    # keeps examples apart (an explicit mask would switch that detection off)
    attention_mask: bool = True
    fixed_shape: bool = False  # every row has the same length (packed rows): batches of one shape
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = np.fromiter((len(ids) for ids in self.sequences["input_ids"]), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lengths)


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
    longest = int(split.lengths[indices].max())
    if pad_to_multiple_of > 1:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    batch: dict[str, torch.Tensor] = {}
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
        batch["labels"] = _labels(split.labels, indices, longest)
    return batch


def _pad(rows: list[list[int]], length: int, value: int) -> torch.Tensor:
    out = np.full((len(rows), length), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


def _labels(labels: list | np.ndarray, indices: np.ndarray, longest: int) -> torch.Tensor:
    if isinstance(labels, np.ndarray):
        return torch.from_numpy(labels[indices])
    return _pad([labels[i] for i in indices], longest, LABEL_PAD)
