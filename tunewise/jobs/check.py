"""The check job: audit the data a plan prepared, write what was found, and stop training on errors.

`tunewise check` runs it on its own (`check`); `tunewise train` runs it first (`check_before_training`),
on the same frames it then trains on, so the data is parsed once per command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from tunewise.audit.check import audit_data
from tunewise.audit.datasheet import write_datasheet
from tunewise.audit.findings import Audit
from tunewise.audit.summary import print_audit
from tunewise.data.readers import ROW_COLUMN
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.prepare import Plan
from tunewise.reporting.plots import plot_class_balance, plot_length_histogram
from tunewise.runs.atomic import write_json
from tunewise.runs.layout import AUDIT_FOLDER
from tunewise.types import LABEL_PAD, EncodedSplit

AUDIT_JSON = "audit.json"
DATASHEET = "datasheet.md"


def run_check(plan: Plan) -> Audit:
    """Every check of the data check over the plan's data files, as read."""
    data, model = plan.data, plan.model

    def task_findings(frames: dict) -> list:
        return plan.task.data.findings(frames, model.processor, model.max_length)

    # the leaks data.dedupe found are the audit's own when no validation share was held out (the same frames)
    leaks = data.leaks if plan.config.data.validation is not None else None
    processor, max_length = model.processor, model.max_length
    return audit_data(data.files, data.problems, plan.facts, task_findings, processor, max_length, plan.config, leaks)


def check_before_training(plan: Plan, console: Console) -> Audit:
    """The data check of `tunewise check`; errors stop the run before any model work."""
    audit = run_check(plan)
    summary = audit.to_dict()["summary"]
    if not audit.passed():
        print_audit(audit, console)
        first = audit.by_severity("error")[0].message
        raise DataError(
            f"the data check found {summary['error']} error(s), listed above (first: {first}). Fix the data; for "
            "leakage, data.dedupe: true drops the leaked rows from training. To train anyway, pass --skip-check "
            "(audit.before_training: false)."
        )
    console.print(
        f"data check: {summary['warning']} warning(s), {summary['note']} note(s); the full audit goes to "
        f"{plan.run_dir / AUDIT_FOLDER} (see `tunewise check` for the table)"
    )
    return audit


@dataclass(frozen=True)
class TokenView:
    """One training row as the model sees it: its tokens and which of them the loss covers."""

    row: int  # the row number the user sees
    pieces: list[str]  # each token decoded on its own
    targets: list[bool] | None  # per token: in the loss; None when the row's label is not one per token
    label: str = ""  # the row's label, when it is not one per token
    problem: str = ""  # why the row cannot be encoded, instead of its tokens


def token_views(plan: Plan, count: int) -> list[TokenView]:
    """The first `count` training rows encoded one by one, as `tunewise check --show-tokens` prints
    them: what a person checks by eye when a template or a loss mask looks wrong."""
    if not plan.facts.capabilities.reads_text:
        raise ConfigError("--show-tokens shows text tokens; this task reads images.")
    frame = plan.data.files.get("train")
    if frame is None:
        return []
    processor, max_length = plan.model.processor, plan.model.max_length
    views = []
    for position in range(min(count, len(frame))):
        row = frame.iloc[[position]].reset_index(drop=True)
        row.attrs = frame.attrs
        number = int(frame[ROW_COLUMN].iloc[position])
        try:
            encoded = plan.task.data.encode(row, processor, max_length, "train")
        except TunewiseError as error:
            views.append(TokenView(number, [], None, problem=str(error)))
            continue
        views.append(_view(number, encoded, processor, plan.facts.label_names))
    return views


def _view(row: int, encoded: EncodedSplit, processor: Any, label_names: tuple[str, ...]) -> TokenView:
    ids = [int(token) for token in encoded.sequences["input_ids"][0]]
    labels = encoded.labels[0] if encoded.labels is not None and len(encoded.labels) else None
    per_token = labels is not None and np.ndim(labels) == 1 and len(labels) == len(ids) and len(encoded.label_keys) == 1
    targets = [int(label) != LABEL_PAD for label in labels] if per_token and labels is not None else None
    while ids and ids[-1] == encoded.pad_token_id and (targets is None or not targets[-1]):  # a packed row's tail
        ids.pop()
        if targets is not None:
            targets.pop()
    pieces = [processor.decode([token]) for token in ids]
    label = ""
    if not per_token and labels is not None:
        values = np.atleast_1d(labels).tolist()
        names = [
            label_names[int(v)] if label_names and float(v).is_integer() and 0 <= int(v) < len(label_names) else v
            for v in values
        ]
        label = ", ".join(str(name) for name in names)
    return TokenView(row, pieces, targets, label)


def write_check(audit: Audit, plan: Plan, folder: Path) -> Path:
    """audit.json (lengths summarised as a histogram), the class-balance and token-length plots, and the
    datasheet; returns the path of audit.json."""
    folder.mkdir(parents=True, exist_ok=True)
    statistics = audit.statistics
    balance = {split: stats["class_counts"] for split, stats in statistics.items() if "class_counts" in stats}
    if balance:
        plot_class_balance(balance, folder / "class_balance.png")
    lengths = {split: stats["lengths"] for split, stats in statistics.items() if stats.get("lengths")}
    if lengths:
        max_length = next(stats["max_length"] for stats in statistics.values() if "max_length" in stats)
        plot_length_histogram(lengths, max_length, folder / "token_lengths.png")
    payload = audit.to_dict()
    for stats in payload["statistics"].values():
        values = np.asarray(stats.pop("lengths", []))
        if values.size:
            counts, edges = np.histogram(values, bins=30)
            stats["length_histogram"] = {"counts": counts.tolist(), "edges": edges.round(1).tolist()}
    write_json(folder / AUDIT_JSON, payload)
    write_datasheet(audit, plan.config, folder / DATASHEET)
    return folder / AUDIT_JSON
