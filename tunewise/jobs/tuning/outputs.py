"""What a study leaves in output_dir/tune/: trials.csv, best_config.yaml, the plots and the importances.

Everything here is rebuilt from the study itself (its trials and their user attributes), so a study
continued by a later invocation writes the same files as one that ran in one go.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import yaml
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from tunewise.config.sections import RunConfig
from tunewise.jobs.tuning.space import trial_config, with_values
from tunewise.jobs.tuning.study import ERROR, RETRY_OF, trial_folder
from tunewise.runs.atomic import replacing, write_text

TRIALS_CSV = "trials.csv"
BEST_FILE = "best.json"
BEST_CONFIG = "best_config.yaml"
HISTORY_PLOT = "history.png"
IMPORTANCE_PLOT = "importance.png"
COLUMNS = ("number", "state", "value", "params", "best_step", "seconds", "folder", "note")


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's line per trial and its experimental-feature warnings (the matplotlib plots) stay out of
    tunewise's output, which prints its own."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def trial_rows(study: optuna.Study, trials_dir: Path) -> list[dict[str, Any]]:
    """One row per trial, as trials.csv and the summary table show it."""
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs[RETRY_OF]: trial.number for trial in trials if RETRY_OF in trial.user_attrs}
    return [
        {
            "number": trial.number,
            "state": trial.state.name,
            "value": trial.value,
            "params": json.dumps(trial.params, sort_keys=True),
            "best_step": trial.user_attrs.get("best_step"),
            "seconds": trial.user_attrs.get("seconds"),
            "folder": str(folder) if (folder := trial_folder(trials_dir, trial.number)).is_dir() else "",
            "note": _note(trial, retried),
        }
        for trial in trials
    ]


def _note(trial: FrozenTrial, retried: dict[int, int]) -> str:
    if ERROR in trial.user_attrs:
        return str(trial.user_attrs[ERROR])
    if trial.state == TrialState.FAIL:
        again = f"; its values ran again as trial {retried[trial.number]}" if trial.number in retried else ""
        return f"stopped with its process{again}"
    if RETRY_OF in trial.user_attrs:
        return f"the values of trial {trial.user_attrs[RETRY_OF]}, run again"
    return ""


def write_trials_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with replacing(path) as temporary:
        pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(temporary, index=False)


def write_best_config(config: RunConfig, params: dict[str, Any], path: Path, replay_dir: Path) -> None:
    """The user's config with the best values in it and no tune: section, ready for `tunewise train` (into
    `replay_dir`). Validated before it is written, so it loads."""
    raw = with_values(config, params, str(replay_dir))
    trial_config(config, params, str(replay_dir))
    header = "# the best trial's values in the config `tunewise tune` ran; train it with: tunewise train this.yaml\n"
    write_text(path, header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))


def draw_history(study: optuna.Study, metric: str, path: Path) -> None:
    """Each trial's value and the best so far (Optuna's optimisation history)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    axes = optuna.visualization.matplotlib.plot_optimization_history(study, target_name=f"validation {metric}")
    _save(axes.figure, path)


def importances(study: optuna.Study, seed: int, path: Path) -> tuple[dict[str, float] | None, str | None]:
    """fANOVA importances of the searched fields (and their plot), or None and why they were not measured."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None, f"importances need at least 2 complete trials; the study has {len(complete)}"
    names = sorted({name for trial in complete for name in trial.params})
    varying = [name for name in names if len({repr(trial.params.get(name)) for trial in complete}) > 1]
    if not varying:
        return None, "importances need a searched field whose value differs between complete trials"
    if len({trial.value for trial in complete}) < 2:
        return None, "every complete trial scored the same, so no field explains a difference"
    measured = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed), params=varying)
    axes = optuna.visualization.matplotlib.plot_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=seed), params=varying
    )
    _save(axes.figure, path)
    return {name: round(float(value), 4) for name, value in measured.items()}, None


def _save(figure: Any, path: Path) -> None:
    figure.set_size_inches(7, 4)
    figure.tight_layout()
    with replacing(path) as temporary:
        figure.savefig(temporary, dpi=110)
    plt.close(figure)


def summary_table(rows: list[dict[str, Any]], metric: str, direction: str, best: int | None) -> Table:
    """The trials as the CLI prints them at the end, the best one marked."""
    table = Table(title=f"trials: {metric} on validation ({direction})")
    for column in ("trial", "state", metric, "values", "best step", "seconds", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        mark = "[bold green]" if row["number"] == best else ""
        values = ", ".join(f"{key}={_short(v)}" for key, v in json.loads(row["params"]).items())
        table.add_row(
            f"{mark}{row['number']}{' (best)' if mark else ''}",
            row["state"].lower(),
            value,
            values,
            "" if row["best_step"] is None else str(row["best_step"]),
            "" if row["seconds"] is None else f"{row['seconds']:.0f}",
            row["note"],
        )
    return table


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
