"""A model's outputs for every row of an encoded split, in input order, and the mean loss."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tunewise.inference.batches import collate, loss_terms, sorted_batches, to_device
from tunewise.types import EncodedSplit, Logits


def model_device(model: nn.Module) -> torch.device:
    """Where a model runs: its own `device` when it declares one (transformers models; a model without
    torch parameters, such as an ONNX Runtime session, declares the CPU), else its first parameter's."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


# on a CPU a batch holds at most 30 % padding (`sorted_batches`); a GPU computes padding nearly for free in wide batches
CPU_MAX_PADDING = 0.3


def eval_batch_size(device: torch.device) -> int:
    """Rows per evaluation batch. 128 keeps a GPU busy; on CPU 32 is faster, its activations staying in
    cache (MiniLM, 2 cores, the 872 SST-2 test rows in length-sorted batches: 3.1 s at 32, 3.6 s at 128)."""
    return 128 if device.type == "cuda" else 32


@dataclass(frozen=True)
class ProcessShare:
    """This process's place among the processes that evaluate one split together."""

    rank: int
    processes: int


_SHARE: ContextVar[ProcessShare | None] = ContextVar("evaluation_share", default=None)


@contextmanager
def shared_across_processes(rank: int, processes: int) -> Iterator[None]:
    """Inside, `predict_logits` runs each process on its share of the batches and gathers every process's
    outputs, so each ends with all the split's rows exactly once. Every process must make the same calls
    inside (the training loop's evaluations do); outside, each call is one process's own."""
    token = _SHARE.set(ProcessShare(rank, processes) if processes > 1 else None)
    try:
        yield
    finally:
        _SHARE.reset(token)


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    split: EncodedSplit,
    batch_size: int | None = None,
    device: torch.device | None = None,
    keep_logits: bool = True,
) -> tuple[Logits, float | None]:
    """Outputs for every row in input order, and the mean loss when the split has labels.

    Outputs are one array [rows, ...] for row-level models, or, for models that score every token
    (NER, question answering), a list of one array per row trimmed to its length. The loss is
    averaged over rows, or over labelled tokens when labels are token sequences. `keep_logits=False`
    returns no outputs (a language model's would not fit in memory). `batch_size`: `eval_batch_size`'s.
    The loss is None when the model computes none (an exported model returns scores only)."""
    device = device or model_device(model)
    batch_size = batch_size or eval_batch_size(device)
    was_training = model.training
    if was_training:  # eval() and train() walk every module: ~1 ms of a 10 ms MiniLM call on one text
        model.eval()
    pad_multiple = 8 if device.type == "cuda" else 1
    max_padding = None if device.type == "cuda" else CPU_MAX_PADDING
    batches = sorted_batches(split.lengths, batch_size, max_padding)
    share = _SHARE.get()
    if share is not None:
        batches = batches[share.rank :: share.processes]
    scores = _Scores([], [], torch.zeros((), device=device), 0.0, False)
    for indices in batches:
        batch = to_device(collate(split, indices, pad_multiple), device)
        result = model(**batch)
        if result.loss is not None:
            weight = float(loss_terms(split, indices).sum())
            scores.loss_sum += result.loss.float() * weight
            scores.loss_weight += weight
            scores.scored_loss = True
        if keep_logits:
            scores.outputs.append(model_scores(result).float().cpu().numpy())
        scores.order.append(indices)
    if was_training:
        model.train()
    if share is not None:
        scores = _gathered(scores, share.processes)
    loss = scores.mean_loss() if split.labels is not None and scores.scored_loss else None
    if not keep_logits:
        return None, loss
    if not scores.outputs:
        return np.zeros((0, 0), dtype=np.float32), None
    indices = np.concatenate(scores.order)
    if scores.outputs[0].ndim > 2 and "input_ids" in split.sequences:  # per-token scores: one array per row
        per_row: list[np.ndarray] = [np.empty(0)] * len(split)
        rows = (row for batch in scores.outputs for row in batch)
        for index, row_scores in zip(indices, rows, strict=True):
            per_row[index] = row_scores[: split.lengths[index]]
        return per_row, loss
    logits = np.concatenate(scores.outputs)
    restored = np.empty_like(logits)
    restored[indices] = logits
    return restored, loss


@dataclass
class _Scores:
    """What one pass over batches produced: the batches' outputs and row indices, and the loss summed."""

    outputs: list[np.ndarray]
    order: list[np.ndarray]
    loss_sum: torch.Tensor | float
    loss_weight: float
    scored_loss: bool

    def mean_loss(self) -> float:
        return float(self.loss_sum) / max(self.loss_weight, 1.0)


def _gathered(mine: _Scores, processes: int) -> _Scores:
    """Every process's scores joined (one collective call): each row of the split appears once."""
    local = _Scores(mine.outputs, mine.order, float(mine.loss_sum), mine.loss_weight, mine.scored_loss)
    everyone: list[Any] = [None] * processes
    torch.distributed.all_gather_object(everyone, local)
    return _Scores(
        [batch for scores in everyone for batch in scores.outputs],
        [indices for scores in everyone for indices in scores.order],
        sum(scores.loss_sum for scores in everyone),
        sum(scores.loss_weight for scores in everyone),
        any(scores.scored_loss for scores in everyone),
    )


def model_scores(result: Any) -> torch.Tensor:
    """A model output's scores: `logits`, or question answering's start and end logits stacked as [..., 2]."""
    if getattr(result, "logits", None) is not None:
        return result.logits
    return torch.stack([result.start_logits, result.end_logits], dim=-1)
