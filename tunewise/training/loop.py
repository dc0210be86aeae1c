"""The training loop: one function, readable top to bottom.

    for each epoch:
        for each batch of the epoch (skipping those a resumed run has already seen):
            forward and backward (scaled by gradient accumulation)
            every `gradient_accumulation` batches: clip, optimiser step, schedule step
            on schedule: log, evaluate (best model, early stopping), checkpoint
            a SIGTERM or SIGINT since the last step: checkpoint and stop (training.preemption)
    restore the best model

What a batch is and how it becomes gradients (ordinary or DP-SGD) is the step strategy, chosen
once (`training.steps.make_steps`); the loop itself never asks. On a GPU the host must never wait
for the device inside a step, or the device idles while the host prepares the next batch. So
batches go up from pinned memory without blocking, and loss values stay on the device: each log
line keeps its loss as a device tensor, and the host reads them all at once (one synchronisation)
every FLUSH_EVERY log lines, before an evaluation or a checkpoint, and at the end. Accelerate
handles device placement, mixed precision and multi-GPU.
"""

from __future__ import annotations

import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from tunewise.errors import Stopped, TunewiseError
from tunewise.inference import shared_across_processes
from tunewise.training.checkpointing import (
    Found,
    checkpoint_identity,
    load_trainable_state,
    newest_readable,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    set_aside,
    trainable_state,
)
from tunewise.training.optim import batches_per_epoch, build_optimizer, build_scheduler
from tunewise.training.preemption import StopSignals
from tunewise.training.settings import TrainingSettings
from tunewise.training.steps import Steps, make_steps
from tunewise.training.stopping import EarlyStopping
from tunewise.types import EncodedSplit

LOG_EVERY = 10  # optimizer steps between log lines
FLUSH_EVERY = 10  # log lines whose losses are read from the device together

# An evaluation of a model on validation: its metrics (with "loss") and the outputs behind them. fit keeps
# the outputs of the evaluation whose weights it leaves in the model, so the caller need not compute them again.
Evaluate = Callable[[nn.Module, EncodedSplit], tuple[dict[str, Any], Any]]
# Told each validation's (step, metrics) as it is recorded: how `tunewise tune` reports to its pruner. It may
# raise to end the run there (a pruned trial); the exception leaves fit as it came.
ValidationObserver = Callable[[int, dict[str, Any]], None]


@dataclass
class TrainingState:
    """Everything that changes during training and must survive a resume."""

    stopping: EarlyStopping
    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    train_seconds: float = 0.0  # optimisation only: evaluation time is counted apart
    eval_seconds: float = 0.0
    samples_seen: int = 0
    unlogged_loss: float = 0.0  # loss summed since the last log line, so resumed logs match
    unlogged_batches: int = 0

    @property
    def best_step(self) -> int | None:
        return self.stopping.best_step


@dataclass
class FitResult:
    state: TrainingState
    total_steps: int
    epochs: float
    best_validation: dict | None
    peak_memory_mb: float
    # what the evaluate callback returned beside the metrics for the weights the model ends with; None when
    # that evaluation ran before a resume (this process never saw it)
    best_outputs: Any = None
    # resumed from a checkpoint: its step, whether the run continued exactly, and why not
    resumed: dict[str, Any] | None = None


def fit(
    model: nn.Module,
    train: EncodedSplit,
    validation: EncodedSplit,
    settings: TrainingSettings,
    evaluate: Evaluate,
    accelerator: Accelerator,
    checkpoint_dir: Path,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    on_validation: ValidationObserver | None = None,
    fingerprint: str | None = None,
) -> FitResult:
    """Train `model` in place and leave the best weights (by the selection metric) in it.

    `fingerprint` names the run's config and data (run.json's): its checkpoints carry it, and a resume
    skips a checkpoint that another run wrote. A SIGTERM or SIGINT while it trains ends it with `Stopped`
    once a checkpoint of the step it was in is written (training.preemption)."""
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, settings)
    steps = make_steps(model, optimizer, train, settings, accelerator)
    epoch_length = batches_per_epoch(len(train), settings.batch_size)
    shown = show_progress and accelerator.is_main_process  # progress bar and validation lines: one process prints
    progress = _progress_bar(shown, console)
    run = _Run(steps, scheduler, settings, evaluate, validation, epoch_length, accelerator, checkpoint_dir, progress)
    run.on_validation = on_validation
    run.identity = checkpoint_identity(
        fingerprint,
        {"batch_size": settings.batch_size, "gradient_accumulation": settings.gradient_accumulation,
         "steps_per_epoch": settings.steps_per_epoch, "total_steps": settings.total_steps},
        accelerator.num_processes,
        accelerator.device.type,
        settings.mixed_precision,
    )  # fmt: skip
    if resume:
        run.restore_checkpoint()
    state, total = run.state, settings.total_steps

    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    steps.train()
    signals = StopSignals(accelerator.num_processes, speak=accelerator.is_main_process)
    with run.progress, signals:
        while state.step < total and not state.stopped_early:
            batches = steps.epoch_batches(state.epoch)
            for indices in batches[state.batch_in_epoch :]:
                position = state.batch_in_epoch + 1
                at_boundary = position % settings.gradient_accumulation == 0 or position == len(batches)
                run.add_loss(steps.backward(indices, sync=at_boundary))
                state.batch_in_epoch = position
                state.samples_seen += len(indices)
                if not at_boundary:
                    continue
                steps.clip()
                steps.optimizer.step()
                scheduler.step()
                steps.zero_grad()
                state.step += 1
                if state.step % LOG_EVERY == 0 or state.step == total:
                    run.log_step()
                run.show_step()
                if settings.eval_every is not None and state.step % settings.eval_every == 0:
                    state.stopped_early = run.evaluate()
                if state.step % settings.checkpoint_every == 0:
                    run.checkpoint()
                if (number := signals.agreed()) is not None:
                    run.stop(number)
                if state.stopped_early or state.step >= total:
                    break
            if state.batch_in_epoch >= len(batches):  # the epoch is complete
                state.epoch += 1
                state.batch_in_epoch = 0
                run.end_epoch()
                if settings.eval_every is None and not state.stopped_early:
                    state.stopped_early = run.evaluate()
        if (number := signals.agreed()) is not None:  # noted during the last step's evaluation
            run.stop(number)
    run.flush_logs()
    if run.last_evaluation != state.step:
        run.evaluate()
    state.train_seconds = run.train_seconds()
    steps.finish()
    bare = steps.bare()
    if run.best_weights is not None and state.best_step != state.step:
        load_trainable_state(bare, run.best_weights)
    best = next(
        (h["metrics"] for h in state.history if h.get("split") == "validation" and h["step"] == state.best_step), None
    )
    return FitResult(state, total, settings.epochs, best, peak_memory_mb(accelerator), run.best_outputs, run.resumed)


class _Run:
    """What the loop keeps beside the model: the state, the losses not yet read, the best weights, the clock."""

    def __init__(
        self,
        steps: Steps,
        scheduler: Any,
        settings: TrainingSettings,
        evaluate: Evaluate,
        validation: EncodedSplit,
        batches_per_epoch: int,
        accelerator: Accelerator,
        checkpoint_dir: Path,
        progress: Progress,
    ):
        self.steps, self.scheduler, self.settings = steps, scheduler, settings
        self.score, self.validation, self.batches_per_epoch = evaluate, validation, batches_per_epoch
        self.accelerator, self.checkpoint_dir = accelerator, checkpoint_dir
        self.processes = accelerator.num_processes
        self.console, self.speaks = progress.console, accelerator.is_main_process  # warnings: always, from one
        self.identity: dict[str, Any] = {}  # what this run's checkpoints say about it (checkpoint_identity)
        self.resumed: dict[str, Any] | None = None
        self.checkpointed = -1  # the step of the last checkpoint written
        self.state = TrainingState(stopping=EarlyStopping(settings.selection))
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.best_outputs: Any = None  # the outputs of the evaluation of the weights the model will end with
        self.pending_logs: list[tuple[dict, torch.Tensor]] = []  # log lines whose loss is still on the device
        self.progress, self.shown = progress, not progress.disable
        self.running_loss: torch.Tensor
        self.running_batches: int
        self.task_id = progress.add_task("training", total=settings.total_steps, loss=float("nan"), lr=0.0)
        self._reset_losses()
        self.last_evaluation = -1
        self.on_validation: ValidationObserver | None = None
        self._restart_clock()

    # ----- resume --------------------------------------------------------------------------------
    def restore_checkpoint(self) -> None:
        """Continue from the newest checkpoint that is whole and fits this run; newer ones that are not are
        set aside with a warning that names the file and why. None yet: a note, and training starts at step 0."""
        found = newest_readable(self.checkpoint_dir, self.identity, self.steps.bare(), self.steps.optimizer)
        if found.payload is None:
            if found.skipped:
                raise no_usable_checkpoint(self.checkpoint_dir, found)
            self.say(
                f"[yellow]resume:[/] {self.checkpoint_dir} holds no checkpoint yet (the run stopped before its first, "
                f"due at step {self.settings.checkpoint_every}), so training starts from step 0"
            )
            return
        self.accelerator.wait_for_everyone()  # every process has chosen before the first one moves anything
        for skipped in found.skipped:
            kept = set_aside(skipped.folder) if self.speaks else skipped.folder
            self.say(
                f"[yellow]resume:[/] skipped {skipped.file}: {skipped.why}. It is kept as {kept} (delete it when "
                "you no longer need it)."
            )
        saved = found.payload
        load_trainable_state(self.steps.bare(), saved["model"])
        self.steps.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        restored = restore_rng_state(saved["rng"], self.accelerator.process_index, self.processes)
        self.state = saved["training_state"]
        self.best_weights = saved.get("best_weights")
        self._reset_losses()
        validations = [h["step"] for h in self.state.history if h.get("split") == "validation"]
        self.last_evaluation = max(validations, default=-1)
        self.checkpointed = self.state.step
        self.progress.update(self.task_id, completed=self.state.step)
        written = {**(saved.get("identity") or {}), **found.manifest}
        differences = [*restored.notes, *hardware_notes(written, self.identity)]
        for note in found.notes:
            self.say(f"[yellow]resume:[/] {note}")
        if differences:
            self.say(
                f"[yellow]resume:[/] continuing from step {self.state.step} ({found.folder}), but not exactly as an "
                f"uninterrupted run would: {'; '.join(differences)}"
            )
        self.resumed = {"step": self.state.step, "exact": not differences, "notes": differences}
        self._restart_clock()

    def checkpoint(self) -> None:
        """Every process takes part (its RNG state and its part of the unlogged loss); the first one writes."""
        state = self.state
        state.train_seconds = self.train_seconds()
        self._restart_clock()
        self.flush_logs()
        state.unlogged_loss, state.unlogged_batches = self._summed(self.running_loss).item(), self.running_batches
        states = gather_object([rng_state()]) if self.processes > 1 else [rng_state()]
        self.checkpointed = state.step
        if not self.accelerator.is_main_process:
            return
        payload = {
            "model": trainable_state(self.steps.bare()),
            "optimizer": self.steps.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": states,  # one per process, in rank order
            "training_state": state,
            "best_weights": self.best_weights,
            "identity": self.identity,
        }
        save_checkpoint(self.checkpoint_dir, state.step, payload, self.settings.keep_last)

    def stop(self, number: int) -> None:
        """A signal asked to stop: checkpoint this step (unless just done) and raise `Stopped`."""
        if self.checkpointed != self.state.step:
            self.checkpoint()
        step, name = self.state.step, signal.Signals(number).name
        where = self.checkpoint_dir / f"checkpoint-{step:08d}"
        raise Stopped(
            f"{name}: training stopped at step {step} of {self.settings.total_steps}; {where} holds it. Continue "
            f"with: {Stopped.RESUME_HINT}",
            number,
            step,
        )

    def say(self, message: str) -> None:
        if self.speaks:
            self.console.print(message, highlight=False)

    # ----- losses and log lines ------------------------------------------------------------------
    def add_loss(self, loss: torch.Tensor) -> None:
        self.running_loss += loss
        self.running_batches += 1

    def log_step(self) -> None:
        lr = self.scheduler.get_last_lr()[-1]
        record = {
            "step": self.state.step,
            "epoch": self.epoch_position(),
            "lr": lr,
            "seconds": round(self.train_seconds(), 3),
        }
        self.pending_logs.append((record, self.running_loss / self.running_batches))
        self.progress.update(self.task_id, lr=lr)
        self.running_loss = torch.zeros((), device=self.accelerator.device)
        self.running_batches = 0
        if len(self.pending_logs) >= FLUSH_EVERY:
            self.flush_logs()

    def flush_logs(self) -> None:
        """Read the pending losses in one device synchronisation and append their log lines."""
        if not self.pending_logs:
            return
        losses = self._summed(torch.stack([loss for _, loss in self.pending_logs])).tolist()
        for (record, _), loss in zip(self.pending_logs, losses, strict=True):
            self.state.history.append({**record, "loss": loss})
            logged = {"train/loss": loss, "train/learning_rate": record["lr"], "train/epoch": record["epoch"]}
            self.accelerator.log(logged, step=record["step"])  # to the run's trackers, when it has any
        self.progress.update(self.task_id, loss=losses[-1])
        self.pending_logs.clear()

    def _summed(self, losses: torch.Tensor) -> torch.Tensor:
        """Each process holds its part of every batch's mean loss: their sum is the batch's."""
        return self.accelerator.reduce(losses, reduction="sum") if self.processes > 1 else losses

    def show_step(self) -> None:
        self.progress.update(self.task_id, completed=self.state.step)

    def end_epoch(self) -> None:
        record = self.steps.end_epoch(self.state.step)
        if record is None:
            return
        self.flush_logs()
        self.state.history.append({"step": self.state.step, "epoch": self.state.epoch, "split": "privacy", **record})
        if self.shown:
            self.progress.console.print(f"epoch {self.state.epoch}: privacy spent epsilon {record['epsilon']:.3f}")

    # ----- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> bool:
        """Evaluate, record, keep the best weights; True when early stopping says stop."""
        state = self.state
        self.flush_logs()
        started = time.perf_counter()
        with shared_across_processes(self.accelerator.process_index, self.processes):
            metrics, outputs = self.score(self.steps.model, self.validation)
        state.eval_seconds += time.perf_counter() - started
        self.last_evaluation = state.step
        selection = self.settings.selection
        if self.shown:
            names = dict.fromkeys([selection.metric if selection else "loss", "loss"])
            shown = ", ".join(f"{name} {metrics[name]:.4f}" for name in names)
            self.progress.console.print(f"step {state.step} (epoch {self.epoch_position():.2f}) validation: {shown}")
        state.history.append(
            {"step": state.step, "epoch": self.epoch_position(), "split": "validation", "metrics": scalars(metrics)}
        )
        self.accelerator.log({f"validation/{name}": value for name, value in scalars(metrics).items()}, step=state.step)
        if self.on_validation is not None:
            self.on_validation(state.step, metrics)
        verdict = state.stopping.update(state.step, metrics)
        if verdict.improved:
            self.best_weights = trainable_state(self.steps.bare())
        if verdict.improved or selection is None:
            self.best_outputs = outputs
        self.steps.train()
        return verdict.stop

    # ----- time ----------------------------------------------------------------------------------
    def epoch_position(self) -> float:
        return round(self.state.epoch + self.state.batch_in_epoch / self.batches_per_epoch, 4)

    def train_seconds(self) -> float:
        """Optimisation time so far: wall time since the clock started minus the evaluations run since then."""
        state = self.state
        return state.train_seconds + time.perf_counter() - self.started - (state.eval_seconds - self.eval_before)

    def _restart_clock(self) -> None:
        self.started, self.eval_before = time.perf_counter(), self.state.eval_seconds

    def _reset_losses(self) -> None:
        unlogged = self.state.unlogged_loss if self.accelerator.is_main_process else 0.0  # summed across processes
        self.running_loss = torch.full((), unlogged, device=self.accelerator.device)
        self.running_batches = self.state.unlogged_batches


def no_usable_checkpoint(folder: Path, found: Found) -> TunewiseError:
    reasons = "; ".join(f"{skipped.file}: {skipped.why}" for skipped in found.skipped)
    return TunewiseError(
        f"--resume: none of the {len(found.skipped)} checkpoint(s) in {folder} can be used ({reasons}). Nothing was "
        f"deleted. Start the run again with `tunewise train CONFIG --overwrite` (it replaces what tunewise wrote in "
        f"{folder.parent}, these checkpoints too), or put a good checkpoint folder back into {folder}."
    )


def hardware_notes(written: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """How the hardware a checkpoint was written on differs from this run's, in ways that change the numbers."""
    notes = []
    for key, what in (("device", "device"), ("mixed_precision", "mixed precision")):
        if written.get(key) is not None and written.get(key) != here.get(key):
            notes.append(f"it was written with {what} {written[key]} and this run has {here[key]}")
    return notes


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
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
