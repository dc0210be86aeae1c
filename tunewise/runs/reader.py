"""Reading a run folder back: where its model is, and the resolved config it was trained with.

Every command that starts from a finished run (predict, evaluate, audit privacy, report) comes here
first, so a path that is not a run folder, a run that has not finished or a config this version
cannot read is one clear error, named with what to point at instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunewise.config.sections import RunConfig
from tunewise.errors import ConfigError, DataError
from tunewise.runs.layout import CONFIG_FILE, METRICS_FILE, MODEL_FOLDER, RUN_FILE
from tunewise.tasks import load_config


def run_folder(path: str | Path) -> Path:
    """The run folder for a path to it or to its model/ folder; a path that is neither is a ConfigError."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist. Point at the output_dir of a finished `tunewise train`.")
    if path.is_file():
        raise ConfigError(f"{path} is a file; point at a run folder (the output_dir of a finished `tunewise train`).")
    run_dir = path.parent if (path / "config.json").is_file() and not (path / MODEL_FOLDER).is_dir() else path
    if not (run_dir / MODEL_FOLDER / "config.json").is_file():
        raise ConfigError(
            f"{path} is not a tunewise run folder: {run_dir / MODEL_FOLDER}/config.json is missing. Point at the "
            "output_dir of a finished `tunewise train`."
        )
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{run_dir} has no {CONFIG_FILE}; it was not written by tunewise train.")
    return run_dir


def run_config(run_dir: Path) -> RunConfig:
    """The resolved config the run was trained with (its config.yaml)."""
    try:
        return load_config(run_dir / CONFIG_FILE)
    except ConfigError as error:
        raise ConfigError(
            f"{run_dir / CONFIG_FILE} cannot be read by this version of tunewise ({error}). Train the run again, "
            "or use the tunewise version that wrote it."
        ) from None


def run_record(run_dir: Path) -> dict[str, Any]:
    """run.json, or {} for a folder without one (a model folder copied on its own)."""
    return read_json(run_dir / RUN_FILE) or {}


def changed_since_training(run_dir: Path, fingerprints: dict[str, str]) -> list[str]:
    """The splits whose data files hash differently now than when the run trained (run.json `data_sha256`),
    for a measurement made later from the run folder to say that it read other rows."""
    recorded = run_record(run_dir).get("data_sha256", {})
    return [split for split, digest in fingerprints.items() if split in recorded and recorded[split] != digest]


def finished_run(run_dir: Path) -> Path:
    """A folder holding a finished run, or a DataError that says what to do."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).is_file():
        raise DataError(
            f"{run_dir} holds no tunewise run (no {RUN_FILE}). Give the run folder that `tunewise train` wrote "
            "(the config's output_dir)."
        )
    if not (run_dir / METRICS_FILE).is_file():
        raise DataError(
            f"{run_dir} holds a run that has not finished (no {METRICS_FILE} yet). Let it finish, or continue it "
            f"with `tunewise train {run_dir / CONFIG_FILE} --resume`, then try again."
        )
    return run_dir


def read_json(path: Path) -> Any:
    """A JSON file's content, None when absent; a damaged file is a DataError naming it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(
            f"{path} is damaged ({error}); tunewise wrote it as JSON. Restore it, or rerun the step that writes it."
        ) from None
