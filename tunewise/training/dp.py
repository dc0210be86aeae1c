"""DP-SGD for the training loop, with Opacus: per-example clipping, Gaussian noise, Poisson sampling.

The guarantee holds only if every step is what the accountant assumes, so this module owns the
parts that make it so:

- **Poisson sampling.** Each row joins a step's batch independently with probability q = batch /
  rows (Opacus's accounting assumes it; fixed-size shuffled batches would not match it). The draw
  is a pure function of (seed, epoch), like every other batch order here, so resume stays exact.
- **Per-example gradients.** Opacus's GradSampleModule computes them; Hugging Face models must get
  per-row `position_ids` and `token_type_ids`, or the position and token-type embeddings see one
  shared row and their per-example gradients are wrong (`collate(..., per_row_positions=True)`).
- **Per-example losses.** Clipping bounds each example's share of the update only if the batch's
  loss is a sum of terms that each depend on one example alone. A language model's own loss is the
  mean over every target token of the batch, so an example's weight would depend on the others'
  token counts; token-level labels are therefore scored as the mean over rows of each row's mean
  token loss (`per_example_loss`).
- **Noise for the budget.** The noise multiplier is the smallest that keeps all planned steps
  within (epsilon, delta) by the configured accountant (`tunewise.training.accounting`, planned
  once in preparation); the spent epsilon is computed from the steps actually taken.
- **Batches larger than memory.** A sampled batch is cut into physical pieces; every piece but the
  last is a skipped step (clip and sum only), as Opacus's BatchMemoryManager does.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from tunewise.errors import ConfigError
from tunewise.inference import collate
from tunewise.training.accounting import PrivacyPlan
from tunewise.types import LABEL_PAD, EncodedSplit


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, plan: PrivacyPlan, batch_size: int):
    """The model with per-example gradient hooks and the optimizer that clips and adds noise.

    Layers Opacus cannot give per-example gradients for (BatchNorm mixes examples) are refused with
    the fix; `opacus.validators.ModuleValidator.fix` swaps BatchNorm for GroupNorm."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer
    from opacus.validators import ModuleValidator

    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise ConfigError(
            f"privacy.dp cannot train this model: {problems[0]}. Replace BatchNorm by GroupNorm or LayerNorm "
            "(opacus.validators.ModuleValidator.fix does it), or freeze those layers (strategy.method)."
        )
    private_model = GradSampleModule(model)
    private_optimizer = DPOptimizer(
        optimizer,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm,
        expected_batch_size=batch_size,
    )
    return private_model, private_optimizer


def poisson_batches(rows: int, sample_rate: float, steps: int, seed: int, epoch: int) -> list[np.ndarray]:
    """`steps` draws in which each row is included independently with probability `sample_rate`.

    An empty draw (probability (1 - q)^rows, negligible for real batches) is dropped: a step not
    taken spends no privacy, and the accountant counts the steps actually taken."""
    rng = np.random.default_rng([seed, epoch, 1])  # its own stream, apart from the shuffled batches
    batches = [np.flatnonzero(rng.random(rows) < sample_rate) for _ in range(steps)]
    return [batch for batch in batches if len(batch)]


def private_backward(
    model: nn.Module, optimizer: Any, split: EncodedSplit, indices: np.ndarray, device: torch.device, plan: PrivacyPlan
) -> torch.Tensor:
    """Forward and backward over a sampled batch, piece by piece; the caller's optimizer.step() then
    clips the last piece, adds the noise once and updates. Returns the batch's mean loss."""
    size = plan.max_physical_batch_size or len(indices)
    pieces = [indices[i : i + size] for i in range(0, len(indices), size)]
    token_types = any(name.endswith("token_type_embeddings") for name, _ in model.named_modules())
    total = torch.zeros((), device=device)
    for number, piece in enumerate(pieces):
        batch = collate(split, piece, per_row_positions=True, token_types=token_types)
        batch = {name: tensor.to(device) for name, tensor in batch.items()}
        loss = per_example_loss(model, batch)
        with warnings.catch_warnings():  # the embeddings' inputs are token ids, which never need a gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
            loss.backward()
        total += loss.detach() * len(piece)
        if number < len(pieces) - 1:  # clip and sum this piece's per-example gradients, no update yet
            optimizer.signal_skip_step(do_skip=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return total / len(indices)


def per_example_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's loss as the mean over rows of a loss that depends on that row alone.

    One target per row (classification, regression, multi-label's row of floats): the model's own
    mean already is that. Token-level targets (integer labels, one per token): each row's mean loss
    over its own target tokens, then the mean over rows; a decoder-only model predicts the next token,
    so its logits are shifted by one against the labels, as its own loss does."""
    labels = batch["labels"]
    if labels.ndim < 2 or labels.is_floating_point():
        return model(**batch).loss
    logits = model(**{name: tensor for name, tensor in batch.items() if name != "labels"}).logits.float()
    if predicts_next_token(model):
        logits, labels = logits[:, :-1], labels[:, 1:]
    losses = nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=LABEL_PAD, reduction="none")
    targets = (labels != LABEL_PAD).sum(dim=1).clamp(min=1)
    return (losses.sum(dim=1) / targets).mean()


def predicts_next_token(model: nn.Module) -> bool:
    """A decoder-only generative model: its logit at position t scores the token at t + 1. Asked of
    the outermost transformers model inside Opacus's and peft's wrappers (which do not all pass
    attributes on), never of the task."""
    from transformers import PreTrainedModel

    inner = next((module for module in model.modules() if isinstance(module, PreTrainedModel)), None)
    return inner is not None and inner.can_generate() and not inner.config.is_encoder_decoder
