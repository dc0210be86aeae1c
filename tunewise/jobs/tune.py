"""The tune job: an Optuna study over the config's `tune.space`, one training run per trial. Read it top to bottom.

    check      the tune: section, every value of the space, the data once, the metric and its direction
    study      output_dir claimed and locked; the study created or continued (stopped trials run again)
    trials     until --trials have finished (or --timeout): sample, train with test withheld, prune, tell;
               only the best trial keeps its weights
    test       the best trial scored on the test split, once
    outputs    output_dir/tune/: trials.csv, best.json, best_config.yaml, history.png, importance.png

output_dir holds `tune/` (the study's files; study.db is the default storage) and `trials/trial-0000`, ...
(run folders). With several processes (torchrun) the main process runs the study and the others train
each trial with it (`tuning.channel`).
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from tunewise.config.sections import RunConfig
from tunewise.errors import ConfigError, Stopped, TunewiseError
from tunewise.jobs.tuning.channel import TrialChannel
from tunewise.jobs.tuning.final_test import score_on_test
from tunewise.jobs.tuning.outputs import (
    BEST_CONFIG,
    BEST_FILE,
    HISTORY_PLOT,
    IMPORTANCE_PLOT,
    TRIALS_CSV,
    draw_history,
    importances,
    quiet_optuna,
    trial_rows,
    write_best_config,
    write_trials_csv,
)
from tunewise.jobs.tuning.space import check_space_values, suggest, tuning_of
from tunewise.jobs.tuning.study import (
    ERROR,
    REPLAY_FOLDER,
    TRIALS_FOLDER,
    TUNE_FOLDER,
    Objective,
    best_trial,
    default_storage,
    default_study_name,
    finished,
    hold_study,
    open_study,
    resolve_objective,
    retry_stopped_trials,
    storage_label,
    trial_folder,
)
from tunewise.jobs.tuning.trial import Outcome, PruningReport, fresh_folder, keep_best_weights, run_trial
from tunewise.runs.layout import MODEL_FOLDER
from tunewise.runs.reader import read_json
from tunewise.runs.record import write_json

NOTE = (
    "Fields outside tune.space kept the config's values; `auto` ones were resolved in each trial (its config.yaml "
    "shows them). Validation chose this trial, so its validation score is optimistic; the test split, withheld "
    "from every trial, was scored once, on this trial, after the study."
)
STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class TuneResult:
    """A finished study: the best trial, its values and scores (test: None without data.test), every trial."""

    output_dir: Path
    metric: str
    direction: str
    best_trial: int
    params: dict[str, Any]
    validation: float
    test: dict[str, Any] | None
    folder: Path  # the best trial's run folder, the one with weights
    trials: list[dict[str, Any]] = field(default_factory=list)  # as trials.csv
    study: optuna.Study | None = None  # on the process that ran the study

    @property
    def tune_dir(self) -> Path:
        return self.output_dir / TUNE_FOLDER


@dataclass(frozen=True)
class StudyPlan:
    """What every step of the job needs to know about the study it runs."""

    config: RunConfig
    objective: Objective
    output_dir: Path
    storage: str
    name: str
    seed: int

    @property
    def trials_dir(self) -> Path:
        return self.output_dir / TRIALS_FOLDER

    @property
    def tune_dir(self) -> Path:
        return self.output_dir / TUNE_FOLDER


def tune(
    config: RunConfig,
    trials: int,
    storage: str | None = None,
    timeout: float | None = None,
    study_name: str | None = None,
    show_progress: bool = True,
    console: Console | None = None,
) -> TuneResult:
    """Search the config's tune.space until the study holds `trials` finished trials (a continued study counts
    the ones it has) or `timeout` seconds have passed since this call began; then score the best on test once."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    tuning = tuning_of(config)
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {trials}).")
    check_space_values(config)
    output_dir = Path(config.output_dir)
    plan = StudyPlan(
        config,
        resolve_objective(config, tuning),
        output_dir,
        storage or default_storage(output_dir),
        study_name or default_study_name(config),
        tuning.seed if tuning.seed is not None else config.train.seed,
    )
    channel = TrialChannel.open()
    with ExitStack() as held, quiet_optuna():
        study = channel.on_main(lambda: start_study(plan, held, console))
        while True:
            trial = next_trial(study, trials, None if timeout is None else started + timeout)
            if trial is not None:  # before the other processes hear of it, so none checks the folder before this
                fresh_folder(trial_folder(plan.trials_dir, trial.number))
            order = channel.share(None if trial is None else (trial.number, suggest(trial, tuning.space)))
            if order is None:
                break
            number, values = order
            report = PruningReport(trial, plan.objective, channel)
            folder = trial_folder(plan.trials_dir, number)
            try:
                outcome = run_trial(config, values, folder, report, show_progress, console)
            except Stopped as stopped:  # a signal: the study stops; its next run runs this trial again
                raise study_stopped(stopped, number) from None
            if study is not None and trial is not None:
                tell(plan, study, trial, outcome, console)

        def finish() -> TuneResult:
            assert study is not None  # the main process's
            return finish_study(plan, study, console)

        result = channel.on_main(finish)
    shared = channel.share(None if result is None else replace(result, study=None))
    assert shared is not None
    return result if result is not None else shared


def start_study(plan: StudyPlan, held: ExitStack, console: Console) -> optuna.Study:
    """Claim and lock output_dir, open the study, run stopped trials again, and tidy weights a stop left."""
    held.enter_context(hold_study(plan.output_dir, plan.storage, plan.name))
    study = open_study(plan.storage, plan.name, plan.objective, tuning_of(plan.config), plan.seed)
    stopped = retry_stopped_trials(study, plan.trials_dir)
    if stopped:
        console.print(f"trial(s) {', '.join(map(str, stopped))} stopped with their process; their values run again")
    keep_best_weights(study, plan.trials_dir)
    console.print(
        f"[bold]tunewise tune[/] study {plan.name!r} in {storage_label(plan.storage)}: "
        f"{finished(study)} trial(s) finished so far, judged by validation {plan.objective.metric} "
        f"({plan.objective.direction})"
    )
    return study


def study_stopped(stopped: Stopped, number: int) -> Stopped:
    return Stopped(
        f"{signal.Signals(stopped.signal_number).name}: the study stopped during trial {number} (at its step "
        f"{stopped.step}). Run the same `tunewise tune` command again to continue the study: trial {number} runs "
        "again from its start, the finished trials stay.",
        stopped.signal_number,
        stopped.step,
    )


def next_trial(study: optuna.Study | None, trials: int, deadline: float | None) -> optuna.Trial | None:
    """The next trial to run, or None when the study holds `trials` finished ones, the deadline has passed, or
    this process does not run the study."""
    if study is None or finished(study) >= trials or (deadline is not None and time.perf_counter() >= deadline):
        return None
    return study.ask()


def tell(plan: StudyPlan, study: optuna.Study, trial: optuna.Trial, outcome: Outcome, console: Console) -> None:
    """Record a trial's end in the study, keep only the best trial's weights, and rewrite trials.csv."""
    for key, value in (("best_step", outcome.best_step), ("seconds", outcome.seconds), (ERROR, outcome.error)):
        if value is not None:
            trial.set_user_attr(key, value)
    complete = outcome.state == TrialState.COMPLETE
    study.tell(trial, outcome.value if complete else None, state=outcome.state)
    keep_best_weights(study, plan.trials_dir)
    write_trials_csv(trial_rows(study, plan.trials_dir), plan.tune_dir / TRIALS_CSV)
    best = best_trial(study)
    if outcome.error is not None:
        console.print(f"[yellow]trial {trial.number} failed:[/] {outcome.error}", highlight=False)
        return
    shown = "" if outcome.value is None else f" {plan.objective.metric} {outcome.value:.4f}"
    mark = " (best so far)" if best is not None and best.number == trial.number else ""
    state = outcome.state.name.lower()
    console.print(f"[bold]trial {trial.number}[/] {state}:{shown} at step {outcome.best_step}{mark}")


def finish_study(plan: StudyPlan, study: optuna.Study, console: Console) -> TuneResult:
    """The best trial scored on test (once: a continued study with the same best does not score it again), the
    study's files written, and the result; no completed trial is an error that points at trials.csv."""
    rows = trial_rows(study, plan.trials_dir)
    write_trials_csv(rows, plan.tune_dir / TRIALS_CSV)
    draw_history(study, plan.objective.metric, plan.tune_dir / HISTORY_PLOT)
    measured, why_not = importances(study, plan.seed, plan.tune_dir / IMPORTANCE_PLOT)
    best = best_trial(study)
    record: dict[str, Any] = {
        "study": plan.name,
        "storage": storage_label(plan.storage),
        "metric": plan.objective.metric,
        "direction": plan.objective.direction,
    }
    counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in STATES}
    study_record = {"trials": counts, "importances": measured, "importances_note": why_not}
    if best is None:
        write_json(plan.tune_dir / BEST_FILE, {**record, "trial": None, **study_record, "note": "no trial completed"})
        failed = next((row["note"] for row in rows if row["note"]), "")
        raise TunewiseError(
            f"None of the {len(rows)} trial(s) completed, so there is no best one; each trial's state and error are "
            f"in {plan.tune_dir / TRIALS_CSV}. {f'The first: {failed}' if failed else ''}".strip()
        )
    folder = trial_folder(plan.trials_dir, best.number)
    assert best.value is not None  # a complete trial's
    test, test_note = score_best_once(plan, best.number, folder, console)
    replay = plan.output_dir / REPLAY_FOLDER
    write_best_config(plan.config, best.params, plan.tune_dir / BEST_CONFIG, replay)
    record.update(
        trial=best.number,
        params=best.params,
        validation=best.value,
        best_step=best.user_attrs.get("best_step"),
        folder=str(folder),
        test=test,
        test_note=test_note,
        **study_record,
        note=NOTE,
    )
    write_json(plan.tune_dir / BEST_FILE, record)
    return TuneResult(
        plan.output_dir,
        plan.objective.metric,
        plan.objective.direction,
        best.number,
        best.params,
        best.value,
        test,
        folder,
        rows,
        study,
    )


def score_best_once(
    plan: StudyPlan, number: int, folder: Path, console: Console
) -> tuple[dict[str, Any] | None, str | None]:
    """The best trial's test metrics (scored now, or read back when best.json already holds them for this trial),
    or None and why there are none."""
    test_file = plan.config.data.test
    if test_file is None:
        return None, "the config has no data.test, so no test score; validation chose this trial, so it is optimistic"
    if not (folder / MODEL_FOLDER).is_dir():
        return None, f"{folder} holds no model (a trial added to the study elsewhere), so it was not scored on test"
    previous = read_json(plan.tune_dir / BEST_FILE) or {}
    if previous.get("trial") == number and previous.get("test") is not None:
        return previous["test"], None
    console.print(f"scoring the best trial ({number}) on the test split, once")
    return score_on_test(folder, test_file, console), None
