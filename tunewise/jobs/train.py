"""The train job: prepare, check, build, fit, evaluate, save, audit, explain, report. Read it top to bottom.

Every stage works from the plan preparation made, and the model, processor and frames stay in
memory from the first stage to the last: each data file is parsed once, the tokenizer and the model
loaded once. Each stage's wall time goes into run.json (`durations_seconds`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate.utils import set_seed
from rich.console import Console
from torch import nn

from tunewise.audit.findings import Audit
from tunewise.config.parsing import dump_config
from tunewise.config.sections import RunConfig
from tunewise.errors import TunewiseError
from tunewise.evaluation.metrics import format_metrics_table
from tunewise.inference import shared_across_processes
from tunewise.jobs.check import check_before_training, write_check
from tunewise.jobs.explanations import explain_run
from tunewise.jobs.fairness import fairness_summary, measure_fairness
from tunewise.jobs.launch import refuse_sharded_training
from tunewise.jobs.privacy import audit_membership, privacy_summary, write_privacy
from tunewise.jobs.safety import base_model_safety, safety_audit, screen_generations
from tunewise.jobs.tracking import (
    abandon_tracking,
    check_trackers,
    finish_tracking,
    start_tracking,
    tracker_options,
)
from tunewise.models.strategies import apply_strategy, count_parameters
from tunewise.prepare import Plan, prepare, process_state
from tunewise.reporting.plots import plot_confusion_matrix, plot_loss_curve
from tunewise.reporting.rebuild import rebuild as rebuild_report
from tunewise.runs import atomic
from tunewise.runs.guard import start_run_dir
from tunewise.runs.layout import (
    ADAPTER_FOLDER,
    AUDIT_FOLDER,
    CHECKPOINT_FOLDER,
    CONFIG_FILE,
    FAIRNESS_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FOLDER,
    PLOTS_FOLDER,
    PREDICTIONS_FILE,
    RUN_FILE,
)
from tunewise.runs.record import config_fingerprint, git_revision, hardware, package_versions, write_json
from tunewise.serving.predictor import FineTunedModel, csv_ready, user_columns
from tunewise.training.checkpointing import payload_bytes
from tunewise.training.loop import FitResult, ValidationObserver, fit
from tunewise.training.steps import run_accelerator
from tunewise.types import Outputs


@dataclass
class Run:
    """A finished training run: its folder, metrics and the fine-tuned model."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, dict]
    history: list[dict]
    model: FineTunedModel

    def predict(
        self,
        inputs: Any,
        explain: bool = False,
        explain_label: str | None = None,
        explain_method: str = "auto",
        explain_dir: str | Path | None = None,
    ) -> list[dict[str, Any]]:
        """The fine-tuned model's predictions, explained with `explain` (FineTunedModel.predict says how)."""
        return self.model.predict(inputs, explain, explain_label, explain_method, explain_dir)


@dataclass
class Stopwatch:
    """Wall seconds per stage, for run.json and the benchmark."""

    started: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - began, 2)

    def total(self) -> float:
        return round(time.perf_counter() - self.started, 2)


def train(
    config: RunConfig,
    overwrite: bool = False,
    resume: bool = False,
    show_progress: bool = True,
    console: Console | None = None,
    withhold_test: bool = False,
    on_validation: ValidationObserver | None = None,
) -> Run:
    """Fine-tune as the config says and write the run folder. Returns the `Run`.

    `withhold_test` leaves the test split out of the whole run (prepare.prepare says why);
    `on_validation` is told every validation during training (training.loop.fit)."""
    try:
        return _train(config, overwrite, resume, show_progress, console, withhold_test, on_validation)
    except BaseException:  # an error, a pruned trial, Ctrl-C: the tracker's run ends marked as failed
        abandon_tracking(config)
        raise


def _train(
    config: RunConfig,
    overwrite: bool,
    resume: bool,
    show_progress: bool,
    console: Console | None,
    withhold_test: bool,
    on_validation: ValidationObserver | None,
) -> Run:
    console = console or Console(stderr=True)
    if process_state().process_index > 0:  # with several processes, the first one speaks for all
        console = Console(stderr=True, quiet=True)
    clock = Stopwatch()
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    with clock.stage("prepare"):  # read, split and check the data; find the model; resolve every auto; encode
        plan = prepare(config, overwrite=overwrite, resume=resume, withhold_test=withhold_test)
    assert plan.training is not None
    report_data_changes(plan, console)
    audit = None
    if plan.config.audit.before_training:
        with clock.stage("check"):
            audit = check_before_training(plan, console)

    # --- model and strategy: mistakes in either fail here, before the run folder is touched ---
    settings = plan.training.settings
    check_trackers(plan.config)
    accelerator = run_accelerator(
        mixed_precision=settings.mixed_precision,
        cpu=plan.training.device_type != "cuda",
        **tracker_options(plan.config, plan.run_dir),
    )
    refuse_sharded_training(accelerator.distributed_type.value)
    if settings.privacy is not None:
        console.print(settings.privacy.describe())
    set_seed(settings.seed)
    with clock.stage("build_model"):
        model = plan.task.model.build(plan.model.source, plan.model.hints, plan.model.pooling)
        model = apply_strategy(model, plan.config.strategy)
    trainable, total = count_parameters(model)
    if accelerator.process_index > 0:  # the same weights everywhere, but each process its own dropout
        set_seed(settings.seed + accelerator.process_index)

    writer = accelerator.is_main_process  # with several processes, one writes the run folder
    record = starting_record(plan, trainable, total)
    record["distributed_type"] = accelerator.distributed_type.value  # NO, MULTI_GPU (DDP), FSDP, DEEPSPEED, ...
    accelerator.wait_for_everyone()  # every process has checked the run folder before the first one writes it
    if writer:
        start_run(plan, audit, record, overwrite)
        start_tracking(accelerator, plan.config, plan.run_dir)
    console.print(
        f"[bold]tunewise[/] {plan.facts.name} ({plan.facts.problem_type}"
        f"{f', {len(plan.facts.label_names)} labels' if plan.facts.label_names else ''}) on {plan.config.model}: "
        f"{plan.model.method}, {trainable:,} of {total:,} parameters trainable, batch {settings.batch_size}, "
        f"lr {settings.learning_rate:.2e}, {len(plan.training.encoded['train']):,} training rows, "
        f"device {accelerator.device}"
    )

    # --- the baseline a generative task must beat: the pretrained model on the same prompts ---
    base = None
    if plan.facts.capabilities.zero_shot:
        with clock.stage("base_model_evaluation"):
            base = base_model_scores(plan, model)
    before = None
    if plan.safety is not None:  # the same prompts for the base model now, the fine-tuned one after training
        with clock.stage("base_model_safety"):
            before = base_model_safety(plan, model)

    # --- train ---
    def evaluate(model_to_score: nn.Module, split: Any) -> tuple[dict[str, Any], Outputs]:
        return score(plan, model_to_score, split)

    encoded = plan.training.encoded
    with clock.stage("train"):
        result = fit(
            model,
            encoded["train"],
            encoded["validation"],
            settings,
            evaluate,
            accelerator,
            plan.run_dir / CHECKPOINT_FOLDER,
            resume=resume,
            show_progress=show_progress,
            console=console,
            on_validation=on_validation,
            fingerprint=record["config_fingerprint"],
        )
    model = accelerator.unwrap_model(model)
    merged = hasattr(model, "merge_and_unload")
    model = merge_adapter(plan, model, save=writer)  # from here on the model is the one saved in model/

    # --- evaluate the best model, write the run folder ---
    # the evaluation during training of the weights the model ends with is the final validation
    # evaluation, unless merging LoRA or mixed precision made other numbers of the same weights
    scored = result.best_outputs if not merged and settings.mixed_precision == "no" else None
    with clock.stage("final_evaluation"), shared_across_processes(accelerator.process_index, accelerator.num_processes):
        metrics, outputs, predictions = final_evaluation(plan, model, scored, base)
    screen = None
    if plan.safety is not None and writer:
        with clock.stage("screen"):
            screen, predictions = screen_generations(plan, metrics, outputs, predictions, console)
    if not writer:
        fine_tuned = FineTunedModel(model, plan.model.processor, plan.task, plan.config)
        return Run(plan.run_dir, plan.config, metrics, result.state.history, fine_tuned)
    with clock.stage("save"):
        with atomic.replacing_folder(plan.run_dir / MODEL_FOLDER, payload_bytes(model.state_dict())) as folder:
            plan.task.model.save(model, plan.model.processor, folder)  # model/ appears whole, or not at all
        write_outputs(plan, metrics, predictions, result)
    fairness = None
    if plan.facts.capabilities.fairness and plan.config.fairness.enabled:
        with clock.stage("fairness"):
            fairness = measure_fairness(plan, model, outputs)
            write_json(plan.run_dir / FAIRNESS_FILE, fairness)
        console.print(fairness_summary(fairness))
    if plan.config.explain.enabled and not withhold_test:  # a tune trial: only the chosen one is explained, on test
        with clock.stage("explanations"):
            explain_run(plan, model, fairness, console)
    privacy_record = settings.privacy.record(result.state.step) if settings.privacy is not None else None
    if plan.safety is not None and before is not None:
        with clock.stage("safety_audit"):
            safety_audit(plan, model, screen, before, privacy_record, console)
    if plan.facts.capabilities.membership_inference:
        with clock.stage("privacy_audit"):
            leakage = privacy_audit(plan, model, privacy_record, outputs, console)
        if leakage is not None:
            console.print(privacy_summary(leakage))
    finish_record(plan, record, metrics, result, clock, privacy_record)
    with clock.stage("report"):
        rebuild_report(plan.run_dir)
    finish_record(plan, record, metrics, result, clock, privacy_record)  # now with the report's time too
    finish_tracking(accelerator, plan.config, plan.run_dir, metrics, result.state.step)
    console.print(format_metrics_table(metrics, title=f"{plan.run_dir} - best step {result.state.best_step}"))
    fine_tuned = FineTunedModel(model, plan.model.processor, plan.task, plan.config)
    return Run(plan.run_dir, plan.config, metrics, result.state.history, fine_tuned)


def report_data_changes(plan: Plan, console: Console) -> None:
    data = plan.data
    if data.dropped_rows:
        console.print(
            f"data.dedupe: dropped {data.dropped_rows} training row(s) whose text is also in validation or test"
        )
    if plan.config.fairness.augment:
        console.print(f"fairness.augment: {data.augmented_rows} counterfactual copies added to training")


def score(plan: Plan, model: nn.Module, split: Any) -> tuple[dict[str, Any], Outputs]:
    """The task's metrics (and the mean loss) of the model on one encoded split, with the outputs behind them."""
    outputs = plan.task.scoring.run(model, plan.model.processor, split)
    return {**plan.task.scoring.metrics(outputs, split), "loss": outputs.loss}, outputs


@dataclass
class BaseModelScores:
    """The pretrained model, before any fine-tuning, on one evaluation split: the baseline of a task
    the pretrained model can already do (generation)."""

    split: str
    metrics: dict[str, Any]
    outputs: Outputs


def base_model_scores(plan: Plan, model: nn.Module) -> BaseModelScores | None:
    """Score the model as it is now (pretrained weights; LoRA adapters start as a no-op) on the split
    the final evaluation reports first: test, else validation."""
    assert plan.training is not None
    split = "test" if "test" in plan.training.encoded else "validation"
    encoded = plan.training.encoded.get(split)
    if encoded is None:
        return None
    if split == "validation":  # the whole split, as test would be, not the sample scored during training
        frame = plan.data.frames[split]
        encoded = plan.task.data.encode(frame, plan.model.processor, plan.model.max_length, "evaluate")
    metrics, outputs = score(plan, model, encoded)
    return BaseModelScores(split, metrics, outputs)


def final_evaluation(
    plan: Plan, model: nn.Module, validation: Outputs | None = None, base: BaseModelScores | None = None
) -> tuple[dict, dict[str, Outputs], pd.DataFrame | None]:
    """Validation (fitting post-hoc settings such as the multi-label threshold) and test metrics; the
    outputs (reused by the fairness and privacy audits) and the test predictions. `validation`: the
    model's validation outputs when already computed (by the evaluation during training). `base`: the
    pretrained model's scores, put beside the fine-tuned ones (metrics `baselines`, predictions `base_`)."""
    assert plan.training is not None
    metrics: dict[str, dict] = {}
    outputs: dict[str, Outputs] = {}
    predictions = None
    for split in ("validation", "test"):
        encoded = plan.training.encoded.get(split)
        if encoded is None:
            continue
        known = validation if split == "validation" else None
        if base is not None and base.split == split == "validation":  # scored whole, as the baseline was
            encoded = plan.task.data.encode(
                plan.data.frames[split], plan.model.processor, plan.model.max_length, "evaluate"
            )
            known = None
        outputs[split] = known if known is not None else plan.task.scoring.run(model, plan.model.processor, encoded)
        if split == "validation":
            plan.task.scoring.calibrate(outputs[split], encoded)
        metrics[split] = {**plan.task.scoring.metrics(outputs[split], encoded), "loss": outputs[split].loss}
        if base is not None and base.split == split:
            baseline = {name: value for name, value in base.metrics.items() if name != "baselines"}
            metrics[split]["baselines"] = {"base_model": baseline, **metrics[split].get("baselines", {})}
        if split == "test" or (base is not None and base.split == split):
            if outputs[split].answers:
                presented = plan.task.scoring.present(outputs[split], encoded)
                if base is not None and base.split == split:
                    presented = beside_base(presented, plan.task.scoring.present(base.outputs, encoded))
                predictions = pd.concat([user_columns(plan.data.frames[split]), presented], axis=1)
    return metrics, outputs, predictions


def beside_base(presented: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """The fine-tuned model's prediction columns, each followed by the base model's (`base_<column>`);
    columns both share (a reference) appear once."""
    columns: dict[str, Any] = {}
    for column in presented.columns:
        columns[column] = presented[column]
        if column in base.columns and not presented[column].equals(base[column]):
            columns[f"base_{column}"] = base[column]
    return pd.DataFrame(columns)


def starting_record(plan: Plan, trainable: int, total: int) -> dict[str, Any]:
    """run.json as training starts: the plan, the data fingerprints, seed, versions, git revision, hardware."""
    return {
        "requested_config": plan.requested.model_dump(mode="json"),
        "status": "training",
        "problem_type": plan.facts.problem_type,
        **plan.describe(),
        "parameters": {"trainable": trainable, "total": total},
        "versions": package_versions(),
        "config_fingerprint": config_fingerprint(plan.requested.model_dump(mode="json"), plan.data.fingerprints),
        "git_revision": git_revision(Path.cwd()),
        "hardware": hardware(),
    }


def start_run(plan: Plan, audit: Audit | None, record: dict[str, Any], overwrite: bool) -> None:
    start_run_dir(plan.run_dir, overwrite=overwrite)
    write_json(plan.run_dir / RUN_FILE, record)  # first: a folder with run.json is a run --resume can continue
    atomic.write_text(plan.run_dir / CONFIG_FILE, dump_config(plan.config))
    if audit is not None:
        write_check(audit, plan, plan.run_dir / AUDIT_FOLDER)


def merge_adapter(plan: Plan, model: nn.Module, save: bool) -> nn.Module:
    """LoRA runs keep the bare adapter in `adapter/` (`save`: the process that writes the run folder) and go
    on with the adapter merged into the weights: the model evaluated, audited and saved in `model/` is one
    plain model that loads with from_pretrained. Every process merges, so all evaluate the same model."""
    peft_model: Any = model
    if not hasattr(peft_model, "merge_and_unload"):
        return model
    if save:
        with atomic.replacing_folder(plan.run_dir / ADAPTER_FOLDER) as folder:
            peft_model.save_pretrained(folder)
    return peft_model.merge_and_unload()


def write_outputs(plan: Plan, metrics: dict, predictions: pd.DataFrame | None, result: FitResult) -> None:
    run_dir = plan.run_dir
    write_json(run_dir / METRICS_FILE, metrics)
    atomic.write_lines(run_dir / HISTORY_FILE, (json.dumps(entry) for entry in result.state.history))
    if predictions is not None:
        with atomic.replacing(run_dir / PREDICTIONS_FILE) as temporary:
            csv_ready(predictions).to_csv(temporary, index=False)
    plots = run_dir / PLOTS_FOLDER
    plot_loss_curve(result.state.history, plots / "loss.png")
    for split, split_metrics in metrics.items():
        if "confusion_matrix" in split_metrics:
            plot_confusion_matrix(
                split_metrics["confusion_matrix"],
                list(plan.facts.label_names),
                plots / f"confusion_{split}.png",
                title=f"Confusion matrix ({split})",
            )


def finish_record(
    plan: Plan,
    record: dict[str, Any],
    metrics: dict,
    result: FitResult,
    clock: Stopwatch,
    privacy: dict[str, Any] | None,
) -> None:
    state = result.state
    record.update(
        status="finished",
        task=plan.task.facts().record(),  # with the settings calibrated on validation
        metrics=metrics,
        durations_seconds={
            "total": clock.total(),
            **clock.seconds,
            "encoding": plan.training.encode_seconds if plan.training else 0.0,
            "training": round(state.train_seconds, 2),
            "validation_during_training": round(state.eval_seconds, 2),
        },
        steps=state.step,
        epochs=result.epochs,
        best_step=state.best_step,
        stopped_early=state.stopped_early,
        train_samples_per_second=round(state.samples_seen / max(state.train_seconds, 1e-9), 2),
        peak_memory_mb=round(result.peak_memory_mb, 1),
        resumed=result.resumed,  # from which step, and whether exactly (training.loop)
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if privacy is not None:
        record["privacy"] = privacy
    write_json(plan.run_dir / RUN_FILE, record)


def privacy_audit(
    plan: Plan, model: nn.Module, budget: dict[str, Any] | None, outputs: dict[str, Outputs], console: Console
) -> dict[str, Any] | None:
    """Membership inference on the model in memory; a run too small to attack says why, never loses the run."""
    split = "test" if "test" in plan.data.frames else "validation"
    try:
        leakage = audit_membership(
            plan.task, model, plan.model.processor, plan.config, plan.data, budget, outputs.get(split), plan.seed
        )
    except TunewiseError as error:  # the model is trained and saved: say why, never lose the run
        console.print(f"[yellow]privacy audit skipped:[/] {error}")
        return None
    leakage["data_changed_since_training"] = []
    return write_privacy(leakage, plan.run_dir)
