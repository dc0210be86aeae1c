"""A model's outputs for every row of an encoded split, in input order, and the mean loss."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from tunewise.inference.batches import collate, sorted_batches, to_device
from tunewise.types import LABEL_PAD, EncodedSplit, Logits


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
    outputs: list[torch.Tensor] = []
    order: list[np.ndarray] = []
    loss_sum = torch.zeros((), device=device)
    loss_weight = torch.zeros((), device=device)
    pad_multiple = 8 if device.type == "cuda" else 1
    scored_loss = False
    max_padding = None if device.type == "cuda" else CPU_MAX_PADDING
    for indices in sorted_batches(split.lengths, batch_size, max_padding):
        batch = to_device(collate(split, indices, pad_multiple), device)
        result = model(**batch)
        if result.loss is not None:
            scored_loss = True
            labels = batch.get("labels")
            token_labels = labels is not None and labels.dim() > 1 and not labels.is_floating_point()
            weight = torch.ne(labels, LABEL_PAD).sum() if labels is not None and token_labels else len(indices)
            loss_sum += result.loss.float() * weight
            loss_weight += weight
        if keep_logits:
            outputs.append(model_scores(result).float())
        order.append(indices)
    if was_training:
        model.train()
    loss = (loss_sum / loss_weight.clamp(min=1)).item() if split.labels is not None and scored_loss else None
    if not keep_logits:
        return None, loss
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32), None
    indices = np.concatenate(order)
    if outputs[0].dim() > 2 and "input_ids" in split.sequences:  # per-token scores: one array per row
        per_row: list[np.ndarray] = [np.empty(0)] * len(split)
        rows = (row for batch in outputs for row in batch.cpu().numpy())
        for index, scores in zip(indices, rows, strict=True):
            per_row[index] = scores[: split.lengths[index]]
        return per_row, loss
    logits = torch.cat(outputs).cpu().numpy()
    restored = np.empty_like(logits)
    restored[indices] = logits
    return restored, loss


def model_scores(result: Any) -> torch.Tensor:
    """A model output's scores: `logits`, or question answering's start and end logits stacked as [..., 2]."""
    if getattr(result, "logits", None) is not None:
        return result.logits
    return torch.stack([result.start_logits, result.end_logits], dim=-1)
