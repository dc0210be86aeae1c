"""One trial: a training run of the sampled config with the test split withheld, told to the pruner as it goes.

A trial is judged by its best validation evaluation (the model its run keeps), never its last. Only the
best trial keeps its weights; the others keep what says how they went (metrics, history, run.json,
config.yaml, report), so a study of many trials costs the disk of one model.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from tunewise.config.sections import RunConfig
from tunewise.errors import DiskFull, Stopped, TunewiseError
from tunewise.jobs.train import train
from tunewise.jobs.tuning.channel import TrialChannel
from tunewise.jobs.tuning.space import trial_config
from tunewise.jobs.tuning.study import Objective, best_trial, trial_folder
from tunewise.runs.layout import ADAPTER_FOLDER, CHECKPOINT_FOLDER, MODEL_FOLDER, RUN_FILE
from tunewise.runs.reader import read_json
from tunewise.runs.record import write_json

WEIGHTS = (MODEL_FOLDER, ADAPTER_FOLDER, CHECKPOINT_FOLDER)


@dataclass
class Outcome:
    """How a trial ended: COMPLETE (with its best validation), PRUNED (its best before it was stopped) or FAIL."""

    state: optuna.trial.TrialState
    value: float | None
    best_step: int | None
    seconds: float
    error: str | None = None


class PruningReport:
    """The `on_validation` observer of a trial's training: the best value so far goes to the pruner at each
    evaluation, so a trial is compared by what it would be judged by; when the main process's pruner says
    stop, every process raises TrialPruned, which ends the training there."""

    def __init__(self, trial: optuna.Trial | None, objective: Objective, channel: TrialChannel):
        self.trial = trial  # None on the processes that do not talk to the study
        self.objective = objective
        self.channel = channel
        self.best: float | None = None
        self.best_step: int | None = None

    def __call__(self, step: int, metrics: dict[str, Any]) -> None:
        prune = False
        if self.trial is not None:
            value = metrics.get(self.objective.metric)
            if self.objective.better(value, self.best):
                self.best, self.best_step = value, step
            if self.best is not None:
                self.trial.report(self.best, step)
                prune = self.trial.should_prune()
        if self.channel.share(prune):
            raise optuna.TrialPruned(f"pruned at step {step}")


def run_trial(
    config: RunConfig,
    values: dict[str, Any],
    folder: Path,
    report: PruningReport,
    show_progress: bool,
    console: Console,
) -> Outcome:
    """Train the config with `values` into `folder`; a sampled combination the config or the data refuses fails
    this trial with its message, not the study."""
    started = time.perf_counter()

    def ended(
        state: optuna.trial.TrialState, value: float | None, step: int | None, error: str | None = None
    ) -> Outcome:
        return Outcome(state, value, step, round(time.perf_counter() - started, 1), error)

    try:
        run = train(
            trial_config(config, values, str(folder)),
            show_progress=show_progress,
            console=console,
            withhold_test=True,
            on_validation=report,
        )
    except optuna.TrialPruned:
        if report.trial is not None:
            mark_pruned(folder, report.best_step)
        return ended(optuna.trial.TrialState.PRUNED, report.best, report.best_step)
    except (Stopped, DiskFull):  # not this trial's fault: the study stops (the next trial would meet the same)
        raise
    except TunewiseError as error:
        return ended(optuna.trial.TrialState.FAIL, None, None, str(error))
    value, step = best_validation(run.history, report.objective)
    if value is None:
        why = f"no validation evaluation reported {report.objective.metric}"
        return ended(optuna.trial.TrialState.FAIL, None, None, why)
    return ended(optuna.trial.TrialState.COMPLETE, value, step)


def fresh_folder(folder: Path) -> None:
    """A trial's folder, empty: one left at this number (by a study whose storage was removed while its folders
    stayed) belongs to this study's output_dir, so it is replaced; nothing outside trials/ is touched."""
    if folder.exists():
        shutil.rmtree(folder)


def best_validation(history: list[dict[str, Any]], objective: Objective) -> tuple[float | None, int | None]:
    """The best value of the metric over the run's validation evaluations, and its step (the first, on a tie)."""
    best, step = None, None
    for record in history:
        if record.get("split") != "validation":
            continue
        value = record["metrics"].get(objective.metric)
        if objective.better(value, best):
            best, step = value, record["step"]
    return best, step


def mark_pruned(folder: Path, step: int | None) -> None:
    """run.json of a pruned trial says so, instead of the `training` its run was stopped in."""
    record = read_json(folder / RUN_FILE)
    if isinstance(record, dict):
        write_json(folder / RUN_FILE, {**record, "status": "pruned", "best_step": step})


def keep_best_weights(study: optuna.Study, trials_dir: Path) -> None:
    """Remove the weights of every finished trial but the best. Run after every trial and when a study continues,
    so a stop between a trial and this cleanup leaves nothing behind."""
    best = best_trial(study)
    for trial in study.get_trials(deepcopy=False):
        if trial.state.is_finished() and (best is None or trial.number != best.number):
            folder = trial_folder(trials_dir, trial.number)
            for name in WEIGHTS:
                shutil.rmtree(folder / name, ignore_errors=True)
