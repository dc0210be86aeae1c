"""The study: what trials are judged by, where it is stored, and the one process that may run it.

The metric and its direction are fixed before the first trial (the task's selection metric needs the
task's label space, so the data is read once here and its problems stop the study before any trial).
A study continues across invocations: its output_dir holds a lock, held for the whole run, so a trial
still RUNNING when the lock is taken belonged to a process that was stopped; it is marked FAIL and its
values are enqueued to run again.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunewise.config.sections import RunConfig
from tunewise.config.tune import TuneConfig
from tunewise.errors import ConfigError, first_line
from tunewise.evaluation.metrics import METRIC_DIRECTIONS, is_better
from tunewise.prepare import prepare_data
from tunewise.prepare.rules import raise_all
from tunewise.runs.atomic import write_json
from tunewise.runs.guard import check_output_dir
from tunewise.tasks import make_task

TUNE_FOLDER = "tune"  # the study's own files: study.db, lock, best.json, trials.csv, plots
TRIALS_FOLDER = "trials"  # one run folder per trial
REPLAY_FOLDER = "best-replay"  # where best_config.yaml trains when replayed
STUDY_FILE = "study.json"  # which study this output_dir belongs to
LOCK_FILE = "lock"
RETRY_OF = "retry_of"  # user attribute of a trial that runs a stopped trial's values again
ERROR = "error"  # user attribute of a trial that failed: why


@dataclass(frozen=True)
class Objective:
    """The validation metric trials are judged by, and which way is better (the training loop's own direction)."""

    metric: str
    direction: Literal["maximize", "minimize"]

    def better(self, new: float | None, best: float | None) -> bool:
        return new is not None and is_better(self.metric, new, best)


def resolve_objective(config: RunConfig, tuning: TuneConfig) -> Objective:
    """tune.metric, else train.early_stopping.metric, else the task's default for this data (which reading
    the data decides: single-label f1_macro, regression mse, ...)."""
    stopping = config.train.early_stopping
    chosen = tuning.metric if tuning.metric != "auto" else stopping.metric if stopping is not None else "auto"
    task = make_task(config)
    data = prepare_data(task, config)
    raise_all(data.problems)
    facts = task.facts()
    metric = facts.default_metric if chosen == "auto" else chosen
    if metric not in facts.metrics:  # the rule preparation applies to train.early_stopping.metric
        raise ConfigError(
            f"tune.metric {metric!r} is not reported for {facts.name} ({facts.problem_type}). Choose one of: "
            f"{', '.join(facts.metrics)}."
        )
    direction: Literal["maximize", "minimize"] = "maximize" if METRIC_DIRECTIONS[metric] == "max" else "minimize"
    if tuning.direction not in ("auto", direction):
        raise ConfigError(
            f"tune.direction {tuning.direction} contradicts {metric}, which each trial's training keeps the best "
            f"of by {direction.removesuffix('e')}ing it; set tune.direction: auto (or {direction})."
        )
    return Objective(metric, direction)


# ------------------------------------------------------------------------------------------ the output_dir


def default_storage(output_dir: Path) -> str:
    return f"sqlite:///{(output_dir / TUNE_FOLDER / 'study.db').as_posix()}"


def storage_label(url: str) -> str:
    """The storage URL as study.json records it and messages show it: without its password."""
    from sqlalchemy.engine import make_url  # only `tunewise tune` needs sqlalchemy: imported here, not with tunewise
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError as error:
        raise ConfigError(
            f"--storage {url!r} is not a database URL ({first_line(error, 200)}). Use sqlite:///path/study.db, or "
            "leave it out for the study's own sqlite file in output_dir/tune/."
        ) from None


@contextmanager
def hold_study(output_dir: Path, storage: str, study_name: str) -> Iterator[None]:
    """Make output_dir this study's folder and hold its lock while the study runs. A folder of other files (a
    `tunewise train` run, anything else) is refused, as is another study's folder, or one another process runs."""
    check_output_dir(output_dir)
    record = output_dir / TUNE_FOLDER / STUDY_FILE
    present = sorted(path.name for path in output_dir.iterdir()) if output_dir.is_dir() else []
    others = [name for name in present if name != TUNE_FOLDER]
    if others and not record.is_file():
        names = ", ".join(others[:5])
        raise ConfigError(
            f"output_dir {output_dir} already holds other files ({names}); `tunewise tune` writes its study there "
            f"({TUNE_FOLDER}/, {TRIALS_FOLDER}/). Choose an empty or new output_dir, e.g. --set output_dir=runs/tune."
        )
    (output_dir / TUNE_FOLDER).mkdir(parents=True, exist_ok=True)
    with open(output_dir / TUNE_FOLDER / LOCK_FILE, "a", encoding="utf-8") as lock:
        _lock(lock, output_dir)
        wanted = {"study_name": study_name, "storage": storage_label(storage)}
        if record.is_file():
            held = json.loads(record.read_text(encoding="utf-8"))
            if held != wanted:
                raise ConfigError(
                    f"output_dir {output_dir} holds the study {held.get('study_name')!r} in {held.get('storage')}. "
                    "Continue it with the same --storage and --study-name (none: the defaults), or choose another "
                    "output_dir for a new study."
                )
        else:
            write_json(record, wanted)
        yield


def _lock(lock: IO[str], output_dir: Path) -> None:
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(
            f"Another `tunewise tune` is running the study in {output_dir} (it holds {lock.name}). Wait for it to "
            "finish, or stop it; then run this again to continue the study."
        ) from None


# ------------------------------------------------------------------------------------------ the study


def open_study(storage: str, study_name: str, objective: Objective, tuning: TuneConfig, seed: int) -> optuna.Study:
    """Create the study, or load it to continue; a stored study that optimises the other way is refused."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            load_if_exists=True,
            direction=objective.direction,
            pruner=make_pruner(tuning),
        )
    except (SQLAlchemyError, ImportError, ValueError) as error:
        raise ConfigError(
            f"--storage {storage_label(storage)}: the study cannot be opened ({first_line(error, 200)}). Check the "
            "URL and that its database is reachable, or leave --storage out for a sqlite file in output_dir/tune/."
        ) from None
    if study.direction.name.lower() != objective.direction:
        raise ConfigError(
            f"The study {study_name!r} in {storage_label(storage)} was made to {study.direction.name.lower()}, and "
            f"{objective.metric} is to {objective.direction}. Choose another --study-name or output_dir."
        )
    # samplers are not stored: seeded by how far the study has come, a continued study draws new values
    study.sampler = make_sampler(tuning, seed + len(study.get_trials(deepcopy=False)))
    return study


def make_sampler(tuning: TuneConfig, seed: int) -> optuna.samplers.BaseSampler:
    if tuning.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tuning.startup_trials)


def make_pruner(tuning: TuneConfig) -> optuna.pruners.BasePruner:
    if tuning.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tuning.startup_trials)
    if tuning.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def retry_stopped_trials(study: optuna.Study, trials_dir: Path) -> list[int]:
    """Trials still RUNNING (the lock is ours, so their process was stopped): FAIL, their half-written folder
    removed, their values enqueued to run again. Returns their numbers."""
    stopped = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stopped:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
        shutil.rmtree(trial_folder(trials_dir, trial.number), ignore_errors=True)
    return [trial.number for trial in stopped]


def trial_folder(trials_dir: Path, number: int) -> Path:
    return trials_dir / f"trial-{number:04d}"


def finished(study: optuna.Study) -> int:
    """Trials that count towards --trials: complete, pruned, or failed on their own values (a trial whose
    process was stopped is run again instead)."""
    return sum(
        trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (trial.state == TrialState.FAIL and ERROR in trial.user_attrs)
        for trial in study.get_trials(deepcopy=False)
    )


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    return study.best_trial if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) else None


def default_study_name(config: RunConfig) -> str:
    return os.path.normpath(config.output_dir)
