"""Hold out a validation share of the training data when the user gives no validation file.

Stratified by default so that small classes appear in both parts; the checks here turn sklearn's
terse ValueErrors into messages that say which class is too small and what to do about it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np
import pandas as pd

from tunewise.data.readers import ROW_COLUMN, cite_rows
from tunewise.errors import DataError


def split_train_validation(
    frame: pd.DataFrame, label_column: str, ratio: float, seed: int, stratify: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `frame` into (train, validation), `ratio` of the rows (rounded up) going to validation.

    `stratify` keeps each class's share equal in both parts; pass False for regression and for tasks
    without labels (the label column is then never read). Multi-label rows
    (lists) cannot be stratified and are split at random. Both frames get a fresh index and keep `_row`.
    A reader that sets `frame.attrs["group_column"]` (e.g. the article of a SQuAD question) gets whole
    groups on each side instead, so no group's rows stand in both parts.
    """
    from sklearn.model_selection import train_test_split  # slow to import: only when needed

    where = frame.attrs.get("source", "training data")
    if not 0.0 < ratio < 1.0:
        raise DataError(f"data.validation_ratio must be between 0 and 1 (got {ratio}); 0.1 is a good default.")
    total = len(frame)
    n_validation = math.ceil(ratio * total)
    if total < 2 or n_validation >= total:
        raise DataError(
            f"{where}: {total} row(s) are too few to hold out a validation share. "
            "Add more training rows, or give a separate validation file as data.validation."
        )
    group_column = frame.attrs.get("group_column")
    if group_column in frame.columns:
        train_index, validation_index = _group_split(frame[group_column], n_validation, seed, where)
        return _take(frame, train_index), _take(frame, validation_index)
    target = None
    if stratify and all(isinstance(value, Hashable) for value in frame[label_column]):
        _check_stratifiable(frame, label_column, ratio, n_validation, where)
        target = frame[label_column].to_numpy()
    train_index, validation_index = train_test_split(
        np.arange(total), test_size=n_validation, random_state=seed, shuffle=True, stratify=target
    )
    return _take(frame, train_index), _take(frame, validation_index)


def _check_stratifiable(frame: pd.DataFrame, label_column: str, ratio: float, n_validation: int, where: str) -> None:
    """Every class needs a row in each part, and each part needs room for every class."""
    counts = frame[label_column].value_counts(sort=False)
    rare = counts[counts < 2]
    if len(rare):
        unit = frame.attrs.get("row_unit", "row")
        rows = frame[ROW_COLUMN] if ROW_COLUMN in frame.columns else pd.Series(np.arange(1, len(frame) + 1))
        details = "; ".join(
            f"{label!r}: {count} row ({cite_rows(rows[(frame[label_column] == label).to_numpy()], unit)})"
            for label, count in rare.items()
        )
        raise DataError(
            f"{where}: a stratified validation split needs at least 2 rows per class, but these classes have "
            f"fewer: {details}. Add rows for those classes, drop those rows, or give a separate validation file "
            "as data.validation."
        )
    classes = len(counts)
    total = len(frame)
    if n_validation < classes or total - n_validation < classes:
        needed = math.ceil(classes / total * 100) / 100
        raise_ratio = f"raise data.validation_ratio to at least {needed}, " if needed < 0.5 else ""
        raise DataError(
            f"{where}: data.validation_ratio {ratio} holds out {n_validation} of {total} rows, but there are "
            f"{classes} classes, so some classes would be missing from validation or training. Fix: "
            f"{raise_ratio}add training rows, or give a separate validation file as data.validation."
        )


def _group_split(groups: pd.Series, n_validation: int, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Whole groups, in a seeded random order, go to validation while they fit in n_validation rows
    (the smallest group when none fits), so validation holds about `ratio` of the rows."""
    sizes = groups.value_counts(sort=False)
    if len(sizes) < 2:
        raise DataError(
            f"{where}: every row belongs to one {groups.name} ({sizes.index[0]!r}), so no validation split can keep "
            f"{groups.name}s apart from training. Give a separate validation file as data.validation."
        )
    order = sizes.index[np.random.default_rng(seed).permutation(len(sizes))]
    chosen, held = [], 0
    for name in order:
        if held + sizes[name] <= n_validation:
            chosen.append(name)
            held += int(sizes[name])
    if not chosen:
        chosen = [sizes.idxmin()]
    in_validation = groups.isin(chosen).to_numpy()
    return np.flatnonzero(~in_validation), np.flatnonzero(in_validation)


def _take(frame: pd.DataFrame, index: np.ndarray) -> pd.DataFrame:
    """Rows in file order (easier to inspect; the trainer shuffles anyway), with a fresh RangeIndex."""
    part = frame.iloc[np.sort(index)].reset_index(drop=True)
    part.attrs = dict(frame.attrs)
    return part
