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
  within (epsilon, delta) by the configured accountant; the spent epsilon is computed from the
  steps actually taken.
- **Batches larger than memory.** A sampled batch is cut into physical pieces; every piece but the
  last is a skipped step (clip and sum only), as Opacus's BatchMemoryManager does.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tunewise.config.schema import DPConfig, RunConfig
from tunewise.errors import ConfigError
from tunewise.evaluation.privacy import auto_delta, noise_multiplier_for, spent_epsilon
from tunewise.training.batching import EncodedSplit, collate


@dataclass(frozen=True)
class PrivacyPlan:
    """What the accountant needs, fixed for the run."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    planned_steps: int
    max_grad_norm: float
    accountant: str
    max_physical_batch_size: int | None

    def spent(self, steps: int) -> float:
        return spent_epsilon(self.noise_multiplier, self.sample_rate, steps, self.delta, self.accountant)

    def record(self, steps: int) -> dict[str, Any]:
        """The run's privacy facts, for run.json and the report."""
        return {
            "epsilon": self.spent(steps),
            "target_epsilon": self.epsilon,
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": steps,
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant,
        }


def check_private_training(config: RunConfig, task_name: str, problem_type: str) -> None:
    """Settings DP-SGD cannot honour fail before any work, each with what to change."""
    dp, train = config.privacy.dp, config.train
    if dp is None:
        return
    if task_name != "text-classification":
        raise ConfigError(f"privacy.dp supports text-classification for now, not {task_name}; remove privacy.dp.")
    if train.gradient_accumulation != 1:
        raise ConfigError(
            "privacy.dp samples each step's batch as a whole; instead of train.gradient_accumulation, set "
            "train.batch_size to the logical batch and privacy.dp.max_physical_batch_size to what fits in memory."
        )
    if train.precision in ("bf16", "fp16"):
        raise ConfigError("privacy.dp trains in fp32 (Opacus's per-example gradients); set train.precision: auto.")
    if train.compile is True:
        raise ConfigError("privacy.dp does not run compiled (Opacus's hooks); set train.compile: auto or false.")
    if config.data.balance != "none" or config.fairness.reweight_groups:
        raise ConfigError(
            "privacy.dp samples every row with the same probability, as its accounting assumes, and uses the "
            "model's own loss: set data.balance: none and fairness.reweight_groups: false."
        )


def plan_privacy(dp: DPConfig, rows: int, batch_size: int, total_steps: int) -> PrivacyPlan:
    """Noise for exactly the steps the loop will take (each a Poisson draw at rate batch / rows)."""
    sample_rate = min(batch_size / rows, 1.0)
    steps = total_steps
    delta = auto_delta(rows) if dp.delta == "auto" else float(dp.delta)
    sigma = noise_multiplier_for(dp.epsilon, delta, sample_rate, steps, dp.accountant)
    return PrivacyPlan(
        epsilon=dp.epsilon,
        delta=delta,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        planned_steps=steps,
        max_grad_norm=dp.max_grad_norm,
        accountant=dp.accountant,
        max_physical_batch_size=dp.max_physical_batch_size,
    )


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
    model: nn.Module,
    optimizer: Any,
    split: EncodedSplit,
    indices: np.ndarray,
    pad_token_id: int,
    device: torch.device,
    plan: PrivacyPlan,
) -> torch.Tensor:
    """Forward and backward over a sampled batch, piece by piece; the caller's optimizer.step() then
    clips the last piece, adds the noise once and updates. Returns the batch's mean loss."""
    size = plan.max_physical_batch_size or len(indices)
    pieces = [indices[i : i + size] for i in range(0, len(indices), size)]
    token_types = any(name.endswith("token_type_embeddings") for name, _ in model.named_modules())
    total = torch.zeros((), device=device)
    for number, piece in enumerate(pieces):
        batch = collate(split, piece, pad_token_id, per_row_positions=True, token_types=token_types)
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
