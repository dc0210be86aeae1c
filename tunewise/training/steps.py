"""How one training batch becomes gradients: chosen once per run, so the loop never asks "is this DP?".

`PlainSteps` is ordinary training under Accelerate: length-grouped (or oversampled) batches, mixed
precision, optional class-weighted loss, gradient-norm clipping, optional compilation. `PrivateSteps`
is DP-SGD under Opacus: Poisson-sampled batches, per-example clipping and noise in the optimizer,
no other clipping, and the privacy spent reported at each epoch's end. Both offer the same
operations, which is all `training.loop.fit` needs.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn

from tunewise.inference import collate, loss_terms, model_scores, to_device
from tunewise.training.batching import length_grouped_batches
from tunewise.training.dp import make_private, poisson_batches, private_backward
from tunewise.training.gradients import SparseEmbeddingGradients
from tunewise.training.optim import batches_per_epoch
from tunewise.training.settings import TrainingSettings
from tunewise.types import EncodedSplit

WHOLE_MODEL_COMPILE_STEPS = 3000  # below this, compiling block by block starts fast enough to win


class Steps(Protocol):
    model: nn.Module  # what the evaluations during training call: the model itself, without a training wrapper
    optimizer: Any  # the optimizer to step (wrapped by Accelerate or Opacus)

    def bare(self) -> nn.Module:
        """The model itself, without Accelerate's or Opacus's wrapper (for its weights)."""
        ...

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The row indices of each batch of `epoch`, the same in every process: a pure function of (seed, epoch)."""
        ...

    def backward(self, indices: np.ndarray, sync: bool) -> torch.Tensor:
        """Forward and backward over this process's share of one batch. `sync`: the last batch before an
        optimizer step, whose backward averages the gradients across processes. Returns this process's
        part of the batch's mean loss, still on the device (the parts of all processes add up to it)."""
        ...

    def clip(self) -> None:
        """Before the optimizer step."""
        ...

    def zero_grad(self) -> None:
        """After the optimizer step: the gradients cleared for the next batch."""
        ...

    def end_epoch(self, step: int) -> dict[str, Any] | None:
        """A history record at each epoch's end (DP: the privacy spent so far), or None."""
        ...

    def finish(self) -> None:
        """After training: leave the model plain for evaluation and saving."""
        ...

    def train(self) -> None:
        """Put the model in training mode."""
        ...


class PlainSteps:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train: EncodedSplit,
        settings: TrainingSettings,
        accelerator: Accelerator,
    ):
        # training runs through Accelerate's wrapper (DDP with several processes); evaluations call the model
        # itself: DDP's forward syncs buffers across processes, and each evaluates its own share of batches
        self.wrapped, self.optimizer = accelerator.prepare(model, optimizer)
        self.model = accelerator.unwrap_model(self.wrapped)
        self.train_split, self.settings, self.accelerator = train, settings, accelerator
        self.pad_multiple = 8 if accelerator.device.type == "cuda" else 1
        self.forward: nn.Module = self.wrapped
        if settings.compile:
            self.forward = compiled_forward(self.bare(), train.fixed_shape, settings.total_steps)
        # one process on a CPU, eager: the large embedding tables' gradients in kept buffers (training.gradients)
        on_one_cpu = accelerator.device.type == "cpu" and accelerator.num_processes == 1
        self.sparse_embeddings = SparseEmbeddingGradients(self.model) if on_one_cpu and not settings.compile else None
        weights = settings.class_weights
        self.loss_weights = (
            None if weights is None else torch.tensor(weights, dtype=torch.float32, device=accelerator.device)
        )

    def bare(self) -> nn.Module:
        return self.model

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        settings = self.settings
        batches = length_grouped_batches(
            self.train_split.lengths, settings.batch_size, settings.seed, epoch, sample_weights=settings.sample_weights
        )
        if settings.compile and self.train_split.fixed_shape:  # one shape, one static graph: drop the short batch
            batches = [batch for batch in batches if len(batch) == settings.batch_size] or batches
        return batches

    def backward(self, indices: np.ndarray, sync: bool) -> torch.Tensor:
        processes = self.accelerator.num_processes
        rows, share = process_share(self.train_split, indices, self.accelerator.process_index, processes)
        batch = to_device(collate(self.train_split, rows, self.pad_multiple), self.accelerator.device)
        with self.accelerator.autocast():
            if share == 0.0:  # nothing of the loss here; the mean over no terms would be NaN, and NaN x 0 is NaN
                batch.pop("labels", None)
                loss = model_scores(self.forward(**batch)).float().sum() * 0.0
            elif self.loss_weights is None:
                loss = self.forward(**batch).loss
            else:
                loss = weighted_loss(self.forward, batch, self.loss_weights)
        # the processes' gradients are averaged: each share weighs its part of the batch's loss terms, times
        # the process count, so the average is the gradient of the whole batch's mean loss
        scaled = loss if processes == 1 else loss * (share * processes)
        accumulating = processes > 1 and not sync
        with self.accelerator.no_sync(self.wrapped) if accumulating else nullcontext():
            self.accelerator.backward(scaled / self.settings.gradient_accumulation)
        return loss.detach() if processes == 1 else loss.detach() * share

    def clip(self) -> None:
        if self.settings.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.wrapped.parameters(), self.settings.max_grad_norm)

    def zero_grad(self) -> None:
        if self.sparse_embeddings is None:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.sparse_embeddings.zero(self.optimizer)

    def end_epoch(self, step: int) -> dict[str, Any] | None:
        return None

    def finish(self) -> None:
        if self.sparse_embeddings is not None:
            self.sparse_embeddings.release()

    def train(self) -> None:
        self.wrapped.train()


class PrivateSteps:
    """Opacus's hooks and optimizer replace Accelerate's wrappers: one process, fp32. Training calls the
    GradSampleModule; evaluations call the model itself, which keeps every method scoring needs (a
    language model's `generate`, its output embeddings), while the hooks record nothing outside training."""

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, train: EncodedSplit, settings: TrainingSettings,
        device: torch.device,
    ):  # fmt: skip
        assert settings.privacy is not None
        self.plan = settings.privacy
        self.model = model.to(device)
        self.private, self.optimizer = make_private(self.model, optimizer, self.plan, settings.batch_size)
        self.train_split, self.settings, self.device = train, settings, device
        self.batches_per_epoch = batches_per_epoch(len(train), settings.batch_size)

    def bare(self) -> nn.Module:
        return self.model

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rows, seed = len(self.train_split), self.settings.seed
        return poisson_batches(rows, self.plan.sample_rate, self.batches_per_epoch, seed, epoch)

    def backward(self, indices: np.ndarray, sync: bool) -> torch.Tensor:
        return private_backward(self.private, self.optimizer, self.train_split, indices, self.device, self.plan)

    def clip(self) -> None:
        """DP-SGD clips each example's gradient in the optimizer step instead."""

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def end_epoch(self, step: int) -> dict[str, Any] | None:
        return {"epsilon": self.plan.spent(step)}

    def finish(self) -> None:
        self.private.remove_hooks()  # evaluation and saving after training need no per-example gradients

    def train(self) -> None:
        self.private.train()


def run_accelerator(mixed_precision: str, cpu: bool, **options: Any) -> Accelerator:
    """The Accelerator of one run, with that run's precision. Accelerate keeps one state per process and
    refuses a second Accelerator of another precision (a notebook that trains in fp32, then with precision
    auto), so the previous run's state is dropped first; the processes' group (PartialState) is kept."""
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu, **options)


def make_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: EncodedSplit,
    settings: TrainingSettings,
    accelerator: Accelerator,
) -> Steps:
    """DP-SGD when the plan has a privacy budget, else ordinary steps: decided here, once."""
    if settings.privacy is not None:
        return PrivateSteps(model, optimizer, train, settings, accelerator.device)
    return PlainSteps(model, optimizer, train, settings, accelerator)


def process_share(split: EncodedSplit, indices: np.ndarray, rank: int, processes: int) -> tuple[np.ndarray, float]:
    """Process `rank`'s rows of a batch, and their share of its loss terms (the shares add up to 1). A process
    left without rows (a batch smaller than the process count) computes one row with weight 0: every
    process must take part in the gradient averaging."""
    if processes == 1:
        return indices, 1.0
    positions = np.array_split(np.arange(len(indices)), processes)[rank]
    if len(positions) == 0:
        return indices[:1], 0.0
    terms = loss_terms(split, indices)  # by position: an oversampled batch may repeat a row
    total = terms.sum()
    return indices[positions], float(terms[positions].sum() / total) if total > 0 else 0.0


def weighted_loss(forward: nn.Module, batch: dict[str, torch.Tensor], class_weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with each row weighted by its class, averaged over the rows of the batch.

    Not cross_entropy(weight=...): that divides by the batch's summed weights, so a batch without a
    minority row counts as much as one with it, and most batches of a 19:1 set have none (measured:
    minority recall stayed at 0). The mean over rows is the balanced risk, as oversampling is."""
    labels = batch.pop("labels")
    losses = nn.functional.cross_entropy(forward(**batch).logits.float(), labels, reduction="none")
    return (losses * class_weights[labels]).mean()


def compiled_forward(model: nn.Module, fixed_shape: bool, total_steps: int) -> nn.Module:
    """The model compiled for training; it shares the model's parameters, so evaluation, checkpoints
    and the best weights keep using the plain model.

    Two ways, chosen by run length from measurements on an H100 (bench/README.md, GPT-2 small, rows
    of 16 x 512 tokens): compiling the whole model fuses across blocks (282k tokens/s) but costs a
    45 s cold start; compiling one transformer block and reusing it for every layer (regional
    compilation) starts in a few seconds but runs at 201k tokens/s. The whole model pays back after
    about WHOLE_MODEL_COMPILE_STEPS steps. Batches of one shape get static kernels; varying lengths
    one dynamic-shape graph instead of a recompilation per length.
    """
    if total_steps >= WHOLE_MODEL_COMPILE_STEPS:
        return torch.compile(model, dynamic=not fixed_shape)  # type: ignore[return-value]
    from accelerate.utils import compile_regions

    return compile_regions(model, dynamic=not fixed_shape)
