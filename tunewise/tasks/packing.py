"""Packing causal-LM examples into rows of exactly max_length tokens: no compute goes to padding, and
every batch has one shape (which `torch.compile` rewards).

Packing must not let an example see the one before it: position ids restart at 0 at every example,
and transformers turns such position ids into a block-diagonal causal mask (or variable-length
attention with FlashAttention). The first token of each example is never a target, so nothing is
predicted across a boundary either.

Plain text (continued pre-training) is packed as one stream, an example longer than a row running
on into the next. Conversations are packed whole (`pack_whole`): an answer cut from its prompt
would teach the model to answer nothing, so each row takes whole examples, first fit, and rows keep
their own length (the padding a batch adds is attended by nothing and counted by no loss).
"""

from __future__ import annotations

import numpy as np

from tunewise.types import LABEL_PAD, EncodedSplit

OPEN_ROWS = 32


def pack(examples: list[np.ndarray], targets: list[np.ndarray], max_length: int, pad_token_id: int = 0) -> EncodedSplit:
    """Concatenate examples into rows of max_length tokens (an example longer than a row is split).

    position_ids restart at 0 at each example (and at each row), and the first token of every
    example is not a target, so neither attention nor the loss crosses from one example into the next.
    """
    ids = np.concatenate(examples) if examples else np.zeros(0, dtype=np.int32)
    labels = np.concatenate(targets).astype(np.int64) if targets else np.zeros(0, dtype=np.int64)
    positions = np.concatenate([np.arange(len(example)) for example in examples]) if examples else ids
    starts = np.cumsum([0] + [len(example) for example in examples[:-1]])
    labels[starts] = LABEL_PAD
    rows = range(0, len(ids), max_length)
    positions_per_row = []
    for start in rows:  # an example cut by a row boundary restarts its positions in the new row
        chunk = positions[start : start + max_length].copy()
        if chunk[0] != 0:
            next_example = np.flatnonzero(chunk == 0)
            end = next_example[0] if len(next_example) else len(chunk)
            chunk[:end] -= chunk[0]
        positions_per_row.append(chunk)
    split = _packed(
        [ids[start : start + max_length] for start in rows],
        [labels[start : start + max_length] for start in rows],
        positions_per_row,
        pad_token_id,
    )
    for row in split.labels or []:  # a row's first token has nothing before it to be predicted from
        row[0] = LABEL_PAD
    return split


def pack_whole(
    examples: list[np.ndarray], targets: list[np.ndarray], max_length: int, pad_token_id: int
) -> EncodedSplit:
    """Whole examples (each at most max_length tokens) into rows of at most max_length, first fit in
    order. Rows are not padded to max_length: an example longer than half a row has a row to itself,
    and batching pads each batch to its longest row only (rows of one length are grouped)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index, example in enumerate(examples):
        if len(example) > max_length:
            raise ValueError(f"example {index} has {len(example)} tokens, more than a row's {max_length}")
        # first fit among the last few rows: nearly as tight as searching them all, and linear in the examples
        open_rows = range(max(0, len(room) - OPEN_ROWS), len(room))
        row = next((r for r in open_rows if room[r] >= len(example)), None)
        if row is None:
            rows.append([])
            room.append(max_length)
            row = len(rows) - 1
        rows[row].append(index)
        room[row] -= len(example)
    ids = [np.concatenate([examples[i] for i in members]).astype(np.int32) for members in rows]
    labels = [np.concatenate([_first_untargeted(targets[i]) for i in members]) for members in rows]
    positions = [np.concatenate([np.arange(len(examples[i])) for i in members]) for members in rows]
    return EncodedSplit(
        sequences={"input_ids": ids, "position_ids": positions},
        labels=labels,
        attention_mask=False,
        pad_token_id=pad_token_id,
        shifted_labels=True,
    )


def _first_untargeted(target: np.ndarray) -> np.ndarray:
    target = target.astype(np.int64)  # a copy: the caller's arrays stay as they were
    target[0] = LABEL_PAD
    return target


def _packed(ids: list, labels: list, positions: list, pad_token_id: int) -> EncodedSplit:
    return EncodedSplit(
        sequences={"input_ids": ids, "position_ids": positions},
        labels=labels,
        attention_mask=False,
        fixed_shape=True,
        pad_token_id=pad_token_id,
        shifted_labels=True,
    )
