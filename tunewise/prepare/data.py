"""Read every data file once, learn the label space, hold out validation, and apply the data settings.

What cannot be read or checked is collected, not raised at the first problem: the data check turns
the problems into findings, and training reports them all together before any model work.
"""

from __future__ import annotations

import pandas as pd

from tunewise.audit.check import leaks_by_split
from tunewise.audit.duplicates import Leak
from tunewise.config.sections import RunConfig
from tunewise.data.augmentation import augment_counterfactual
from tunewise.data.readers import file_fingerprint
from tunewise.data.splits import split_train_validation
from tunewise.errors import DataError, TunewiseError
from tunewise.prepare.plan import PreparedData
from tunewise.tasks import Task
from tunewise.types import SPLITS


def prepare_data(task: Task, config: RunConfig, labels_known: bool = False) -> PreparedData:
    """The run's data, exactly as training splits it. `labels_known`: the task already holds its label
    space (a trained run's model), so it is not learnt again, only checked against."""
    problems: list[TunewiseError] = []
    files, sources = read_files(task, config, problems)
    frames: dict[str, pd.DataFrame] = {}
    if "train" in files and not problems_in(problems, "train"):
        frames = split(task, config, files, sources, problems, labels_known)
    members = training_rows = leaks = None
    dropped = augmented = 0
    if "train" in frames:
        if config.data.dedupe:
            leaks = leaks_by_split(frames, list(task.facts().text_columns), config)
        members, dropped = drop_leaked_rows(frames["train"], leaks)
        training_rows = members
        if config.fairness.augment and task.facts().capabilities.fairness:
            training_rows = augment_counterfactual(
                members, config.data.text_column, config.fairness.counterfactual_pairs
            )
            augmented = len(training_rows) - len(members)
    return PreparedData(
        files=files,
        frames=frames,
        members=members,
        training_rows=training_rows,
        sources=sources,
        fingerprints={split: fingerprint(frame, sources[split]) for split, frame in files.items()},
        dropped_rows=dropped,
        augmented_rows=augmented,
        problems=problems,
        leaks=leaks,
    )


def read_files(
    task: Task, config: RunConfig, problems: list[TunewiseError]
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Each named file, parsed once; a file that does not read is a problem, and the others still are read."""
    files, sources = {}, {}
    for split in SPLITS:
        source = getattr(config.data, split)
        if source is None:
            continue
        sources[split] = source
        try:
            files[split] = task.data.read(source, split)
        except DataError as error:
            error.split = split  # type: ignore[attr-defined]
            problems.append(error)
    return files, sources


def split(
    task: Task,
    config: RunConfig,
    files: dict[str, pd.DataFrame],
    sources: dict[str, str],
    problems: list[TunewiseError],
    labels_known: bool,
) -> dict[str, pd.DataFrame]:
    """Learn labels from train, hold out validation when none is named, and check the evaluation splits."""
    frames = dict(files)
    try:
        if not labels_known:
            task.data.learn(frames["train"])
        if "validation" not in frames and config.data.validation is None:
            frames["train"], frames["validation"] = split_train_validation(
                frames["train"],
                config.data.label_column,
                config.data.validation_ratio,
                config.train.seed,
                stratify=task.facts().capabilities.stratified_split,
            )
            sources["validation"] = f"{config.data.train} (held out)"
    except DataError as error:
        error.split = "train"  # type: ignore[attr-defined]
        problems.append(error)
        return {}
    for name in ("validation", "test"):
        if name in frames:
            try:
                task.data.check(frames[name], name, sources[name])
            except DataError as error:
                error.split = name  # type: ignore[attr-defined]
                problems.append(error)
    return frames


def drop_leaked_rows(train: pd.DataFrame, leaks: dict[str, list[Leak]] | None) -> tuple[pd.DataFrame, int]:
    """data.dedupe: train without the rows whose text also stands in validation or test (exactly or nearly)."""
    leaked = {row for split_leaks in (leaks or {}).values() for leak in split_leaks for row in leak.train_rows}
    if not leaked:
        return train, 0
    return train[~train["_row"].isin(leaked)].reset_index(drop=True), len(leaked)


def fingerprint(frame: pd.DataFrame, source: str) -> str:
    """The sha256 the reader took of the bytes it parsed, or of the file itself."""
    return frame.attrs.get("sha256") or file_fingerprint(source)


def problems_in(problems: list[TunewiseError], split: str) -> bool:
    return any(getattr(problem, "split", None) == split for problem in problems)
