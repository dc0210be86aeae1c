"""The rule that nothing in a run folder is replaced without being asked, checked before any work.

A folder that already holds a run is refused unless the user says `overwrite` (start again) or
`resume` (continue the same config from its last checkpoint). A folder with other files is never
cleared: even with `overwrite`, only the files tunewise itself writes are removed. A path that is a
file, or a place the user cannot write, is refused before the data is even read. Export folders
(`tunewise export`) follow the same rule: an export is replaced only with `overwrite`, a folder of
other files never, and a new export appears whole or not at all (`place_export`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import uuid
from pathlib import Path

from tunewise.errors import ConfigError, DataError
from tunewise.runs.atomic import is_leftover, remove_leftovers
from tunewise.runs.layout import ARTIFACTS, AUDIT_FOLDER, CHECKPOINT_FOLDER, EXPORT_FILE, RUN_FILE


def check_output_dir(run_dir: Path) -> None:
    """output_dir must be a folder tunewise can create or write into."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(
            f"output_dir {run_dir} is a file, not a folder; tunewise writes a run folder there. Choose another "
            "output_dir (e.g. --set output_dir=runs/new), or move the file."
        )
    existing = next((folder for folder in (run_dir, *run_dir.parents) if folder.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(
            f"output_dir {run_dir}: {existing} is a file, so no folder can be made inside it. Choose another "
            "output_dir."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"output_dir {run_dir}: {existing} is not writable by this user, so the run folder cannot be written. "
            "Choose an output_dir you can write to (e.g. --set output_dir=runs/new)."
        )


def check_run_dir(run_dir: Path, requested: dict, data_sha256: dict[str, str], overwrite: bool, resume: bool) -> None:
    """Refuse a folder that cannot take this run. Changes nothing: clearing waits for `start_run_dir`."""
    if overwrite and resume:
        raise ConfigError("Choose one of --overwrite (start again) and --resume (continue), not both.")
    if run_dir.exists() and not run_dir.is_dir():
        return  # check_output_dir says what is wrong with it
    # the data check writes `audit/` into the folder before training: it belongs to the coming run; what an
    # interrupted write left (runs.atomic) is tunewise's own and goes when the run starts
    present = list(run_dir.iterdir()) if run_dir.is_dir() else []
    existing = [p for p in present if p.name != AUDIT_FOLDER and not is_leftover(p.name)]
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
    previous_record = _read_record(record)
    previous = previous_record.get("requested_config")
    if not isinstance(previous, dict):
        raise _unreadable(record, "it records no requested_config")
    previous_task = previous.get("task", "text-classification")
    if previous_task != requested.get("task") and not overwrite:
        raise ConfigError(
            f"output_dir {run_dir} holds a {previous_task} run, and this config is a {requested.get('task')} run. "
            "Choose another output_dir, or pass --overwrite to replace that run."
        )
    if resume:
        recorded = previous_record.get("data_sha256")
        recorded = recorded if isinstance(recorded, dict) else {}
        changed = [split for split, digest in data_sha256.items() if recorded.get(split) != digest]
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


def _read_record(record: Path) -> dict:
    try:
        content = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _unreadable(record, str(error)) from None
    if not isinstance(content, dict):
        raise _unreadable(record, f"it holds a JSON {type(content).__name__}, not an object")
    return content


def _unreadable(record: Path, why: str) -> ConfigError:
    return ConfigError(
        f"output_dir {record.parent} holds a {RUN_FILE} that cannot be read ({why}); it is not a run tunewise can "
        "continue or replace safely. Choose another output_dir, or remove the folder yourself."
    )


def start_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create the folder; with `overwrite`, remove the previous run's artifacts (and nothing else). What writes
    stopped by a kill left (hidden `.partial-` files, runs.atomic) goes in every case."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for folder in (run_dir, run_dir / CHECKPOINT_FOLDER):
        remove_leftovers(folder)
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


def check_export_dir(target: Path, overwrite: bool) -> None:
    """Refuse an export folder that cannot take this export. Changes nothing: `place_export` replaces."""
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--output {target} is a file; an export is a folder. Choose another --output.")
    existing = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
    if existing and not (target / EXPORT_FILE).is_file():
        raise ConfigError(
            f"--output {target} already holds other files ({', '.join(existing[:5])}). Choose an empty or new "
            "folder; tunewise will not clear it."
        )
    if existing and not overwrite:
        raise ConfigError(
            f"{target} already holds an export. Pass --overwrite to replace it, or choose another --output."
        )
    parent = next((folder for folder in target.parents if folder.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--output {target}: {parent} is not a folder this user can write into; choose another --output."
        )


def place_export(staging: Path, target: Path) -> None:
    """Move a finished export folder into place; an export already there (checked by `check_export_dir`)
    is moved aside first and removed only once the new one is in place."""
    if not target.exists():
        staging.rename(target)
        return
    previous = beside(target, "previous")
    target.rename(previous / target.name)
    staging.rename(target)
    shutil.rmtree(previous)


def beside(target: Path, purpose: str) -> Path:
    """A new hidden folder next to `target` (the same file system, so a rename moves it at once), made with
    the user's usual permissions."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.{purpose}-*"):  # a killed export's
        shutil.rmtree(leftover, ignore_errors=True)
    folder = target.parent / f".{target.name}.{purpose}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    return folder
