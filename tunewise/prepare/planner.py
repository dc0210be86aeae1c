"""Preparation: from a validated config to a frozen plan, with every problem found before any work.

    the run folder can take the run           (runs.guard)
    read every data file once, split, check   (prepare.data)
    the rules that need the task or the data  (prepare.rules)
    find the model, its hints and processor   (task.model)
    resolve every auto                        (prepare.defaults)
    encode, and the loop's concrete settings  (training only)

Everything found wrong is reported together, as one error. `prepare` serves training; `prepare_check`
serves the data check, which reports unreadable data as findings instead of stopping.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from accelerate import PartialState

from tunewise.config.safety import ADVBENCH_HUB
from tunewise.config.sections import RunConfig
from tunewise.data.augmentation import group_label_weights
from tunewise.errors import ConfigError, TunewiseError
from tunewise.models.registry import read_checkpoint_hints
from tunewise.prepare import defaults
from tunewise.prepare.data import prepare_data
from tunewise.prepare.plan import ModelPlan, Plan, PreparedData, TrainingPlan
from tunewise.prepare.rules import check_task_rules, raise_all
from tunewise.prepare.safety import SafetyPlan, plan_safety, resolve_safety, without_trained_prompts
from tunewise.prepare.screen import screen_problems
from tunewise.runs.guard import check_output_dir, check_run_dir
from tunewise.tasks import Task, make_task, text_generation
from tunewise.tasks.generation import GenerativeRunConfig
from tunewise.training.accounting import plan_privacy
from tunewise.training.batching import balanced_class_weights
from tunewise.training.optim import steps_per_epoch
from tunewise.training.settings import Selection, TrainingSettings
from tunewise.types import EncodedSplit, Purpose, TaskFacts


def prepare(config: RunConfig, overwrite: bool = False, resume: bool = False, withhold_test: bool = False) -> Plan:
    """The plan for training `config` into its output_dir; a TunewiseError listing every problem otherwise.

    `withhold_test`: the test split is read and split off as usual (so validation is the same rows as in
    a plain run) and then left out of the plan, so nothing of the run sees it: the trials of `tunewise
    tune` choose on validation alone, and only the chosen model is scored on test, once."""
    task = make_task(config)
    run_dir = Path(config.output_dir)
    problems: list[TunewiseError] = []
    _collect(problems, check_output_dir, run_dir)
    data = prepare_data(task, config)
    if withhold_test:
        data = without_test(data)
    problems += data.problems
    facts = task.facts()
    if not data.problems:
        problems += check_task_rules(config, facts, data.frames)
    if not (resume and data.problems):  # a file that did not read has no fingerprint to compare
        requested = config.model_dump(mode="json")
        _collect(problems, check_run_dir, run_dir, requested, data.fingerprints, overwrite, resume)
    model = _collect(problems, prepare_model, task, config, _train_rows(data))
    safety = _collect(problems, prepare_safety, config, task, data) if isinstance(config, GenerativeRunConfig) else None
    raise_all(problems)
    assert model is not None
    resolved = task.data.resolve(resolve_config(config, facts, model))
    if safety is not None:
        resolved = resolve_safety(resolved, safety)
    plan = Plan(config, resolved, task, facts, data, model, run_dir, safety=safety)
    return _with_training(plan)


def without_test(data: PreparedData) -> PreparedData:
    frames = {split: frame for split, frame in data.frames.items() if split != "test"}
    leaks = None if data.leaks is None else {split: found for split, found in data.leaks.items() if split != "test"}
    return dataclasses.replace(data, frames=frames, leaks=leaks)


def prepare_safety(config: GenerativeRunConfig, task: Task, data: PreparedData) -> SafetyPlan:
    """The red-team prompts (less those training holds) and the canaries, with the screen's classifier
    checked: every problem at once."""
    problems = screen_problems(config.screen)
    try:
        safety = plan_safety(config, config.safety, ADVBENCH_HUB)
    except TunewiseError as error:
        problems.append(error)
    raise_all(problems)
    if data.members is None:  # the training file did not read: its problem is reported with the others
        return safety
    return without_trained_prompts(safety, [prompt for prompt, _ in text_generation(task).answers(data.members)])


def prepare_check(config: RunConfig) -> Plan:
    """The plan the data check audits: the data as training would read it (problems kept, not raised),
    the model's processor for token lengths, and max_length resolved as training resolves it."""
    task = make_task(config)
    data = prepare_data(task, config)
    model = prepare_model(task, config, _train_rows(data))
    facts = task.facts()
    resolved = task.data.resolve(resolve_config(config, facts, model))
    return Plan(config, resolved, task, facts, data, model, Path(config.output_dir))


def prepare_model(task: Task, config: RunConfig, train_rows: int) -> ModelPlan:
    """The model source, what its checkpoint declares, its processor, and the input settings they decide."""
    source = task.model.source(config.model)
    hints = read_checkpoint_hints(source)
    processor = task.model.processor(source)
    return ModelPlan(
        source=source,
        hints=hints,
        processor=processor,
        max_length=defaults.max_length(config.data.max_length, hints, processor),
        pooling=defaults.pooling(config.strategy.pooling, hints),
        method=defaults.strategy(
            config.strategy.method, source.family, train_rows, task.facts().capabilities.generation
        ),
    )


def resolve_config(config: RunConfig, facts: TaskFacts, model: ModelPlan, **train: Any) -> RunConfig:
    """The config with every auto replaced by the value the plan uses (what config.yaml records)."""
    stopping = config.train.early_stopping
    if stopping is not None and stopping.metric == "auto":
        stopping = stopping.model_copy(update={"metric": facts.default_metric})
    explain = config.explain.model_copy(
        update={
            "enabled": defaults.explanations(config.explain.enabled, facts.capabilities),
            "method": defaults.explain_method(config.explain.method, facts.capabilities),
        }
    )
    return config.model_copy(
        update={
            "data": config.data.model_copy(update={"max_length": model.max_length}),
            "strategy": config.strategy.model_copy(update={"pooling": model.pooling, "method": model.method}),
            "train": config.train.model_copy(update={"early_stopping": stopping, **train}),
            "explain": explain,
        }
    )


def _with_training(plan: Plan) -> Plan:
    """Encode the splits (token ids cached on disk), then the settings that depend on the data and hardware."""
    config, data, model = plan.config, plan.data, plan.model
    assert data.training_rows is not None
    state = process_state()
    device_type, processes = state.device.type, state.num_processes
    cache = config.data.token_cache
    processor, max_length = model.processor, model.max_length
    started = time.perf_counter()
    purposes: dict[str, Purpose] = {"validation": "validate", "test": "evaluate"}
    encoded = {
        split: plan.task.data.encode(frame, processor, max_length, purposes[split], cache)
        for split, frame in data.frames.items()
        if split != "train"
    }
    encoded["train"] = plan.task.data.encode(_with_canaries(plan), processor, max_length, "train", cache)
    encode_seconds = time.perf_counter() - started
    settings = training_settings(plan, encoded["train"], device_type, processes)
    resolved = resolve_config(
        plan.config,
        plan.facts,
        model,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        epochs=settings.epochs,
        compile=settings.compile,
        precision={"no": "fp32"}.get(settings.mixed_precision, settings.mixed_precision),
    )
    if settings.privacy is not None and resolved.privacy.dp is not None:
        dp = resolved.privacy.dp.model_copy(update={"delta": settings.privacy.delta})
        resolved = resolved.model_copy(update={"privacy": resolved.privacy.model_copy(update={"dp": dp})})
    training = TrainingPlan(
        {name: encoded[name] for name in data.frames}, settings, device_type, processes, round(encode_seconds, 2)
    )
    return Plan(plan.requested, resolved, plan.task, plan.facts, data, model, plan.run_dir, training, plan.safety)


def _with_canaries(plan: Plan) -> pd.DataFrame:
    """The rows training learns from, with privacy.canaries' secrets inserted as rows of the task's own form
    (never into the user's files, nor into the frames the data check and the privacy audit read)."""
    rows = plan.data.training_rows
    assert rows is not None
    canaries = plan.safety.canaries if plan.safety is not None else None
    if canaries is None:
        return rows
    inserted = text_generation(plan.task).examples(canaries.training_pairs())
    return pd.concat([rows, inserted], ignore_index=True)


def examples_per_row(split: EncodedSplit) -> float:
    """How many examples a row holds on average: 1, or more for packed rows, whose position ids restart
    at each example. The defaults count a batch's examples, not its rows."""
    positions = split.sequences.get("position_ids")
    if split.attention_mask or not positions:
        return 1.0
    return max(sum(int(np.count_nonzero(np.asarray(row) == 0)) for row in positions) / len(positions), 1.0)


def refuse_private_processes(processes: int) -> None:
    """DP-SGD trains in one process. Its guarantee rests on each batch being a Poisson sample of the whole
    training set with noise added once to the batch's summed clipped gradients; split across processes,
    each would have to draw its rows from one shared sample and noise only its share (Opacus's
    DPDDP does the latter, not the former), and the accountant would have to be told. Until that is
    built and tested, several processes are refused rather than giving a budget that may not hold."""
    if processes > 1:
        raise ConfigError(
            f"privacy.dp trains in one process, and this run has {processes}: run `tunewise train` without "
            "--nproc (or torchrun/accelerate launch with one process), or remove privacy.dp."
        )


def training_settings(plan: Plan, train: EncodedSplit, device_type: str, processes: int) -> TrainingSettings:
    config, family = plan.config, plan.model.source.family
    settings, dp = config.train, config.privacy.dp
    per_row = examples_per_row(train)
    batch = defaults.batch_size(settings.batch_size, device_type, train.lengths, processes, per_row)
    per_epoch = steps_per_epoch(len(train), batch, settings.gradient_accumulation)
    epochs = defaults.epochs(settings.epochs, per_epoch)
    total = max(math.ceil(epochs * per_epoch), 1)
    privacy = None
    if dp is not None:
        refuse_private_processes(processes)
        delta = defaults.dp_delta(dp.delta, len(train))
        privacy = plan_privacy(
            dp.epsilon, delta, dp.max_grad_norm, dp.accountant, dp.max_physical_batch_size, len(train), batch, total
        )
    stopping = settings.early_stopping
    class_weights, sample_weights = balancing_weights(plan, train)
    return TrainingSettings(
        batch_size=batch,
        learning_rate=defaults.learning_rate(
            settings.learning_rate, plan.model.method, family, round(batch * per_row) * settings.gradient_accumulation
        ),
        epochs=epochs,
        steps_per_epoch=per_epoch,
        total_steps=total,
        gradient_accumulation=settings.gradient_accumulation,
        weight_decay=settings.weight_decay,
        warmup_ratio=settings.warmup_ratio,
        scheduler=settings.scheduler,
        max_grad_norm=None if privacy is not None else settings.max_grad_norm,
        layerwise_lr_decay=config.strategy.layerwise_lr_decay,
        mixed_precision=defaults.mixed_precision(
            settings.precision, private=privacy is not None, fp16_overflows=plan.model.hints.fp16_overflows
        ),
        seed=settings.seed,
        eval_every=None if settings.eval_every == "epoch" else int(settings.eval_every),
        checkpoint_every=settings.checkpoint_every,
        keep_last=settings.keep_last,
        compile=privacy is None
        and defaults.compile_model(settings.compile, device_type, processes, total, train.fixed_shape),
        selection=None if stopping is None else Selection(stopping.metric, stopping.patience, stopping.min_delta),
        privacy=privacy,
        class_weights=class_weights,
        sample_weights=sample_weights,
    )


def balancing_weights(plan: Plan, train: EncodedSplit) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(class weights for the loss, per-row sampling weights) from data.balance and fairness.reweight_groups."""
    config, rows = plan.config, plan.data.training_rows
    class_weights = sample_weights = None
    if config.data.balance != "none":
        labels = np.asarray(train.labels)
        per_class = balanced_class_weights(labels, len(plan.facts.label_names))
        if config.data.balance == "reweight":
            class_weights = per_class
        else:
            sample_weights = per_class[labels]
    if config.fairness.reweight_groups and rows is not None:
        column = config.fairness.group_column
        weights = group_label_weights(rows[column], rows[config.data.label_column])
        sample_weights = weights if sample_weights is None else sample_weights * weights
    return class_weights, sample_weights


def _train_rows(data: PreparedData) -> int:
    return len(data.training_rows) if data.training_rows is not None else 0


def _collect(problems: list[TunewiseError], check: Any, *args: Any) -> Any:
    """Run one check; a TunewiseError joins the problems instead of stopping the others."""
    try:
        return check(*args)
    except TunewiseError as error:
        problems.append(error)
        return None


def process_state() -> PartialState:
    """This process among those the launcher started (one when there is no launcher). Accelerate joins
    the processes on CPU (gloo) only when told the run is on CPU, so the device is decided here, once."""
    import torch

    return PartialState(cpu=not torch.cuda.is_available())


__all__ = ["PreparedData", "prepare", "prepare_check", "prepare_model", "process_state"]
