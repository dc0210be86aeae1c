"""The check job: audit the data a plan prepared, write what was found, and stop training on errors.

`tunewise check` runs it on its own (`check`); `tunewise train` runs it first (`check_before_training`),
on the same frames it then trains on, so the data is parsed once per command.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console

from tunewise.audit.check import audit_data
from tunewise.audit.datasheet import write_datasheet
from tunewise.audit.findings import Audit
from tunewise.audit.summary import print_audit
from tunewise.errors import DataError
from tunewise.prepare import Plan
from tunewise.reporting.plots import plot_class_balance, plot_length_histogram
from tunewise.runs.layout import AUDIT_FOLDER

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
    (folder / AUDIT_JSON).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    write_datasheet(audit, plan.config, folder / DATASHEET)
    return folder / AUDIT_JSON
