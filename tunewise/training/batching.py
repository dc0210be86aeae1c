"""The order of training batches, and the weights that rebalance them.

Short texts padded to a fixed length waste most of the compute on padding, so batches group
examples of similar length (sorted within shuffled "mega-batches", as Trainer's
`group_by_length` does) and are padded only to their longest row. Batch order is a pure function
of (seed, epoch), which is what makes exact resume possible: a resumed run rebuilds the epoch's
batch list and skips the batches it has already seen.
"""

from __future__ import annotations

import numpy as np


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
