"""The Python API: `train(config)` runs the whole job; `load(run_dir)` gives back a usable model.

The stages in `train` follow the job as a user sees it, and each lives in its own package:
config -> data -> model + strategy -> encode -> training loop -> evaluation -> run folder.
Every check that can fail does so before the first training step.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console
from transformers.utils import logging as transformers_logging

from tunewise.config.loading import dump_config, load_config
from tunewise.config.schema import RunConfig
from tunewise.data.readers import file_fingerprint
from tunewise.data.splits import split_train_validation
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.evaluation.metrics import format_metrics_table
from tunewise.evaluation.privacy import audit_privacy
from tunewise.models.pooled_classifier import register_auto_class
from tunewise.models.registry import read_checkpoint_hints
from tunewise.models.strategies import apply_strategy, count_parameters
from tunewise.reporting.plots import plot_confusion_matrix, plot_loss_curve
from tunewise.reporting.report import rebuild as rebuild_report
from tunewise.reporting.run_folder import AUDIT_FOLDER, RUN_FILE, check_run_dir, start_run_dir
from tunewise.reporting.run_record import git_revision, hardware, package_versions, write_json
from tunewise.serving.predictor import FineTunedModel, csv_ready, load, user_columns
from tunewise.tasks import Task, make_task
from tunewise.training.batching import balanced_class_weights
from tunewise.training.loop import FitResult, fit, predict_logits
from tunewise.training.optim import (
    resolve_batch_size,
    resolve_compile,
    resolve_epochs,
    resolve_learning_rate,
    steps_per_epoch,
)
from tunewise.training.privacy import check_private_training, plan_privacy

MAX_AUTO_LENGTH = 512
EVAL_BATCH_SIZE = 128


@dataclass
class Run:
    """A finished training run: its folder, metrics and the fine-tuned model."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, dict]
    history: list[dict]
    model: FineTunedModel

    def predict(self, texts: Any) -> list[dict[str, Any]]:
        return self.model.predict(texts)


def train(
    config: str | Path | dict | RunConfig,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
) -> Run:
    """Fine-tune as the config says and write the run folder. Returns the `Run`."""
    started = time.perf_counter()
    console = console or Console(stderr=True)
    transformers_logging.set_verbosity_error()
    requested = load_config(config, overrides)
    config = requested.model_copy(deep=True)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    run_dir = Path(config.output_dir)

    # --- data: read, validate, split (all errors before any model work) ---
    task = make_task(config)
    frames = read_splits(task, config)
    for split in ("validation", "test"):
        if split in frames:
            task.check_split(frames[split], split, getattr(config.data, split) or f"{config.data.train} (held out)")
    check_selection_metric(task, config)
    check_balance(task, config)
    check_private_training(config, task.name, task.problem_type)
    fairness_split = check_fairness(task, config, frames)
    audit = check_data(config, console) if config.audit.before_training else None
    if config.data.dedupe:
        frames["train"] = drop_leaked_rows(frames, task, config, console)
    if config.fairness.augment:
        frames["train"] = augment_training_rows(frames["train"], config, console)
    data_sha256 = {split: file_fingerprint(path) for split, path in data_sources(config).items()}
    check_run_dir(run_dir, requested.model_dump(mode="json"), data_sha256, overwrite=overwrite, resume=resume)

    # --- model and strategy ---
    source = task.resolve_source(config.model)
    hints = read_checkpoint_hints(source)
    tokenizer = task.load_tokenizer(source)
    resolve_auto_settings(config, hints, tokenizer)
    accelerator = Accelerator(mixed_precision=mixed_precision(config), cpu=not torch.cuda.is_available())

    # --- encode (token ids cached on disk), then settings that depend on the data and hardware ---
    encode_started = time.perf_counter()
    max_length = int(config.data.max_length)
    encoded = {
        split: task.encode(frame, tokenizer, max_length, use_cache=config.data.token_cache, training=split == "train")
        for split, frame in frames.items()
    }
    encode_seconds = time.perf_counter() - encode_started
    device_type = accelerator.device.type
    config.train.batch_size = resolve_batch_size(
        config.train, device_type, encoded["train"].lengths, accelerator.num_processes
    )
    config.train.learning_rate = resolve_learning_rate(config.train, config.strategy)
    steps = steps_per_epoch(len(encoded["train"]), config.train, accelerator.num_processes)
    config.train.epochs = resolve_epochs(config.train, steps)
    config.train.compile = config.privacy.dp is None and resolve_compile(
        config.train, device_type, accelerator.num_processes, steps, encoded["train"].fixed_shape
    )
    privacy = None
    if config.privacy.dp is not None:
        total_steps = max(math.ceil(config.train.epochs * steps), 1)  # as the training loop counts them
        privacy = plan_privacy(config.privacy.dp, len(encoded["train"]), config.train.batch_size, total_steps)
        console.print(
            f"DP-SGD: epsilon {privacy.epsilon:g}, delta {privacy.delta:g}, noise multiplier "
            f"{privacy.noise_multiplier:.3f}, sample rate {privacy.sample_rate:.4f}, {privacy.planned_steps} steps "
            f"({privacy.accountant} accountant)"
        )
    set_seed(config.train.seed)
    model = task.build_model(source, hints, config.strategy.pooling)
    model = apply_strategy(model, config.strategy)
    trainable, total = count_parameters(model)

    writer = accelerator.is_main_process  # with several processes, one writes the run folder
    if writer:
        start_run_dir(run_dir, overwrite=overwrite)
        (run_dir / "config.yaml").write_text(dump_config(config), encoding="utf-8")
        if audit is not None:
            save_audit(audit, config, run_dir / AUDIT_FOLDER)
    record = {
        "requested_config": requested.model_dump(mode="json"),
        "status": "training",
        "problem_type": task.problem_type,
        "seed": config.train.seed,
        "learning_rate": config.train.learning_rate,
        "batch_size": config.train.batch_size,
        "data_sha256": data_sha256,
        "rows": {split: len(frame) for split, frame in frames.items()},
        "model_source": source.location,
        "parameters": {"trainable": trainable, "total": total},
        "versions": package_versions(),
        "git_revision": git_revision(Path.cwd()),
        "hardware": hardware(),
    }
    if writer:
        write_json(run_dir / RUN_FILE, record)

    # --- train ---
    pad_token_id = getattr(tokenizer, "pad_token_id", None) or 0
    console.print(
        f"[bold]tunewise[/] {task.name} ({task.problem_type}"
        f"{f', {len(task.label_names)} labels' if task.label_names else ''}) on {config.model}: "
        f"{config.strategy.method}, {trainable:,} of {total:,} parameters trainable, "
        f"batch {config.train.batch_size}, lr {config.train.learning_rate:.2e}, "
        f"{len(encoded['train']):,} training rows, device {accelerator.device}"
    )

    def evaluate(model_to_score, split) -> dict[str, Any]:
        logits, loss = predict_logits(
            model_to_score, split, EVAL_BATCH_SIZE, accelerator.device, pad_token_id, task.keeps_logits
        )
        return {**task.compute_metrics(logits, split, loss), "loss": loss}

    class_weights, sample_weights = training_weights(task, config, encoded["train"], frames["train"])
    result = fit(
        model,
        encoded["train"],
        encoded["validation"],
        config,
        evaluate,
        accelerator,
        run_dir,
        pad_token_id,
        resume=resume,
        show_progress=show_progress,
        console=console,
        class_weights=class_weights,
        sample_weights=sample_weights,
        privacy=privacy,
    )
    model = accelerator.unwrap_model(model)

    # --- evaluate the best model, write the run folder ---
    metrics, predictions = final_evaluation(task, model, encoded, frames, accelerator, pad_token_id)
    if not writer:
        return Run(run_dir, config, metrics, result.state.history, FineTunedModel(model, tokenizer, task, config))
    model = save_model(model, task, tokenizer, run_dir)
    write_outputs(run_dir, metrics, predictions, result, task)
    if fairness_split is not None:
        fine_tuned = FineTunedModel(model, tokenizer, task, config)
        report = measure_fairness(fine_tuned, frames, fairness_split, config)
        write_json(run_dir / "fairness.json", report)
        console.print(fairness_summary(report))
    record.update(
        status="finished",
        metrics=metrics,
        durations_seconds={
            "total": round(time.perf_counter() - started, 2),
            "training": round(result.state.train_seconds, 2),
            "validation_during_training": round(result.state.eval_seconds, 2),
            "encoding": round(encode_seconds, 2),
        },
        steps=result.state.step,
        epochs=result.epochs,
        best_step=result.state.best_step,
        stopped_early=result.state.stopped_early,
        train_samples_per_second=round(result.state.samples_seen / max(result.state.train_seconds, 1e-9), 2),
        peak_memory_mb=round(result.peak_memory_mb, 1),
    )
    if privacy is not None:
        record["privacy"] = privacy.record(result.state.step)
    record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(run_dir / RUN_FILE, record)
    if task.name == "text-classification":
        try:
            console.print(privacy_summary(audit_privacy(run_dir, seed=config.train.seed)))
        except TunewiseError as error:  # the model is trained and saved: say why, never lose the run
            console.print(f"[yellow]privacy audit skipped:[/] {error}")
    rebuild_report(run_dir)
    console.print(format_metrics_table(metrics, title=f"{run_dir} - best step {result.state.best_step}"))
    fine_tuned = FineTunedModel(model, tokenizer, task, config)
    return Run(run_dir=run_dir, config=config, metrics=metrics, history=result.state.history, model=fine_tuned)


def read_splits(task: Task, config: RunConfig) -> dict[str, pd.DataFrame]:
    """Read every data file, learn the label space from train, and hold out validation if none is given."""
    frames = {"train": task.read_split(config.data.train, "train")}
    if config.data.validation:
        frames["validation"] = task.read_split(config.data.validation, "validation")
    if config.data.test:
        frames["test"] = task.read_split(config.data.test, "test")
    task.fit_labels(frames["train"])
    if "validation" not in frames:
        frames["train"], frames["validation"] = split_train_validation(
            frames["train"],
            config.data.label_column,
            config.data.validation_ratio,
            config.train.seed,
            stratify=task.stratifies(),
        )
    return frames


def data_sources(config: RunConfig) -> dict[str, str]:
    return {split: path for split in ("train", "validation", "test") if (path := getattr(config.data, split))}


def check_selection_metric(task: Task, config: RunConfig) -> None:
    """Resolve `auto` and refuse a metric this task does not report."""
    stopping = config.train.early_stopping
    if stopping is None:
        return
    if stopping.metric == "auto":
        stopping.metric = task.default_metric()
    available = task.metric_names()
    if stopping.metric not in available:
        raise ConfigError(
            f"train.early_stopping.metric {stopping.metric!r} is not reported for {task.name} "
            f"({task.problem_type}). Choose one of: {', '.join(available)}."
        )


def check_balance(task: Task, config: RunConfig) -> None:
    if config.data.balance != "none" and task.problem_type != "single_label":
        raise ConfigError(
            f"data.balance {config.data.balance} balances the classes of single-label classification; this data is "
            f"{task.problem_type}. Set data.balance: none."
        )


def check_fairness(task: Task, config: RunConfig, frames: dict[str, pd.DataFrame]) -> str | None:
    """The split fairness is measured on (test, else validation), or None when it does not apply;
    a group column the data lacks is an error now, not after training."""
    fairness = config.fairness
    mitigations = fairness.group_column or fairness.augment or fairness.reweight_groups or fairness.threshold_optimizer
    applies = task.name == "text-classification" and task.problem_type == "single_label"
    applies = applies and not config.data.text_pair_column
    if not applies:
        if mitigations:
            raise ConfigError(
                "fairness settings (group_column, augment, reweight_groups, threshold_optimizer) apply to "
                "single-label classification of one text column; remove them for this task."
            )
        return None
    if not fairness.enabled:
        return None
    if fairness.positive_label is not None and fairness.positive_label not in task.label_names:
        raise ConfigError(
            f"fairness.positive_label {fairness.positive_label!r} is not a label of this data; choose one of: "
            f"{', '.join(task.label_names)}."
        )
    split = "test" if "test" in frames else "validation"
    column = fairness.group_column
    needed = {split: column is not None, "train": fairness.reweight_groups, "validation": fairness.threshold_optimizer}
    if fairness.threshold_optimizer and "test" not in frames:
        raise ConfigError("fairness.threshold_optimizer fits on validation and is judged on test: add data.test.")
    if (fairness.reweight_groups or fairness.threshold_optimizer) and column is None:
        raise ConfigError("fairness.reweight_groups and threshold_optimizer need fairness.group_column.")
    for name, required in needed.items():
        if required and column not in frames[name].columns:
            source = getattr(config.data, name) or f"{config.data.train} (held out)"
            raise DataError(
                f"{source}: fairness.group_column {column!r} is not a column of the {name} data. Add it "
                f"(one group per row, e.g. gender) or correct the name; columns: "
                f"{', '.join(c for c in frames[name].columns if c != '_row')}."
            )
    return split


def augment_training_rows(train: pd.DataFrame, config: RunConfig, console: Console) -> pd.DataFrame:
    from tunewise.evaluation.fairness import augment_counterfactual

    augmented = augment_counterfactual(train, config.data.text_column, config.fairness.counterfactual_pairs)
    console.print(f"fairness.augment: {len(augmented) - len(train)} counterfactual copies added to training")
    return augmented


def training_weights(task: Task, config: RunConfig, train, frame: pd.DataFrame) -> tuple:
    """(class weights for the loss, per-row sampling weights) from data.balance and fairness.reweight_groups."""
    class_weights = sample_weights = None
    if config.data.balance != "none":
        per_class = balanced_class_weights(train.labels, len(task.label_names))
        if config.data.balance == "reweight":
            class_weights = per_class
        else:
            sample_weights = per_class[train.labels]
    if config.fairness.reweight_groups:
        from tunewise.evaluation.fairness import group_label_weights

        weights = group_label_weights(frame[config.fairness.group_column], frame[config.data.label_column])
        sample_weights = weights if sample_weights is None else sample_weights * weights
    return class_weights, sample_weights


def measure_fairness(model: FineTunedModel, frames: dict[str, pd.DataFrame], split: str, config: RunConfig) -> dict:
    """fairness.json: group, identity-term and counterfactual views on `split`, and mitigation effects."""
    from tunewise.evaluation.fairness import fairness_report, threshold_optimizer_effect

    fairness, column = config.fairness, config.fairness.group_column
    frame = frames[split]
    texts = frame[config.data.text_column].astype(str).tolist()
    probabilities = model.probabilities(texts)
    labels = np.array([model.task.label_names.index(str(v)) for v in model.task.normalised_labels(frame)])
    report = fairness_report(
        fairness,
        texts,
        labels,
        probabilities,
        model.task.label_names,
        frame[column] if column else None,
        model.probabilities,
        seed=config.train.seed,
    )
    report["split"] = split
    if fairness.threshold_optimizer and report.get("positive_label") is not None:
        positive = model.task.label_names.index(report["positive_label"])
        views = []
        for name in ("validation", "test"):
            part = frames[name]
            scores = model.probabilities(part[config.data.text_column].astype(str).tolist())[:, positive]
            truth = np.array([label == report["positive_label"] for label in model.task.normalised_labels(part)])
            views.append((scores, truth.astype(int), part[column]))
        report["threshold_optimizer"] = threshold_optimizer_effect(views[0], views[1], seed=config.train.seed)
    return report


def fairness_summary(report: dict) -> str:
    failing = [c for c in report["checks"] if c["status"] != "pass"]
    details = "; ".join(f"{c['figure']} {c['value']:.3f} > {c[c['status']]}" for c in failing[:3])
    return f"fairness ({report['split']}): {report['status']}" + (f" - {details}" if details else "")


def privacy_summary(leakage: dict) -> str:
    text = (
        f"membership inference: AUC {leakage['auc']:.3f} (95 % CI {leakage['auc_ci95'][0]:.3f}-"
        f"{leakage['auc_ci95'][1]:.3f}; 0.5 = nothing learnt about who was in training)"
    )
    if "within_dp_bound" in leakage:
        text += f"; {'within' if leakage['within_dp_bound'] else 'BEYOND'} what epsilon allows"
    return text


def check_data(config: RunConfig, console: Console):
    """The data check of `tunewise check`; errors stop the run before any model work."""
    from tunewise.audit.runner import run_audit
    from tunewise.audit.summary import print_audit

    audit = run_audit(config)
    summary = audit.to_dict()["summary"]
    if not audit.passed():
        print_audit(audit, console)
        first = audit.by_severity("error")[0].message
        raise DataError(
            f"the data check found {summary['error']} error(s), listed above (first: {first}). Fix the data; for "
            "leakage, data.dedupe: true drops the leaked rows from training. To train anyway, pass --skip-check "
            "(audit.before_training: false)."
        )
    console.print(
        f"data check: {summary['warning']} warning(s), {summary['note']} note(s); the full audit goes to "
        f"{Path(config.output_dir) / AUDIT_FOLDER} (see `tunewise check` for the table)"
    )
    return audit


def save_audit(audit, config: RunConfig, folder: Path) -> None:
    """The run folder keeps the data check it trained after: audit.json, plots and the datasheet."""
    from tunewise.audit.datasheet import write_datasheet
    from tunewise.audit.runner import write_audit

    write_audit(audit, folder)
    write_datasheet(audit, config, folder / "datasheet.md")


def drop_leaked_rows(frames: dict[str, pd.DataFrame], task: Task, config: RunConfig, console: Console) -> pd.DataFrame:
    """data.dedupe: train without the rows whose text also stands in validation or test."""
    from tunewise.audit.runner import leaked_train_rows

    train = frames["train"]
    leaked = leaked_train_rows(frames, task.text_columns, config)
    if leaked:
        train = train[~train["_row"].isin(leaked)].reset_index(drop=True)
        console.print(f"data.dedupe: dropped {len(leaked)} training row(s) whose text is also in validation or test")
    return train


def resolve_auto_settings(config: RunConfig, hints, tokenizer) -> None:
    """Replace `auto` with what the checkpoint declares, so the saved config replays exactly."""
    if config.data.max_length == "auto":
        limit = hints.max_length or getattr(tokenizer, "model_max_length", MAX_AUTO_LENGTH)
        config.data.max_length = int(min(limit, MAX_AUTO_LENGTH))
    if config.strategy.pooling == "auto":
        config.strategy.pooling = hints.pooling or "cls"


def mixed_precision(config: RunConfig) -> str:
    precision = config.train.precision
    if config.privacy.dp is not None:
        return "no"  # Opacus's per-example gradients are fp32 (bf16/fp16 refused before)
    if precision == "auto":
        if not torch.cuda.is_available():
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.precision fp16 needs a GPU; use fp32 (or bf16) on CPU.")
    return {"fp32": "no"}.get(precision, precision)


def final_evaluation(task, model, encoded, frames, accelerator, pad_token_id) -> tuple[dict, pd.DataFrame | None]:
    """Validation (fitting post-hoc settings such as the multi-label threshold) and test metrics."""
    metrics: dict[str, dict] = {}
    predictions = None
    for split in ("validation", "test"):
        if split not in encoded:
            continue
        logits, loss = predict_logits(
            model, encoded[split], EVAL_BATCH_SIZE, accelerator.device, pad_token_id, task.keeps_logits
        )
        if split == "validation":
            task.calibrate(logits, encoded[split])
        metrics[split] = {**task.compute_metrics(logits, encoded[split], loss), "loss": loss}
        if split == "test" and logits is not None:
            predictions = pd.concat([user_columns(frames[split]), task.present(logits, encoded[split])], axis=1)
    return metrics, predictions


def save_model(model, task: Task, tokenizer, run_dir: Path):
    """`model/` loads with from_pretrained; LoRA runs also keep the bare adapter in `adapter/`."""
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(run_dir / "adapter")
        model = model.merge_and_unload()
    task.save_settings(model.config)
    register_auto_class()
    model.save_pretrained(run_dir / "model", safe_serialization=True)
    tokenizer.save_pretrained(run_dir / "model")
    return model


def write_outputs(
    run_dir: Path, metrics: dict, predictions: pd.DataFrame | None, result: FitResult, task: Task
) -> None:
    write_json(run_dir / "metrics.json", metrics)
    with open(run_dir / "history.jsonl", "w", encoding="utf-8") as history:
        for record in result.state.history:
            history.write(json.dumps(record) + "\n")
    if predictions is not None:
        csv_ready(predictions).to_csv(run_dir / "predictions.csv", index=False)
    plots = run_dir / "plots"
    plot_loss_curve(result.state.history, plots / "loss.png")
    for split, split_metrics in metrics.items():
        if "confusion_matrix" in split_metrics:
            plot_confusion_matrix(
                split_metrics["confusion_matrix"],
                task.label_names,
                plots / f"confusion_{split}.png",
                title=f"Confusion matrix ({split})",
            )


__all__ = ["Run", "load", "train"]
