"""The training loop: one function, readable top to bottom.

    for each epoch:
        for each length-grouped batch (skipping those a resumed run has already seen):
            forward, backward (scaled by gradient accumulation)
            every `gradient_accumulation` batches: clip, optimiser step, schedule step
            on schedule: log, evaluate (early stopping, best model), checkpoint
    restore the best model

On a GPU the host must never wait for the device inside a step, or the device idles while the
host prepares the next batch. So batches go up from pinned memory without blocking, and loss values
stay on the device: each log line keeps its loss as a device tensor, and the host reads them all at
once (one synchronisation) every FLUSH_EVERY log lines, before an evaluation or a checkpoint, and at
the end. Accelerate handles device placement, mixed precision and multi-GPU.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from tunewise.config.schema import RunConfig
from tunewise.errors import ConfigError
from tunewise.evaluation.metrics import is_better
from tunewise.training.batching import LABEL_PAD, EncodedSplit, collate, length_grouped_batches, sorted_batches
from tunewise.training.checkpointing import (
    load_latest_checkpoint,
    load_trainable_state,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    trainable_state,
)
from tunewise.training.optim import batches_per_process, build_optimizer, build_scheduler, steps_per_epoch
from tunewise.training.privacy import PrivacyPlan, make_private, poisson_batches, private_backward

LOG_EVERY = 10  # optimizer steps between log lines
FLUSH_EVERY = 10  # log lines whose losses are read from the device together
WHOLE_MODEL_COMPILE_STEPS = 3000  # below this, compiling block by block starts fast enough to win


@dataclass
class TrainingState:
    """Everything that changes during training and must survive a resume."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    history: list[dict] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0  # optimisation only: evaluation time is counted apart
    eval_seconds: float = 0.0
    samples_seen: int = 0
    unlogged_loss: float = 0.0  # loss summed since the last log line, so resumed logs match
    unlogged_batches: int = 0


@dataclass
class FitResult:
    state: TrainingState
    total_steps: int
    epochs: float
    best_validation: dict | None
    peak_memory_mb: float


def fit(
    model: nn.Module,
    train: EncodedSplit,
    validation: EncodedSplit,
    config: RunConfig,
    evaluate: Callable[[nn.Module, EncodedSplit], dict[str, Any]],
    accelerator: Accelerator,
    run_dir: Path,
    pad_token_id: int,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    class_weights: np.ndarray | None = None,
    sample_weights: np.ndarray | None = None,
    privacy: PrivacyPlan | None = None,
) -> FitResult:
    """Train `model` in place and leave the best weights (by the selection metric) in it.

    `class_weights` weigh the training loss per class (data.balance: reweight; the validation loss
    stays unweighted, so it compares across runs); `sample_weights` oversample rows (oversample).
    `privacy` trains with DP-SGD (tunewise.training.privacy): Poisson-sampled batches, per-example
    clipping and noise instead of the usual batches and gradient clipping."""
    settings = config.train
    metric = settings.early_stopping.metric if settings.early_stopping else None
    pad_multiple = 8 if accelerator.device.type == "cuda" else 1
    batches_per_epoch = batches_per_process(len(train), settings.batch_size, accelerator.num_processes)
    epochs = float(settings.epochs)  # resolved from "auto" by the caller
    total_steps = max(math.ceil(epochs * steps_per_epoch(len(train), settings, accelerator.num_processes)), 1)

    optimizer = build_optimizer(model, settings, config.strategy, float(settings.learning_rate))
    scheduler = build_scheduler(optimizer, settings, total_steps)
    if privacy is None:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:  # Opacus's hooks and optimizer replace Accelerate's wrappers: one process, fp32
        model, optimizer = make_private(model.to(accelerator.device), optimizer, privacy, settings.batch_size)

    def bare() -> nn.Module:
        """The model itself, without Accelerate's or Opacus's wrapper (for its weights)."""
        return model._module if privacy is not None else accelerator.unwrap_model(model)

    loss_weights = (
        None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32, device=accelerator.device)
    )
    forward = model
    if settings.compile is True:
        forward = compiled_forward(bare(), train.fixed_shape, total_steps)

    state = TrainingState()
    checkpoint_dir = run_dir / "checkpoints"
    best_weights: dict[str, torch.Tensor] | None = None
    if resume and (saved := load_latest_checkpoint(checkpoint_dir)) is not None:
        load_trainable_state(bare(), saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        restore_rng_state(saved["rng"])
        state = saved["training_state"]
        best_weights = saved.get("best_weights")

    def run_evaluation() -> bool:
        """Evaluate, record, update the best model; True when early stopping says stop."""
        nonlocal best_weights
        flush_logs()
        eval_started = time.perf_counter()
        metrics = evaluate(model, validation)
        state.eval_seconds += time.perf_counter() - eval_started
        if metric is not None and metrics.get(metric) is None:
            raise ConfigError(
                f"train.early_stopping.metric {metric!r} could not be computed on the validation data (ROC-AUC "
                "needs every class present there). Choose another metric, e.g. f1_macro, or a larger validation set."
            )
        if show_progress and accelerator.is_main_process:
            shown = ", ".join(f"{name} {metrics[name]:.4f}" for name in dict.fromkeys([metric or "loss", "loss"]))
            progress.console.print(f"step {state.step} (epoch {epoch_position():.2f}) validation: {shown}")
        state.history.append(
            {"step": state.step, "epoch": epoch_position(), "split": "validation", "metrics": scalar_metrics(metrics)}
        )
        if metric is None:  # no selection metric: the final model is the result
            state.best_step = state.step
            return False
        value = metrics[metric]
        if is_better(metric, value, state.best_metric, settings.early_stopping.min_delta):
            state.best_metric, state.best_step = value, state.step
            state.evaluations_without_improvement = 0
            best_weights = trainable_state(bare())
            return False
        state.evaluations_without_improvement += 1
        return state.evaluations_without_improvement >= settings.early_stopping.patience

    def epoch_batches(epoch: int) -> list[np.ndarray]:
        """This process's share of the epoch's batches (equal counts, so processes stay in step)."""
        if privacy is not None:
            return poisson_batches(len(train), privacy.sample_rate, batches_per_epoch, settings.seed, epoch)
        batches = length_grouped_batches(
            train.lengths, settings.batch_size, settings.seed, epoch, sample_weights=sample_weights
        )
        if settings.compile is True and train.fixed_shape:  # one shape, one static graph: drop the short batch
            batches = [batch for batch in batches if len(batch) == settings.batch_size] or batches
        share = len(batches) // accelerator.num_processes if accelerator.num_processes > 1 else len(batches)
        return batches[accelerator.process_index :: accelerator.num_processes][:share]

    def epoch_position() -> float:
        return round(state.epoch + state.batch_in_epoch / batches_per_epoch, 4)

    progress = _progress_bar(show_progress and accelerator.is_main_process, console)
    task_id = progress.add_task("training", total=total_steps, completed=state.step, loss=float("nan"), lr=0.0)
    pending_logs: list[tuple[dict, torch.Tensor]] = []  # log lines whose loss is still on the device

    def flush_logs() -> None:
        """Read the pending losses in one device synchronisation and append their log lines."""
        if not pending_logs:
            return
        losses = torch.stack([loss for _, loss in pending_logs]).tolist()
        for (record, _), loss in zip(pending_logs, losses, strict=True):
            state.history.append({**record, "loss": loss})
        progress.update(task_id, loss=losses[-1])
        pending_logs.clear()

    running_loss = torch.full((), state.unlogged_loss, device=accelerator.device)
    running_batches = state.unlogged_batches
    last_eval_step = max((h["step"] for h in state.history if h.get("split") == "validation"), default=-1)
    started, eval_seconds_before = time.perf_counter(), state.eval_seconds

    def train_seconds_now() -> float:
        """Optimisation time so far: wall time since `started` minus the evaluations run since then."""
        return state.train_seconds + time.perf_counter() - started - (state.eval_seconds - eval_seconds_before)

    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    model.train()
    with progress:
        while state.step < total_steps and not state.stopped_early:
            batches = epoch_batches(state.epoch)
            for indices in batches[state.batch_in_epoch :]:
                if privacy is not None:
                    loss = private_backward(model, optimizer, train, indices, pad_token_id, accelerator.device, privacy)
                else:
                    batch = to_device(collate(train, indices, pad_token_id, pad_multiple), accelerator.device)
                    with accelerator.autocast():
                        if loss_weights is None:
                            loss = forward(**batch).loss
                        else:
                            loss = weighted_loss(forward, batch, loss_weights)
                    accelerator.backward(loss / settings.gradient_accumulation)
                running_loss += loss.detach()
                running_batches += 1
                state.batch_in_epoch += 1
                state.samples_seen += len(indices)
                at_boundary = state.batch_in_epoch % settings.gradient_accumulation == 0
                if not at_boundary and state.batch_in_epoch < len(batches):
                    continue
                if settings.max_grad_norm and privacy is None:  # DP-SGD clips each example instead
                    accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                if state.step % LOG_EVERY == 0 or state.step == total_steps:
                    lr = scheduler.get_last_lr()[-1]
                    record = {
                        "step": state.step,
                        "epoch": epoch_position(),
                        "lr": lr,
                        "seconds": round(train_seconds_now(), 3),
                    }
                    pending_logs.append((record, running_loss / running_batches))
                    progress.update(task_id, lr=lr)
                    running_loss.zero_()
                    running_batches = 0
                    if len(pending_logs) >= FLUSH_EVERY:
                        flush_logs()
                progress.update(task_id, completed=state.step)
                if isinstance(settings.eval_every, int) and state.step % settings.eval_every == 0:
                    last_eval_step = state.step
                    state.stopped_early = run_evaluation()
                    model.train()
                if state.step % settings.checkpoint_every == 0 and accelerator.is_main_process:
                    state.train_seconds = train_seconds_now()
                    started, eval_seconds_before = time.perf_counter(), state.eval_seconds
                    flush_logs()
                    state.unlogged_loss, state.unlogged_batches = running_loss.item(), running_batches
                    _checkpoint(
                        checkpoint_dir,
                        bare(),
                        optimizer,
                        scheduler,
                        state,
                        best_weights,
                        settings.keep_last,
                    )
                if state.stopped_early or state.step >= total_steps:
                    break
            if state.batch_in_epoch >= len(batches):  # the epoch is complete
                state.epoch += 1
                state.batch_in_epoch = 0
                if privacy is not None:
                    flush_logs()
                    spent = privacy.spent(state.step)
                    state.history.append(
                        {"step": state.step, "epoch": state.epoch, "split": "privacy", "epsilon": spent}
                    )
                    if show_progress and accelerator.is_main_process:
                        progress.console.print(f"epoch {state.epoch}: privacy spent epsilon {spent:.3f}")
                if settings.eval_every == "epoch" and not state.stopped_early:
                    last_eval_step = state.step
                    state.stopped_early = run_evaluation()
                    model.train()
    flush_logs()
    if last_eval_step != state.step:
        run_evaluation()
    state.train_seconds = train_seconds_now()
    if privacy is not None:
        model.remove_hooks()  # evaluation and saving after training need no per-example gradients
    unwrapped = bare()
    if best_weights is not None and state.best_step != state.step:
        load_trainable_state(unwrapped, best_weights)
    best = next(
        (h["metrics"] for h in state.history if h.get("split") == "validation" and h["step"] == state.best_step), None
    )
    return FitResult(
        state=state,
        total_steps=total_steps,
        epochs=epochs,
        best_validation=best,
        peak_memory_mb=peak_memory_mb(accelerator),
    )


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
        return torch.compile(model, dynamic=not fixed_shape)
    from accelerate.utils import compile_regions

    return compile_regions(model, dynamic=not fixed_shape)


def _checkpoint(folder, model, optimizer, scheduler, state, best_weights, keep_last) -> None:
    payload = {
        "model": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "training_state": state,
        "best_weights": best_weights,
    }
    save_checkpoint(folder, state.step, payload, keep_last)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    split: EncodedSplit,
    batch_size: int,
    device: torch.device,
    pad_token_id: int,
    keep_logits: bool = True,
) -> tuple[np.ndarray | list[np.ndarray] | None, float | None]:
    """Outputs for every row in input order, and the mean loss when the split has labels.

    Outputs are one array [rows, ...] for row-level models, or, for models that score every token
    (NER, question answering), a list of one array per row trimmed to its length. The loss is
    averaged over rows, or over labelled tokens when labels are token sequences. `keep_logits=False`
    returns no outputs (a language model's would not fit in memory)."""
    was_training = model.training
    model.eval()
    outputs: list[torch.Tensor] = []
    order: list[np.ndarray] = []
    loss_sum = torch.zeros((), device=device)
    loss_weight = torch.zeros((), device=device)
    pad_multiple = 8 if device.type == "cuda" else 1
    for indices in sorted_batches(split.lengths, batch_size):
        batch = to_device(collate(split, indices, pad_token_id, pad_multiple), device)
        result = model(**batch)
        if result.loss is not None:
            labels = batch.get("labels")
            token_labels = labels is not None and labels.dim() > 1 and not labels.is_floating_point()
            weight = (labels != LABEL_PAD).sum() if token_labels else len(indices)
            loss_sum += result.loss.float() * weight
            loss_weight += weight
        if keep_logits:
            outputs.append(model_scores(result).float())
        order.append(indices)
    model.train(was_training)
    loss = (loss_sum / loss_weight.clamp(min=1)).item() if split.labels is not None else None
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
    """A model output's scores: `logits`, or question answering's start and end logits stacked
    as [..., 2]."""
    if getattr(result, "logits", None) is not None:
        return result.logits
    return torch.stack([result.start_logits, result.end_logits], dim=-1)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Copy a batch to the device without making the host wait (pinned memory on CUDA)."""
    if device.type != "cuda":
        return batch
    return {name: tensor.pin_memory().to(device, non_blocking=True) for name, tensor in batch.items()}


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def peak_memory_mb(accelerator: Accelerator) -> float:
    """GPU: peak allocated during this fit. CPU: the process's peak resident memory (all runs in it)."""
    if accelerator.device.type == "cuda":
        return torch.cuda.max_memory_allocated(accelerator.device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _progress_bar(enabled: bool, console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
        console=console or Console(stderr=True),
    )
