"""The tune job end to end on a tiny random BERT: the study's files, the best trial's folder and the others',
the objective (each trial's best validation, not its last), the test split withheld from every trial and
scored once, the best config replayed by `tunewise train`, pruning, a failed combination, a study continued
after a stop, the lock and the folder guard, and the errors that stop a study before any trial.

Every trial trains a 2-layer, 32-wide model on 96 rows for 36 steps with 9 evaluations (about 1-2 s on CPU).
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from conftest import deep_update, invoke_cli, make_config, read_json, sentiment_rows, write_csv
from optuna.trial import TrialState

from tunewise.api import TuneResult, tune
from tunewise.errors import ConfigError
from tunewise.jobs.tuning.channel import TrialChannel
from tunewise.jobs.tuning.study import Objective, default_study_name, finished
from tunewise.jobs.tuning.trial import PruningReport

LEARNING_RATE = {"log_uniform": [8e-3, 3e-2]}
SPACE = {"train.learning_rate": LEARNING_RATE, "train.warmup_ratio": {"uniform": [0.0, 0.3]}}


@pytest.fixture(scope="module")
def data(tmp_path_factory, single_label_data) -> dict[str, str]:
    """train (96 rows) and test (40) of the shared fixture, with a validation file of 32 rows, every 4th label
    wrong: as a model grows sure of the templates its validation loss falls, then rises again."""
    folder = tmp_path_factory.mktemp("tune-data")
    flipped = {"positive": "negative", "negative": "positive"}
    rows = [
        {**row, "label": flipped[row["label"]] if i % 4 == 0 else row["label"]}
        for i, row in enumerate(sentiment_rows(32, seed=11))
    ]
    return {**single_label_data, "validation": write_csv(folder / "validation.csv", rows)}


def tune_config(
    folder: Path, model_dir: Path, data: dict[str, str], tune: dict | None = None, **overrides: Any
) -> dict:
    """3 epochs of 12 steps, evaluated every 4 steps; early stopping never stops (patience 100); no pruner.
    `tune` replaces keys of the tune: section (its space whole); other overrides merge into the sections."""
    config = make_config(
        folder,
        model_dir,
        data,
        train={"epochs": 3, "eval_every": 4, "early_stopping": {"patience": 100}},
        output_dir=str(folder / "study"),
    )
    config["tune"] = {"space": dict(SPACE), "pruner": "none", "startup_trials": 2, **(tune or {})}
    return deep_update(config, overrides)


def run_tune(config: dict, trials: int, **options: Any) -> TuneResult:
    return tune(config, trials, show_progress=False, **options)


def trials_csv(result_dir: Path) -> pd.DataFrame:
    return pd.read_csv(result_dir / "tune" / "trials.csv")


def validation_values(folder: Path, metric: str = "f1_macro") -> list[tuple[int, float]]:
    lines = (folder / "history.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [(r["step"], r["metrics"][metric]) for r in records if r.get("split") == "validation"]


# ------------------------------------------------------------------------------------------ one study of 4 trials


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_model_dir, data) -> dict[str, Any]:
    """4 trials of the learning rate and warm-up judged by validation loss; every validation each trial's pruner
    report saw, by trial."""
    folder = tmp_path_factory.mktemp("tune-study")
    observed: dict[int, list[tuple[int, float]]] = {}
    real_report = PruningReport.__call__

    def observe(report: PruningReport, step: int, metrics: dict[str, Any]) -> None:
        assert report.trial is not None
        observed.setdefault(report.trial.number, []).append((step, metrics["loss"]))
        real_report(report, step, metrics)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PruningReport, "__call__", observe)
        result = run_tune(tune_config(folder, tiny_model_dir, data, tune={"metric": "loss"}), trials=4)
    return {"result": result, "observed": observed, "dir": folder / "study"}


def test_a_study_writes_trials_csv_best_json_and_the_plots(study):
    result, output_dir = study["result"], study["dir"]
    rows = trials_csv(output_dir)
    assert list(rows.columns) == ["number", "state", "value", "params", "best_step", "seconds", "folder", "note"]
    assert rows["number"].tolist() == [0, 1, 2, 3] and set(rows["state"]) == {"COMPLETE"}
    best_row = rows.loc[rows["value"].idxmin()]
    best = read_json(output_dir / "tune" / "best.json")
    assert best["trial"] == result.best_trial == best_row["number"]
    assert best["metric"] == result.metric == "loss" and best["direction"] == "minimize"
    assert best["validation"] == result.validation == pytest.approx(best_row["value"])
    assert best["params"] == result.params == json.loads(best_row["params"])
    assert best["trials"] == {"complete": 4, "pruned": 0, "fail": 0}
    assert Path(best["folder"]) == result.folder == output_dir / "trials" / f"trial-{result.best_trial:04d}"
    assert "test split, withheld from every trial, was scored once" in best["note"]
    assert (output_dir / "tune" / "history.png").stat().st_size > 0
    if best["importances"] is not None:
        assert set(best["importances"]) <= set(SPACE) and (output_dir / "tune" / "importance.png").is_file()
    else:
        assert best["importances_note"]
    assert isinstance(result.study, optuna.Study) and len(result.study.trials) == 4


def test_only_the_best_trial_keeps_its_weights(study):
    result, trials_dir = study["result"], study["dir"] / "trials"
    for number in range(4):
        folder = trials_dir / f"trial-{number:04d}"
        for kept in ("metrics.json", "history.jsonl", "run.json", "config.yaml"):
            assert (folder / kept).is_file(), (number, kept)
        if number == result.best_trial:
            assert (folder / "model" / "config.json").is_file()
            assert (folder / "report.html").is_file() and (folder / "model_card.md").is_file()
        else:
            assert not (folder / "model").exists() and not (folder / "checkpoints").exists()


def test_each_trial_is_judged_by_its_best_validation_not_its_last(study):
    rows, trials_dir = trials_csv(study["dir"]).set_index("number"), study["dir"] / "trials"
    ended_below_best = 0
    for number, observed in study["observed"].items():
        history = validation_values(trials_dir / f"trial-{number:04d}", "loss")
        assert observed == history and len(history) == 9  # the observer was told every evaluation the run recorded
        best_step, best_value = min(history, key=lambda item: (item[1], item[0]))  # the first of equal bests
        assert rows.loc[number, "value"] == pytest.approx(best_value)
        assert rows.loc[number, "best_step"] == best_step
        if history[-1][1] > best_value:
            ended_below_best += 1
            assert rows.loc[number, "value"] != pytest.approx(history[-1][1])
    assert ended_below_best, "no trial ended below its best evaluation; the test proves nothing"
    resolved = yaml.safe_load((study["result"].folder / "config.yaml").read_text(encoding="utf-8"))
    assert resolved["train"]["early_stopping"]["metric"] == "loss"  # tune.metric also picks each trial's model
    kept = read_json(study["result"].folder / "metrics.json")["validation"]["loss"]
    assert kept == pytest.approx(study["result"].validation)  # the run keeps the model of its best evaluation


def test_trials_never_see_the_test_split_and_the_best_is_scored_on_it_once(study):
    result, trials_dir = study["result"], study["dir"] / "trials"
    best = read_json(study["dir"] / "tune" / "best.json")
    for number in range(4):
        folder = trials_dir / f"trial-{number:04d}"
        record, metrics = read_json(folder / "run.json"), read_json(folder / "metrics.json")
        assert record["test_withheld"] is True
        if number != result.best_trial:
            assert set(metrics) == {"validation"} and "test" not in record["rows"]
            assert not (folder / "predictions.csv").exists()
            assert not (folder / "explanations.json").exists()  # trials skip explanations
    folder = result.folder
    metrics, record = read_json(folder / "metrics.json"), read_json(folder / "run.json")
    assert metrics["test"] == best["test"] == result.test and metrics["test"]["n"] == 40
    assert record["metrics"]["test"] == best["test"] and record["rows"]["test"] == 40
    assert "once" in record["test_scored"]["by"]
    assert len(pd.read_csv(folder / "predictions.csv")) == 40
    assert (folder / "plots" / "confusion_test.png").is_file()
    assert "test" in (folder / "model_card.md").read_text(encoding="utf-8")
    assert read_json(folder / "explanations.json")["split"] == "test"  # the chosen trial, explained on test once


def test_best_config_replays_with_tunewise_train_to_the_same_validation_score(study):
    result, tune_dir = study["result"], study["dir"] / "tune"
    replay_config = yaml.safe_load((tune_dir / "best_config.yaml").read_text(encoding="utf-8"))
    assert "tune" not in replay_config and replay_config["output_dir"] == str(study["dir"] / "best-replay")
    assert replay_config["train"]["learning_rate"] == result.params["train.learning_rate"]
    replayed = invoke_cli("train", tune_dir / "best_config.yaml")
    assert replayed.exit_code == 0, replayed.output
    replay = study["dir"] / "best-replay"
    assert validation_values(replay, "loss") == validation_values(result.folder, "loss")
    metrics = read_json(replay / "metrics.json")
    assert metrics["validation"]["loss"] == pytest.approx(result.validation)
    assert metrics["test"]["f1_macro"] == pytest.approx(result.test["f1_macro"])


# ------------------------------------------------------------------------------------------ pruning and failures


def test_the_report_tells_the_pruner_each_trials_best_so_far_and_stops_a_worse_one():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    objective, channel = Objective("f1_macro", "maximize"), TrialChannel(main=True, shared=False)
    first = study.ask()
    for step in (4, 8):
        first.report(0.9, step)
    study.tell(first, 0.9)
    rising = PruningReport(study.ask(), objective, channel)
    rising(4, {"f1_macro": 0.95})
    rising(8, {"f1_macro": 0.5})  # below the median, but the trial's best so far is above it
    assert study.trials[1].intermediate_values == {4: 0.95, 8: 0.95}
    assert (rising.best, rising.best_step) == (0.95, 4)
    worse = PruningReport(study.ask(), objective, channel)
    with pytest.raises(optuna.TrialPruned):
        worse(4, {"f1_macro": 0.2})


def test_a_pruned_trial_is_pruned_in_the_study_and_loses_its_weights(tmp_path, tiny_model_dir, data):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = tune_config(
        tmp_path,
        tiny_model_dir,
        data,
        train={"checkpoint_every": 2},
        tune={"space": {"train.learning_rate": {"log_uniform": [1e-7, 3e-2]}}, "pruner": "median", "startup_trials": 1},
    )
    planned = optuna.create_study(storage=storage, study_name=default_study_name_of(config), direction="maximize")
    planned.enqueue_trial({"train.learning_rate": 2e-2})  # learns the templates by its 3rd evaluation
    planned.enqueue_trial({"train.learning_rate": 1e-7})  # learns nothing: below the median from its 2nd evaluation
    result = run_tune(config, trials=2, storage=storage)
    states = [trial.state for trial in result.study.trials] if result.study else []
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]
    pruned = tmp_path / "study" / "trials" / "trial-0001"
    assert not (pruned / "model").exists() and not (pruned / "checkpoints").exists()
    assert read_json(pruned / "run.json")["status"] == "pruned"
    assert (tmp_path / "study" / "trials" / "trial-0000" / "model").is_dir()
    assert trials_csv(tmp_path / "study")["state"].tolist() == ["COMPLETE", "PRUNED"]


def default_study_name_of(config: dict) -> str:
    from tunewise.tasks import load_config

    return default_study_name(load_config(config))


def test_a_combination_the_run_refuses_fails_that_trial_only(tmp_path, tiny_model_dir, data):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = {"strategy.method": {"choice": ["full", "last_n_layers"]}, "strategy.n_layers": {"choice": [1, 5]}}
    config = tune_config(tmp_path, tiny_model_dir, data, tune={"space": space})
    planned = optuna.create_study(storage=storage, study_name=default_study_name_of(config), direction="maximize")
    planned.enqueue_trial({"strategy.method": "last_n_layers", "strategy.n_layers": 5})  # the model has 2 layers
    planned.enqueue_trial({"strategy.method": "full", "strategy.n_layers": 1})
    result = run_tune(config, trials=2, storage=storage)
    rows = trials_csv(tmp_path / "study")
    assert rows["state"].tolist() == ["FAIL", "COMPLETE"] and result.best_trial == 1
    assert "n_layers" in rows.loc[0, "note"]


# ------------------------------------------------------------------------------------------ continuing a study


def test_a_stopped_study_continues_and_runs_its_stopped_trial_again(tmp_path, tiny_model_dir, data):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = tune_config(tmp_path, tiny_model_dir, data, tune={"space": {"train.learning_rate": LEARNING_RATE}})
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    first = invoke_cli("tune", path, "--trials", 2, "--storage", storage)
    assert first.exit_code == 0, first.output
    # a process stopped mid-trial: its trial is left RUNNING with its values drawn, its folder half written
    stopped = optuna.load_study(study_name=default_study_name_of(config), storage=storage).ask()
    stopped_rate = stopped.suggest_float("train.learning_rate", *LEARNING_RATE["log_uniform"], log=True)
    half_written = tmp_path / "study" / "trials" / "trial-0002"
    half_written.mkdir()
    (half_written / "config.yaml").write_text("task: text-classification\n", encoding="utf-8")

    again = invoke_cli("tune", path, "--trials", 4, "--storage", storage)
    assert again.exit_code == 0, again.output
    assert "trial(s) 2 stopped with their process" in again.output
    study = optuna.load_study(study_name=default_study_name_of(config), storage=storage)
    trials = study.trials
    complete, fail = TrialState.COMPLETE, TrialState.FAIL
    assert [trial.state for trial in trials] == [complete, complete, fail, complete, complete]
    assert trials[3].user_attrs["retry_of"] == 2 and trials[3].params == {"train.learning_rate": stopped_rate}
    assert finished(study) == 4
    assert not half_written.exists()
    rows = trials_csv(tmp_path / "study").set_index("number")
    assert rows.loc[2, "note"] == "stopped with its process; its values ran again as trial 3"
    assert "best.json" in again.output and "best_config.yaml" in again.output

    done = invoke_cli("tune", path, "--trials", 4, "--storage", storage)  # nothing left to run: the same best
    assert done.exit_code == 0, done.output
    assert len(optuna.load_study(study_name=default_study_name_of(config), storage=storage).trials) == 5
    assert "on the test split, once" not in done.output


def test_another_process_running_the_study_is_refused(tmp_path, tiny_model_dir, data):
    config = tune_config(tmp_path, tiny_model_dir, data)
    (tmp_path / "study" / "tune").mkdir(parents=True)
    with open(tmp_path / "study" / "tune" / "lock", "a", encoding="utf-8") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="Another `tunewise tune` is running the study"):
            run_tune(config, trials=1)


def test_a_folder_of_other_files_is_not_a_study(tmp_path, tiny_model_dir, data):
    config = tune_config(tmp_path, tiny_model_dir, data)
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "run.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"already holds other files \(run.json\).*--set output_dir="):
        run_tune(config, trials=1)


def test_another_studys_folder_is_refused(tmp_path, tiny_model_dir, data):
    config = tune_config(tmp_path, tiny_model_dir, data)
    (tmp_path / "study" / "tune").mkdir(parents=True)
    (tmp_path / "study" / "tune" / "study.json").write_text('{"study_name": "other", "storage": "x"}', "utf-8")
    with pytest.raises(ConfigError, match=r"holds the study 'other' in x\. Continue it with the same --storage"):
        run_tune(config, trials=1)


# ------------------------------------------------------------------------------------------ stopped before any trial


def test_a_config_without_tune_says_what_to_add(tmp_path, tiny_model_dir, data):
    config = make_config(tmp_path, tiny_model_dir, data)
    with pytest.raises(ConfigError, match=r"(?s)has no tune: section.*train.learning_rate: \{log_uniform"):
        run_tune(config, trials=2)
    with pytest.raises(ConfigError, match=r"has an empty tune\.space"):
        run_tune({**config, "tune": {}}, trials=2)


@pytest.mark.parametrize(
    ("tune_section", "fragment"),
    [
        (
            {"space": {"train.learning_rate": {"log_uniform": [1e-4, 2.0]}}},
            "tune.space train.learning_rate: 2.0 is not a value it takes: train.learning_rate: learning_rate must "
            "be between 0 and 1",
        ),
        ({"space": SPACE, "metric": "bleu"}, "tune.metric 'bleu' is not reported for text-classification"),
        ({"space": SPACE, "direction": "minimize"}, "tune.direction minimize contradicts f1_macro"),
    ],
)
def test_a_space_or_metric_that_cannot_work_stops_before_any_trial(
    tmp_path, tiny_model_dir, data, tune_section, fragment
):
    config = tune_config(tmp_path, tiny_model_dir, data, tune=tune_section)
    with pytest.raises(ConfigError) as raised:
        run_tune(config, trials=2)
    assert fragment in " ".join(str(raised.value).split())
    assert not (tmp_path / "study").exists()


def test_cli_tune_without_a_tune_section_exits_1_without_a_traceback(tmp_path, tiny_model_dir, data):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(make_config(tmp_path, tiny_model_dir, data)), encoding="utf-8")
    result = invoke_cli("tune", path, "--trials", 2)
    assert result.exit_code == 1 and "has no tune: section" in result.output
    assert "Traceback" not in result.output
