"""Counterfactual and group-balancing transforms of the training rows (fairness mitigations).

They change the data, so they live beside it: preparation applies them to the training rows once;
the fairness measurement (`tunewise.evaluation.fairness`) swaps the same words in evaluation texts to
see how far a prediction moves when only the identity changes.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd


def swap_terms(text: str, first: str, second: str) -> str:
    """The text with whole-word `first` and `second` exchanged, keeping each word's capitalisation."""
    pattern = re.compile(r"\b(" + re.escape(first) + "|" + re.escape(second) + r")\b", re.IGNORECASE)

    def replace(match: re.Match) -> str:
        word = match.group(0)
        other = second if word.lower() == first.lower() else first
        if word.isupper() and len(word) > 1:
            return other.upper()
        return other.capitalize() if word[0].isupper() else other

    return pattern.sub(replace, text)


def counterfactual_texts(texts: list[str], pairs: list[tuple[str, str]]) -> list[tuple[int, str, str]]:
    """(row, pair name, swapped text) for every text a pair changes."""
    changed = []
    for first, second in pairs:
        for row, text in enumerate(texts):
            swapped = swap_terms(text, first, second)
            if swapped != text:
                changed.append((row, f"{first}<->{second}", swapped))
    return changed


def augment_counterfactual(frame: pd.DataFrame, text_column: str, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Counterfactual data augmentation: the rows, then for every row holding a pair's word a copy
    with that word swapped and the same label (it keeps its `_row`, so findings still point home)."""
    texts = frame[text_column].astype(str).tolist()
    changed = counterfactual_texts(texts, pairs)
    if not changed:
        return frame
    copies = frame.iloc[[row for row, _, _ in changed]].copy()
    copies[text_column] = [text for _, _, text in changed]
    return pd.concat([frame, copies], ignore_index=True)


def group_label_weights(groups: pd.Series, labels: pd.Series) -> np.ndarray:
    """Per-row weights 1 / (rows in the row's group x label cell), scaled to average 1: every cell
    then weighs the same in training (Kamiran & Calders' reweighing, as a sampling weight)."""
    cells = groups.astype(str) + "\x1f" + labels.astype(str)
    weights = 1.0 / cells.map(cells.value_counts()).to_numpy(dtype=np.float64)
    return weights * len(weights) / weights.sum()
