"""Experiment tracking (`tracking: [tensorboard, mlflow]`) through Accelerate's trackers. Off by default.

The train job opens the trackers once the run folder exists (the resolved config as parameters), the
training loop logs each log line and validation through `Accelerator.log`, and the job closes them
with the final metrics and, for MLflow, the run folder's files (checkpoints left out: they are for
resuming, and large). Only the process that writes the run folder logs. Nothing leaves the machine
unless `tracking_uri` names a server.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from tunewise.config.sections import RunConfig
from tunewise.errors import ConfigError
from tunewise.runs.layout import CHECKPOINT_FOLDER

PROJECT = "tunewise"  # MLflow's experiment, TensorBoard's top folder
TENSORBOARD_FOLDER = "tensorboard"
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # tracker -> the module it needs


def check_trackers(config: RunConfig) -> None:
    """Each tracker named must be installed: said before any work, with the command that installs it."""
    missing = [name for name in config.tracking if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        raise ConfigError(
            f"tracking: {', '.join(missing)} is not installed. Install it with `pip install 'tunewise[tracking]'` "
            f"(or pip install {' '.join('mlflow-skinny' if name == 'mlflow' else name for name in missing)}), "
            "or remove it from tracking."
        )


def tracker_options(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """The Accelerator's arguments for the trackers: none when tracking is off."""
    if not config.tracking:
        return {}
    return {"log_with": list(config.tracking), "project_dir": str(run_dir / TENSORBOARD_FOLDER)}


def start_tracking(accelerator: Accelerator, config: RunConfig, run_dir: Path) -> None:
    if not config.tracking:
        return
    if "mlflow" in config.tracking:
        import mlflow

        mlflow.set_tracking_uri(config.tracking_uri)
    accelerator.init_trackers(
        PROJECT,
        config=flat_parameters(config.model_dump(mode="json")),
        init_kwargs={"mlflow": {"run_name": run_dir.name}, "tensorboard": {}},
    )


def finish_tracking(accelerator: Accelerator, config: RunConfig, run_dir: Path, metrics: dict, step: int) -> None:
    """The final metrics of every split, the run folder's files (MLflow), and the trackers closed."""
    if not config.tracking:
        return
    final = {
        f"final/{split}/{name}": value
        for split, split_metrics in metrics.items()
        for name, value in split_metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    accelerator.log(final, step=step)
    if "mlflow" in config.tracking and accelerator.is_main_process:
        import mlflow

        for path in sorted(run_dir.iterdir()):
            if path.name in (CHECKPOINT_FOLDER, TENSORBOARD_FOLDER):
                continue
            if path.is_dir():
                mlflow.log_artifacts(str(path), artifact_path=path.name)
            else:
                mlflow.log_artifact(str(path))
    accelerator.end_training()


def abandon_tracking(config: RunConfig) -> None:
    """A run that stopped early (an error, a pruned trial, Ctrl-C) ends its MLflow run as failed, so the next
    run in this process starts its own instead of logging into it."""
    if "mlflow" not in config.tracking or importlib.util.find_spec("mlflow") is None:
        return
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED")


def flat_parameters(values: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """Nested config sections as dotted names (train.learning_rate), with lists and nulls as text: the
    trackers take scalars only."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_parameters(value, f"{name}."))
        elif isinstance(value, (str, int, float, bool)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat
