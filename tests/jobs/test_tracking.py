"""Experiment tracking through Accelerate's trackers: TensorBoard event files and a local MLflow store."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import make_config

import tunewise
from tunewise.errors import ConfigError
from tunewise.jobs import tracking


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, single_label_data: dict[str, str]):
    tmp_path = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = make_config(
        tmp_path, tiny_model_dir, single_label_data, tracking=["tensorboard", "mlflow"], tracking_uri=uri,
        train={"epochs": 2, "eval_every": 5},
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # MLflow's artifacts go to ./mlruns, as its own default has it
        run = tunewise.train(config, show_progress=False)
    assert (tmp_path / "mlruns").is_dir()
    return run, uri


def test_tensorboard_has_the_losses_and_every_validation(tracked_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = tracked_run
    events = list((run.run_dir / tracking.TENSORBOARD_FOLDER).rglob("events.out.tfevents.*"))
    assert events
    scalars: dict[str, list] = {}
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(accumulator.Scalars(tag))
    validations = [h for h in run.history if h.get("split") == "validation"]
    assert [e.step for e in scalars["validation/accuracy"]] == [h["step"] for h in validations]
    assert scalars["validation/loss"][-1].value == pytest.approx(validations[-1]["metrics"]["loss"], rel=1e-5)
    logged = [h for h in run.history if "loss" in h and "split" not in h]
    assert [e.step for e in scalars["train/loss"]] == [h["step"] for h in logged]
    assert scalars["final/test/accuracy"][0].value == pytest.approx(run.metrics["test"]["accuracy"])


def test_mlflow_has_the_parameters_metrics_and_run_folder(tracked_run) -> None:
    from mlflow.tracking import MlflowClient

    run, uri = tracked_run
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(tracking.PROJECT)
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.status == "FINISHED"
    assert float(logged.data.params["train.learning_rate"]) == run.config.train.learning_rate
    assert logged.data.params["task"] == "text-classification"
    history = client.get_metric_history(logged.info.run_id, "validation/loss")
    assert len(history) == len([h for h in run.history if h.get("split") == "validation"])
    assert logged.data.metrics["final/test/accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    artifacts = {item.path for item in client.list_artifacts(logged.info.run_id)}
    assert {"metrics.json", "run.json", "report.html", "model_card.md", "model"} <= artifacts
    assert "checkpoints" not in artifacts


def test_tracking_is_off_by_default(tmp_path: Path, tiny_model_dir: Path, single_label_data: dict[str, str]) -> None:
    monkey_cwd = tmp_path / "cwd"
    monkey_cwd.mkdir()
    config = make_config(tmp_path, tiny_model_dir, single_label_data, train={"epochs": 1})
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(monkey_cwd)
        run = tunewise.train(config, show_progress=False)
    assert not (run.run_dir / tracking.TENSORBOARD_FOLDER).exists()
    assert list(monkey_cwd.iterdir()) == []  # no mlflow.db, no mlruns/


def test_a_tracker_that_is_not_installed_is_named_before_any_work(
    tmp_path: Path, tiny_model_dir: Path, single_label_data: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real_find_spec(name, *a)
    )
    config = make_config(tmp_path, tiny_model_dir, single_label_data, tracking=["mlflow"])
    with pytest.raises(ConfigError, match=r"tracking: mlflow is not installed.*pip install"):
        tunewise.train(config, show_progress=False)
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_is_a_config_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="tracking"):
        tunewise.train(make_config(tmp_path, tiny_model_dir, tracking=["wandb"]), show_progress=False)


def test_nested_config_becomes_dotted_scalar_parameters() -> None:
    flat = tracking.flat_parameters({"train": {"learning_rate": 1e-3, "early_stopping": None}, "tracking": ["mlflow"]})
    assert flat == {"train.learning_rate": 1e-3, "train.early_stopping": "None", "tracking": "['mlflow']"}
