"""`report.html`: one self-contained page that shows what a finished run did and how far to trust it.

The page is built only from the files a run folder already holds, so `tunewise report RUN` can rebuild it
at any time (after a fairness or privacy check adds its JSON, or on a machine that never saw the training).
It has no external URLs and no script: plots are PNG data URIs and the CSS is inline, so the file can be
mailed, archived or attached to a review and still show everything. A Content-Security-Policy that allows
nothing but inline styles and data-URI images makes that a guarantee, not a habit. Every string that comes
from the user (labels, file names, audit messages, config values) is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tunewise.errors import DataError
from tunewise.reporting.plots import plot_calibration, plot_loss_curve, plt

REPORT_FILE = "report.html"
FAIRNESS_FILE = "fairness.json"
PRIVACY_FILE = "privacy.json"
AUDIT_FILE = "audit/audit.json"
CALIBRATION_PLOT = "plots/calibration_test.png"
# the metrics worth a glance, in order; the full table below lists every one
HEADLINE_METRICS = (
    "accuracy", "exact_match", "f1", "precision", "recall", "token_accuracy", "f1_macro", "f1_micro", "subset_accuracy",
    "roc_auc", "ece",
    "mse", "mae", "r2", "spearman", "perplexity", "loss",
)  # fmt: skip
MAX_GROUP_PLOTS = 6
MAX_BAR_METRICS = 4
COUNT_COLUMNS = {"n", "count", "texts", "support", "rows"}  # plotted after the rates and scores
NOT_MEASURED = "so nothing here says whether the model works equally well for different groups of people"
PRIVACY_NOT_RUN = (
    "No privacy audit ran on this run (there is no privacy.json in the run folder), so nothing here measures whether "
    "the model gives away which texts it was trained on. `tunewise audit privacy RUN` runs the membership-inference "
    "audit and rebuilds this page with its figures."
)


@dataclass
class RunFacts:
    """Everything a finished run folder records, read once and shared by the report and the model card."""

    run_dir: Path
    config: dict[str, Any]
    record: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]
    audit: dict[str, Any] | None
    fairness: Any | None
    privacy: Any | None

    @property
    def task(self) -> str:
        return str(self.config.get("task", "text-classification"))

    @property
    def headline_split(self) -> str | None:
        """Test when there is one (never seen during training), else validation."""
        return next((s for s in ("test", "validation") if s in self.metrics), next(iter(self.metrics), None))

    @property
    def problem_type(self) -> str:
        """The task's problem type as run.json records it (e.g. token_classification); for older runs,
        causal_lm, regression, multi_label or single_label read off the metrics the task reported."""
        if self.record.get("problem_type"):
            return str(self.record["problem_type"])
        scores = self.metrics.get(self.headline_split or "", {})
        if self.task == "causal-lm" or "perplexity" in scores:
            return "causal_lm"
        if "mse" in scores:
            return "regression"
        if "subset_accuracy" in scores or "hamming_loss" in scores:
            return "multi_label"
        return "single_label"

    def section(self, name: str) -> dict[str, Any]:
        return self.config.get(name) or {}

    @property
    def text_columns(self) -> list[str]:
        """The task's raw text inputs ([] when it reads none, e.g. images), as the task itself says."""
        from tunewise.config.schema import RunConfig
        from tunewise.tasks import make_task

        try:
            return list(make_task(RunConfig.model_validate(self.config)).text_columns)
        except ValueError:  # a config this version cannot read: the text-classification default
            return [self.section("data").get("text_column", "text")]

    @property
    def targets(self) -> str:
        """What the model learns to predict, as the task describes it."""
        from tunewise.config.schema import RunConfig
        from tunewise.tasks import make_task

        try:
            return make_task(RunConfig.model_validate(self.config)).targets
        except ValueError:  # a config this version cannot read: the text-classification default
            return f"label column `{self.section('data').get('label_column', 'label')}`"

    @property
    def truncates(self) -> bool:
        """Whether inputs longer than max_length were cut (False: the task reads them in overlapping windows)."""
        from tunewise.config.schema import RunConfig
        from tunewise.tasks import make_task

        try:
            return bool(make_task(RunConfig.model_validate(self.config)).truncates)
        except ValueError:  # a config this version cannot read: cut, as most tasks do
            return True

    def fairness_absent(self) -> str:
        """Why there is no fairness.json, and what would produce one."""
        if self.problem_type != "single_label" or len(self.text_columns) != 1:
            kind = f"is {self.problem_type.replace('_', ' ')}" if self.text_columns else "reads no text"
            return (
                "Fairness was not measured: tunewise measures it for single-label classification of one text "
                f"column, and this run {kind}; {NOT_MEASURED}."
            )
        if self.section("fairness").get("enabled") is False:
            return f"Fairness was not measured: the config sets `fairness.enabled: false`; {NOT_MEASURED}."
        return (
            f"Fairness was not measured for this run (there is no fairness.json); {NOT_MEASURED}. Train again with "
            "`fairness.enabled: true` (and `fairness.group_column` for per-group metrics), then `tunewise report RUN`."
        )


@dataclass
class Table:
    """A titled table; cells stay raw values until a renderer formats them (HTML here, Markdown in the card)."""

    title: str
    header: list[str]
    rows: list[list[Any]]
    grouped: bool = False  # one row per group (or member): worth a bar chart


def read_run(run_dir: Path) -> RunFacts:
    """Read a finished run folder; a folder that is not one (yet) is a DataError that says what to do."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise DataError(
            f"{run_dir} holds no tunewise run (no run.json). Give the run folder that `tunewise train` wrote "
            "(the config's output_dir)."
        )
    if not (run_dir / "metrics.json").is_file():
        raise DataError(
            f"{run_dir} holds a run that has not finished (no metrics.json yet). Let it finish, or continue it "
            f"with `tunewise train {run_dir / 'config.yaml'} --resume`, then build the report."
        )
    history_file = run_dir / "history.jsonl"
    lines = history_file.read_text(encoding="utf-8").splitlines() if history_file.is_file() else []
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    record = _read_json(run_dir / "run.json")
    return RunFacts(
        run_dir=run_dir,
        config=config or record.get("requested_config") or {},
        record=record,
        metrics=_read_json(run_dir / "metrics.json"),
        history=[json.loads(line) for line in lines if line.strip()],
        audit=_read_json(run_dir / AUDIT_FILE),
        fairness=_read_json(run_dir / FAIRNESS_FILE),
        privacy=_read_json(run_dir / PRIVACY_FILE),
    )


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_date(facts: RunFacts) -> str:
    """When the run finished: its own record if it has one, else when run.json was last written."""
    for key in ("finished_at", "finished", "date"):
        if facts.record.get(key):
            return str(facts.record[key])
    written = datetime.fromtimestamp(os.path.getmtime(facts.run_dir / "run.json"), tz=UTC)
    return f"{written:%Y-%m-%d %H:%M} UTC (when run.json was written)"


def fmt(value: Any) -> str:
    """Numbers the same way everywhere (4 decimals, thousands separators), so the page and card agree."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        if 0 < abs(value) < 0.001:
            return f"{value:.3g}"  # a privacy delta of 1e-05 must not read as 0.0000
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value) if value else "none"
    if isinstance(value, dict) and "value" in value:
        low, high = (value.get("ci") or [None, None])[:2]
        return fmt(value["value"]) + (f" (95% CI {fmt(low)} to {fmt(high)})" if low is not None else "")
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def scalar_metrics(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def metrics_table(facts: RunFacts) -> Table:
    """Every scalar metric, one column per evaluated split."""
    splits = list(facts.metrics)
    names = list(dict.fromkeys(k for s in splits for k in scalar_metrics(facts.metrics[s])))
    return Table("Metrics", ["metric", *splits], [[n, *[facts.metrics[s].get(n) for s in splits]] for n in names])


def per_class_table(facts: RunFacts, split: str) -> Table | None:
    per_class = facts.metrics.get(split, {}).get("per_class")
    if not per_class:
        return None
    columns = list(dict.fromkeys(c for values in per_class.values() for c in values))
    rows = [[name, *[values.get(c) for c in columns]] for name, values in per_class.items()]
    return Table(f"Per class ({split})", ["class", *columns], rows)


def findings_table(audit: dict[str, Any]) -> Table:
    """The audit's findings, errors first: what was found and what to do about it."""
    order = {"error": 0, "warning": 1, "note": 2}
    findings = sorted(audit.get("findings", []), key=lambda f: order.get(f.get("severity"), 3))
    rows = [
        [f.get("severity"), f.get("check"), f.get("split"), f.get("message"), f.get("fix") or "", f.get("rows") or ""]
        for f in findings
    ]
    return Table("Data check findings", ["severity", "check", "split", "message", "what to do", "example rows"], rows)


def json_tables(value: Any, title: str = "") -> list[Table]:
    """Any JSON (fairness.json, privacy.json: their schema is the checks' own) as readable tables.

    Scalars of an object become a field/value table; an object whose members are all flat objects (one per group,
    say) becomes one table with a row per member; a list of flat objects becomes a table; anything else recurses.
    """
    if _is_flat_records(value):
        columns = list(dict.fromkeys(c for item in value for c in item))
        return [Table(title, columns, [[item.get(c) for c in columns] for item in value], grouped=True)]
    if not isinstance(value, dict):
        return [Table(title, ["value"], [[value]])]
    tables = []
    plain = [[key, item] for key, item in value.items() if _is_scalar(item)]
    if plain:
        tables.append(Table(title, ["field", "value"], plain))
    for key, item in value.items():
        if _is_scalar(item):
            continue
        name = f"{title} / {key}" if title else str(key)
        if isinstance(item, dict) and item and _is_flat_records(list(item.values())):
            columns = list(dict.fromkeys(c for member in item.values() for c in member))
            rows = [[member_name, *[member.get(c) for c in columns]] for member_name, member in item.items()]
            tables.append(Table(name, [str(key), *columns], rows, grouped=True))
        else:
            tables.extend(json_tables(item, name))
    return tables


def _is_scalar(value: Any) -> bool:
    """A table cell: a plain value, a list of them, or a measurement {"value": x, "ci": [low, high]}."""
    flat = (str, int, float, bool, type(None))
    if isinstance(value, dict):
        return "value" in value and set(value) <= {"value", "ci"} and _is_scalar(value["value"])
    return isinstance(value, flat) or (isinstance(value, list) and all(isinstance(v, flat) for v in value))


def number(cell: Any) -> float | None:
    """The number in a cell (a measurement's value), or None."""
    if isinstance(cell, dict):
        cell = cell.get("value")
    return float(cell) if isinstance(cell, int | float) and not isinstance(cell, bool) else None


def _is_flat_records(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and v and all(_is_scalar(x) for x in v.values()) for v in value)
    )


def numeric_columns(table: Table) -> list[int]:
    """Columns (after the first) a bar chart can show: numbers or gaps only, not all zero; counts last."""
    columns = [
        i
        for i in range(1, len(table.header))
        if all(number(row[i]) is not None or row[i] is None for row in table.rows)
        and any(number(row[i]) for row in table.rows)
    ]
    return sorted(columns, key=lambda i: str(table.header[i]) in COUNT_COLUMNS)


def calibration_plot(facts: RunFacts) -> Path | None:
    """Reliability diagram of the test predictions, for single-label runs whose predictions.csv allows one.

    Needs the true label column and a prob_<class> column per class; rows whose label is not one of the classes
    are left out. Written to plots/calibration_test.png so the card can point at it too.
    """
    path = facts.run_dir / "predictions.csv"
    label_column = facts.section("data").get("label_column") or "label"
    if facts.problem_type != "single_label" or not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={label_column: str}, keep_default_na=False)
    prob_columns = [c for c in frame.columns if c.startswith("prob_")]
    if label_column not in frame.columns or "predicted_label" not in frame.columns or len(prob_columns) < 2:
        return None
    classes = {_label_name(c.removeprefix("prob_")): i for i, c in enumerate(prob_columns)}
    labels = frame[label_column].map(lambda v: classes.get(_label_name(v), -1)).to_numpy()
    known = labels >= 0
    if not known.any():
        return None
    probabilities = frame.loc[known, prob_columns].to_numpy(dtype=float)
    title = "Reliability diagram (test)"
    return plot_calibration(probabilities, labels[known], facts.run_dir / CALIBRATION_PLOT, title=title)


def _label_name(value: Any) -> str:
    """1, 1.0 and "1" are the same class, as in the task's own label handling."""
    text = str(value).strip()
    try:
        parsed = float(text)
    except ValueError:
        return text
    return str(int(parsed)) if parsed.is_integer() else text


def group_bars(table: Table) -> bytes | None:
    """Horizontal bars per group for each numeric column (each with its own scale: rates and counts differ)."""
    columns = numeric_columns(table)[:MAX_BAR_METRICS]
    if not table.grouped or len(table.rows) < 2 or not columns:
        return None
    groups = [str(row[0]) for row in table.rows]
    height = max(2.0, 0.35 * len(groups) + 1.2)
    fig, axes = plt.subplots(1, len(columns), figsize=(3.6 * len(columns), height), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=False):
        values = [number(row[column]) or 0.0 for row in table.rows]  # a gap (no AUC on too few texts) shows as 0
        ax.barh(range(len(groups)), values, color="tab:blue", alpha=0.8)
        ax.set_yticks(range(len(groups)), labels=groups if ax is axes[0][0] else [""] * len(groups))
        ax.invert_yaxis()
        ax.set_title(str(table.header[column]), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(table.title, fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ HTML

CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.5em;
color:#1d1d1f;background:#fff}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #e3e6ea;padding-bottom:.2em;margin-top:2em}
.muted{color:#5f6670}.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.card{border:1px solid #d5d9de;border-radius:8px;padding:.6em 1em;min-width:8em}
.card b{display:block;font-size:1.5em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.92em}
th,td{border:1px solid #d5d9de;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:.3em 0}
img{max-width:100%;height:auto;border:1px solid #eef0f2}figure{margin:1em 0}
.error{color:#b00020;font-weight:600}.warning{color:#9a6700;font-weight:600}
pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:.85em}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def write_report(run_dir: Path) -> Path:
    """Write RUN/report.html from the run folder's files and return its path."""
    facts = read_run(run_dir)
    name = facts.run_dir.resolve().name
    body = [
        f"<h1>tunewise run: {escape(name)}</h1>",
        f"<p class='muted'>{escape(facts.task)} · {escape(str(facts.config.get('model', '')))} · "
        f"{escape(str(facts.section('strategy').get('method', '')))} · {escape(run_date(facts))}</p>",
        *_headline(facts),
        *_curves(facts),
        *_classification(facts),
        *_optional_json(facts.fairness, "Fairness", facts.fairness_absent(), bars=True),
        *_audit(facts),
        *_optional_json(facts.privacy, "Privacy", PRIVACY_NOT_RUN, bars=False),
        *[html_table(t) for t in dp_tables(facts)],
        *_run_facts(facts),
    ]
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>tunewise report: {escape(name)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    path = facts.run_dir / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def _headline(facts: RunFacts) -> list[str]:
    split = facts.headline_split
    if split is None:
        return ["<h2>Headline metrics</h2><p>This run recorded no metrics.</p>"]
    scores = scalar_metrics(facts.metrics[split])
    shown = [m for m in HEADLINE_METRICS if m in scores][:6]
    cards = "".join(f"<div class='card'>{escape(m)}<b>{escape(fmt(scores[m]))}</b></div>" for m in shown)
    note = "" if split == "test" else " There is no test set: validation also chose the best step, so it is optimistic."
    parts = [
        "<h2>Headline metrics</h2>",
        f"<p>On the <b>{escape(split)}</b> split ({escape(fmt(scores.get('n')))} rows).{escape(note)}</p>",
        f"<div class='cards'>{cards}</div>",
        html_table(metrics_table(facts)),
    ]
    per_class = per_class_table(facts, split)
    if per_class is not None:
        parts.append(html_table(per_class))
    return parts


def _curves(facts: RunFacts) -> list[str]:
    loss_plot = facts.run_dir / "plots" / "loss.png"
    if not loss_plot.is_file() and facts.history:
        plot_loss_curve(facts.history, loss_plot)
    parts = ["<h2>Loss and learning rate</h2>", _figure(loss_plot, "Training loss, validation loss and learning rate")]
    evaluations = [r for r in facts.history if r.get("split") == "validation"]
    if evaluations:
        stopping = facts.section("train").get("early_stopping") or {}
        chosen = stopping.get("metric") if stopping.get("metric") not in (None, "auto", "loss") else None
        header = ["step", "epoch", "split", "loss", *([chosen] if chosen else [])]
        rows = [
            [r.get("step"), r.get("epoch"), r.get("split"), r["metrics"].get("loss"), r["metrics"].get(chosen)][
                : len(header)
            ]
            for r in evaluations
        ]
        best = facts.record.get("best_step")
        parts.append(html_table(Table(f"Evaluations during training (best step: {fmt(best)})", header, rows)))
    return parts


def _classification(facts: RunFacts) -> list[str]:
    """Confusion matrices and the reliability diagram; says plainly when the task has neither."""
    if facts.problem_type not in ("single_label", "multi_label"):  # no class per row to confuse or calibrate
        kind = {"causal_lm": "a causal language model"}.get(facts.problem_type, facts.problem_type.replace("_", " "))
        return [
            "<h2>Confusion matrix and calibration</h2>",
            f"<p>Not applicable: {kind} has no classes to confuse or probabilities to calibrate; "
            "its metrics are in the table above.</p>",
        ]
    parts = ["<h2>Confusion matrix</h2>"]
    confusion = sorted((facts.run_dir / "plots").glob("confusion_*.png"))
    parts += [_figure(p, f"Confusion matrix ({p.stem.removeprefix('confusion_')})") for p in confusion] or [
        "<p>No confusion matrix: multi-label classification scores each label on its own (see per class above).</p>"
    ]
    parts.append("<h2>Calibration</h2>")
    plot = calibration_plot(facts)
    ece = facts.metrics.get(facts.headline_split or "", {}).get("ece")
    if plot is None:
        parts.append("<p>No reliability diagram: it needs predictions.csv with the true labels and a prob_ column per "
                     "class from a single-label test set.</p>")  # fmt: skip
    else:
        ece_text = f" Expected calibration error: {fmt(ece)}." if ece is not None else ""
        parts.append(f"<p>Do the predicted probabilities match how often the model is right?{escape(ece_text)}</p>")
        parts.append(_figure(plot, "Reliability diagram (test predictions)"))
    return parts


def _optional_json(payload: Any, heading: str, absent: str, bars: bool) -> list[str]:
    if payload is None:
        return [f"<h2>{escape(heading)}</h2>", f"<p>{escape(absent)}</p>"]
    parts = [f"<h2>{escape(heading)}</h2>"]
    tables = json_tables(payload)
    plotted = 0
    for table in tables:
        parts.append(html_table(table))
        if bars and plotted < MAX_GROUP_PLOTS and (png := group_bars(table)) is not None:
            parts.append(_figure_bytes(png, f"{table.title}: by group"))
            plotted += 1
    return parts


def _audit(facts: RunFacts) -> list[str]:
    parts = ["<h2>Data check</h2>"]
    if facts.audit is None:
        config_path = facts.run_dir / "config.yaml"
        parts.append(
            "<p>The data check did not run before training (<code>--skip-check</code> or "
            "<code>audit.before_training: false</code>), so nothing is known here about leakage, duplicates, label "
            f"noise or personal data. Run <code>tunewise check {escape(str(config_path))}</code> (it writes into "
            "this run folder's <code>audit/</code>), then <code>tunewise report</code> again.</p>"
        )
        return parts
    summary = facts.audit.get("summary", {})
    parts.append(
        f"<p><span class='error'>{fmt(summary.get('error', 0))} error(s)</span>, "
        f"<span class='warning'>{fmt(summary.get('warning', 0))} warning(s)</span>, "
        f"{fmt(summary.get('note', 0))} note(s). The datasheet for this data is in "
        "<code>audit/datasheet.md</code>.</p>"
    )
    parts.append(html_table(findings_table(facts.audit)))
    for name, caption in (("class_balance.png", "Class balance"), ("token_lengths.png", "Token lengths")):
        if (facts.run_dir / "audit" / name).is_file():
            parts.append(_figure(facts.run_dir / "audit" / name, caption))
    return parts


def dp_tables(facts: RunFacts) -> list[Table]:
    """The differential-privacy budget the run trained under (run.json `privacy`), if any."""
    budget = facts.record.get("privacy")
    if budget:
        return json_tables(budget, "Differentially private training (DP-SGD)")
    if "privacy" in facts.config and not facts.section("privacy").get("dp"):
        return [Table("Differentially private training", ["fact", "value"], [["DP-SGD", "no (privacy.dp: null)"]])]
    return []


def run_facts_tables(facts: RunFacts) -> list[Table]:
    """Versions, revision, data fingerprints, durations and hardware: what it takes to replay or audit the run."""
    record, data = facts.record, facts.section("data")
    parameters = record.get("parameters") or {}
    run_rows = [
        ["status", record.get("status")],
        ["date", run_date(facts)],
        ["git revision", record.get("git_revision") or "none recorded (not run from a git repository)"],
        ["model source", record.get("model_source")],
        ["task", facts.task],
        ["strategy", facts.section("strategy").get("method")],
        ["trainable / total parameters", f"{fmt(parameters.get('trainable'))} / {fmt(parameters.get('total'))}"],
        ["seed", record.get("seed")],
        ["learning rate", record.get("learning_rate")],
        ["batch size", record.get("batch_size")],
        ["steps", record.get("steps")],
        ["epochs", record.get("epochs")],
        ["best step", record.get("best_step")],
        ["stopped early", record.get("stopped_early")],
        ["training samples / s", record.get("train_samples_per_second")],
        ["peak memory (MB)", record.get("peak_memory_mb")],
    ]
    sha = record.get("data_sha256") or {}
    rows = record.get("rows") or {}
    held_out = f"held out from train ({fmt(data.get('validation_ratio'))} of it)"
    data_rows = [
        [split, data.get(split) or (held_out if split == "validation" else None), rows.get(split), sha.get(split)]
        for split in ("train", "validation", "test")
        if split in rows or split in sha
    ]
    durations = [[k, v] for k, v in (record.get("durations_seconds") or {}).items()]
    versions = [[k, v] for k, v in (record.get("versions") or {}).items()]
    hardware = [[k, v] for k, v in (record.get("hardware") or {}).items()]
    return [
        Table("Run", ["fact", "value"], [r for r in run_rows if r[1] is not None]),
        Table("Data", ["split", "source", "rows used", "sha256"], data_rows),
        Table("Durations (seconds)", ["stage", "seconds"], durations),
        Table("Versions", ["package", "version"], versions),
        Table("Hardware", ["fact", "value"], hardware),
    ]


def _run_facts(facts: RunFacts) -> list[str]:
    parts = ["<h2>Run facts</h2>"]
    parts += [html_table(t) for t in run_facts_tables(facts) if t.rows]
    config_file = facts.run_dir / "config.yaml"
    if config_file.is_file():
        config_text = config_file.read_text(encoding="utf-8")
        parts.append(f"<details><summary>Resolved config</summary><pre>{escape(config_text)}</pre></details>")
    return parts


def html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in table.header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{escape(fmt(c))}</td>" if isinstance(c, int | float) else f"<td>{escape(fmt(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in table.rows
    )
    caption = f"<caption>{escape(table.title)}</caption>" if table.title else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(path: Path, caption: str) -> str:
    if not path.is_file():
        return f"<p class='muted'>{escape(caption)}: no plot in the run folder.</p>"
    return _figure_bytes(path.read_bytes(), caption)


def _figure_bytes(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    text = escape(caption)
    return f"<figure><img src='data:image/png;base64,{data}' alt='{text}'><figcaption>{text}</figcaption></figure>"


def rebuild(run_dir: Path) -> tuple[Path, Path]:
    """Write both report.html and model_card.md (what `tunewise report RUN` does)."""
    from tunewise.reporting.model_card import write_model_card

    return write_report(run_dir), write_model_card(run_dir)


__all__ = ["RunFacts", "Table", "read_run", "rebuild", "write_report"]
