"""The test split, scored once: on the best trial, after the study, never during it.

Validation chose among the trials, so its best score is optimistic; the test split, withheld from
every trial, is the honest estimate. The best trial's folder then reads as a finished run with test:
metrics.json, run.json, predictions.csv and the confusion matrix, explanations.json (its trial skipped them),
and its report and model card rebuilt.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from tunewise.jobs.explanations import explain_saved_run
from tunewise.reporting.plots import plot_confusion_matrix
from tunewise.reporting.rebuild import rebuild
from tunewise.runs.atomic import replacing
from tunewise.runs.layout import METRICS_FILE, PLOTS_FOLDER, PREDICTIONS_FILE, RUN_FILE
from tunewise.runs.reader import read_json
from tunewise.runs.record import write_json
from tunewise.serving.predictor import csv_ready, load


def score_on_test(folder: Path, test_file: str, console: Console | None = None) -> dict[str, Any]:
    """The best trial's model on the test file; its run folder updated to show it, with the explanations its
    trial skipped (explain.enabled), on the test rows. Returns the test metrics."""
    model = load(folder)
    metrics, predictions = model.evaluate(test_file, "test")
    scored = read_json(folder / METRICS_FILE) or {}
    write_json(folder / METRICS_FILE, {**scored, "test": metrics})
    record = read_json(folder / RUN_FILE) or {}
    record["metrics"] = {**record.get("metrics", {}), "test": metrics}
    record["rows"] = {**record.get("rows", {}), "test": len(predictions)}
    record["test_scored"] = {
        "by": "tunewise tune, once, on the best trial after the study (no trial saw the test split)",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(folder / RUN_FILE, record)
    with replacing(folder / PREDICTIONS_FILE) as temporary:
        csv_ready(predictions).to_csv(temporary, index=False)
    if "confusion_matrix" in metrics:
        plot_confusion_matrix(
            metrics["confusion_matrix"],
            list(model.facts.label_names),
            folder / PLOTS_FOLDER / "confusion_test.png",
            title="Confusion matrix (test)",
        )
    explain_saved_run(model, folder, test_file, console or Console(stderr=True))
    rebuild(folder)
    return metrics
