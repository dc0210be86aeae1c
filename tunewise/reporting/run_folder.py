"""The run folder: what goes in it, and the rule that nothing in it is replaced without being asked.

A folder that already holds a run is refused unless the user says `overwrite` (start again) or
`resume` (continue the same config from its last checkpoint). A folder with other files is never
cleared: even with `overwrite`, only the files tunewise itself writes are removed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tunewise.errors import ConfigError, DataError

RUN_FILE = "run.json"
AUDIT_FOLDER = "audit"
ARTIFACTS = (
    "model",
    "adapter",
    "checkpoints",
    "plots",
    "config.yaml",
    "metrics.json",
    "history.jsonl",
    "predictions.csv",
    "fairness.json",
    "privacy.json",
    "report.html",
    "model_card.md",
    RUN_FILE,
)


def check_run_dir(run_dir: Path, requested: dict, data_sha256: dict[str, str], overwrite: bool, resume: bool) -> None:
    """Refuse a folder that cannot take this run. Changes nothing: clearing waits for `start_run_dir`."""
    if overwrite and resume:
        raise ConfigError("Choose one of --overwrite (start again) and --resume (continue), not both.")
    # the data check writes `audit/` into the folder before training: it belongs to the coming run
    existing = [p for p in run_dir.iterdir() if p.name != AUDIT_FOLDER] if run_dir.is_dir() else []
    if not existing:
        if resume:
            raise ConfigError(f"--resume: {run_dir} holds no run to resume. Drop --resume to start one.")
        return
    record = run_dir / RUN_FILE
    if not record.is_file():
        raise ConfigError(
            f"output_dir {run_dir} already holds other files ({', '.join(sorted(p.name for p in existing)[:5])}). "
            "Choose an empty or new output_dir (e.g. --set output_dir=runs/new); tunewise will not clear it."
        )
    previous_record = json.loads(record.read_text(encoding="utf-8"))
    previous = previous_record.get("requested_config", {})
    if resume:
        changed = [
            split
            for split, digest in data_sha256.items()
            if previous_record.get("data_sha256", {}).get(split) != digest
        ]
        if changed:
            raise DataError(
                f"--resume: the {', '.join(changed)} data changed since the run in {run_dir} started (its sha256 "
                "differs), so the resumed run would not continue the same training. Restore the data, or start "
                "again with --overwrite."
            )
        differences = config_differences(previous, requested, ignore={"output_dir"})
        if differences:
            raise ConfigError(
                f"--resume: the config differs from the run in {run_dir} at {', '.join(differences[:6])}. "
                "Resume with the same config, or start a new run with --overwrite or another output_dir."
            )
        return
    if not overwrite:
        same = not config_differences(previous, requested, ignore={"output_dir"})
        what = "this run already" if same else "a different run"
        raise ConfigError(
            f"output_dir {run_dir} holds {what}. Pass --overwrite to replace it, --resume to continue it, "
            "or choose another output_dir."
        )


def start_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create the folder; with `overwrite`, remove the previous run's artifacts (and nothing else)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        return
    for name in ARTIFACTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def config_differences(old: dict, new: dict, ignore: set[str], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    differences = []
    for key in sorted(set(old) | set(new)):
        dotted = f"{prefix}{key}"
        if dotted in ignore:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, ignore, prefix=f"{dotted}.")
        elif a != b:
            differences.append(dotted)
    return differences
