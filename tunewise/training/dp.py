"""DP-SGD for the training loop, with Opacus: per-example clipping, Gaussian noise, Poisson sampling.

The guarantee holds only if every step is what the accountant assumes, so this module owns the
parts that make it so:

- **Poisson sampling.** Each row joins a step's batch independently with probability q = batch /
  rows (Opacus's accounting assumes it; fixed-size shuffled batches would not match it). The draw
  is a pure function of (seed, epoch), like every other batch order here, so resume stays exact.
- **Per-example gradients.** Opacus's GradSampleModule computes them; Hugging Face models must get
  per-row `position_ids` and `token_type_ids`, or the position and token-type embeddings see one
  shared row and their per-example gradients are wrong (`collate(..., per_row_positions=True)`).
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
from tunewise.types import EncodedSplit


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
        loss = model(**batch).loss
        with warnings.catch_warnings():  # the embeddings' inputs are token ids, which never need a gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
            loss.backward()
        total += loss.detach() * len(piece)
        if number < len(pieces) - 1:  # clip and sum this piece's per-example gradients, no update yet
            optimizer.signal_skip_step(do_skip=True)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return total / len(indices)
