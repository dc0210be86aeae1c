"""Which classifier the content screen uses, and every reason it cannot use it, found before any work.

The screen (`tunewise.serving.screen`) asks a text classifier whether a generated text is abusive. The
classifier is a tunewise run folder: the guard `tunewise guard build` trains from Davidson et al.'s
tweets into the cache (what `screen.classifier: auto` finds), or any run of the user's own. Whether a
run can serve is decided by what the run recorded about its task in run.json (one class per text,
reading text), never by its task's name, so a new classifying task qualifies without a change here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunewise.config.safety import GUARD_AUTO, ScreenConfig
from tunewise.data.token_cache import cache_base
from tunewise.errors import ConfigError, TunewiseError
from tunewise.runs.layout import CONFIG_FILE, METRICS_FILE, MODEL_FOLDER, RUN_FILE
from tunewise.runs.reader import read_json

GUARD_FILE = "guard.json"  # written by `tunewise guard build` into the guard's run folder: data, licence, quality
GUARD_NAME = "abusive-minilm-l6"
BUILD_HINT = "tunewise guard build --data labeled_data.csv"


def default_guard_dir() -> Path:
    """Where `tunewise guard build` puts the guard by default, and so where `auto` looks for it."""
    return cache_base() / "guards" / GUARD_NAME


def guard_folder(settings: ScreenConfig) -> Path | None:
    """The classifier's run folder: the configured one, the cached guard for auto (None until it is built),
    None when the screen has no classifier."""
    if not settings.enabled or settings.classifier is None:
        return None
    if settings.classifier == GUARD_AUTO:
        folder = default_guard_dir()
        return folder if folder.exists() else None
    return Path(settings.classifier)


def guard_record(folder: Path) -> dict[str, Any] | None:
    """guard.json of a classifier folder (data, licence, held-out quality), None for a run without one."""
    return read_json(folder / GUARD_FILE)


def screen_problems(settings: ScreenConfig) -> list[TunewiseError]:
    """Every reason the configured classifier cannot screen texts; [] when it can (or there is none)."""
    folder = guard_folder(settings)
    if folder is None:
        return []
    field = "screen.classifier"
    fix = (
        f"Give the folder of a finished text-classification run (a `tunewise train` output_dir), `auto` (after "
        f"`{BUILD_HINT}`), or null for a screen without a classifier."
    )
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        return [ConfigError(f"{field}: {folder} {what}. {fix}")]
    record = read_json(folder / RUN_FILE)
    if not isinstance(record, dict) or not (folder / MODEL_FOLDER / "config.json").is_file():
        return [
            ConfigError(f"{field}: {folder} is not a tunewise run folder (no {RUN_FILE} or {MODEL_FOLDER}/). {fix}")
        ]
    if (
        record.get("status") != "finished"
        or not (folder / METRICS_FILE).is_file()
        or not (folder / CONFIG_FILE).is_file()
    ):
        return [
            ConfigError(
                f"{field}: {folder} holds a run that has not finished. Let it finish (or continue it with "
                f"`tunewise train {folder / CONFIG_FILE} --resume`), or point at another run. {fix}"
            )
        ]
    task = record.get("task") or {}
    capabilities = task.get("capabilities") or {}
    if (
        not (capabilities.get("class_labels") and capabilities.get("reads_text"))
        or len(task.get("text_columns", [])) != 1
    ):
        return [
            ConfigError(
                f"{field}: {folder} is a {task.get('name', 'unknown')} run, which does not put one class on one text; "
                f"the screen needs a classifier of single texts. {fix}"
            )
        ]
    return flag_label_problems(settings, folder, list(task.get("label_names", [])))


def flag_label_problems(settings: ScreenConfig, folder: Path, labels: list[str]) -> list[TunewiseError]:
    """screen.flag_labels must name labels the classifier has (auto: the ones its guard.json records)."""
    if settings.flag_labels == "auto":
        record = guard_record(folder)
        if record is None:
            return [
                ConfigError(
                    f"screen.flag_labels: auto reads the labels that mean abusive from {folder / GUARD_FILE}, which "
                    f"this run lacks (it was not built by `{BUILD_HINT}`). Name them among its labels "
                    f"({', '.join(labels)}), e.g. flag_labels: [{labels[0] if labels else 'toxic'}]."
                )
            ]
        chosen = list(record.get("flag_labels", []))
    else:
        chosen = list(settings.flag_labels)
    unknown = [label for label in chosen if label not in labels]
    if unknown or not chosen:
        return [
            ConfigError(
                f"screen.flag_labels: {', '.join(unknown) or '(none)'} not among the labels of {folder} "
                f"({', '.join(labels)}). Name the labels that mean abusive from that list."
            )
        ]
    return []


def flag_labels(settings: ScreenConfig, folder: Path) -> list[str]:
    """The classifier's labels that flag a text; call after `screen_problems` found none."""
    if settings.flag_labels == "auto":
        record = guard_record(folder)
        assert record is not None, "screen_problems reports an auto flag_labels without guard.json"
        return list(record["flag_labels"])
    return list(settings.flag_labels)
