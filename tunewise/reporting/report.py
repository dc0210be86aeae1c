"""`report.html`: one self-contained page that shows what a finished run did and how far to trust it.

The page is built only from the files a run folder already holds, so `tunewise report RUN` can rebuild it
at any time (after a fairness or privacy check adds its JSON, or on a machine that never saw the training).
Explained examples are coloured text (inline styles) and their heat maps, like the plots, data URIs of the PNGs
in the run folder, so the page stays one file.
It has no external URLs and no script: plots are PNG data URIs and the CSS is inline, so the file can be
mailed, archived or attached to a review and still show everything. A Content-Security-Policy that allows
nothing but inline styles and data-URI images makes that a guarantee, not a habit. Every string that comes
from the user (labels, file names, audit messages, config values) is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from tunewise.reporting.plots import plot_calibration, plot_loss_curve, plt
from tunewise.reporting.run_facts import SAFETY_NOT_RUN, RunFacts, read_run, run_date
from tunewise.reporting.tables import (
    Table,
    dp_tables,
    explanation_facts_table,
    faithful_verdict,
    faithfulness_table,
    findings_table,
    fmt,
    generations_table,
    identity_attribution_table,
    json_tables,
    memorisation_tables,
    metrics_table,
    number,
    numeric_columns,
    per_class_table,
    run_facts_tables,
    safety_tables,
    safety_verdict,
    scalar_metrics,
    top_words_table,
)
from tunewise.runs.atomic import write_text
from tunewise.runs.layout import CALIBRATION_PLOT, CONFIG_FILE, LOSS_PLOT, PREDICTIONS_FILE, REPORT_FILE

# the metrics worth a glance, in order; the full table below lists every one
HEADLINE_METRICS = (
    "accuracy", "exact_match", "rougeL", "bleu", "chrf",
    "f1", "precision", "recall", "token_accuracy", "f1_macro", "f1_micro", "subset_accuracy",
    "roc_auc", "ece",
    "mse", "mae", "r2", "spearman", "perplexity", "loss",
)  # fmt: skip
MAX_GROUP_PLOTS = 6
MAX_BAR_METRICS = 4


def calibration_plot(facts: RunFacts) -> Path | None:
    """Reliability diagram of the test predictions, for single-label runs whose predictions.csv allows one.

    Needs the true label column and a prob_<class> column per class; rows whose label is not one of the classes
    are left out. Written to plots/calibration_test.png so the card can point at it too.
    """
    path = facts.run_dir / PREDICTIONS_FILE
    label_column = facts.section("data").get("label_column") or "label"
    if not facts.can("class_labels") or not path.is_file():
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
.fail{color:#b00020;font-weight:600}.warn{color:#9a6700;font-weight:600}.pass{color:#1a7f37;font-weight:600}
pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:.85em}
.explained{border:1px solid #d5d9de;border-radius:8px;padding:.5em .9em;margin:.6em 0}
.explained p{margin:.3em 0}.explained .text{line-height:1.9}.explained .text span{border-radius:3px;padding:0 1px}
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
        *_optional_json(facts.privacy, "Privacy", facts.privacy_absent(), bars=False),
        *_explanations(facts),
        *[html_table(t) for t in dp_tables(facts)],
        *_safety(facts),
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
    write_text(path, page)  # whole or not at all (runs.atomic)
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
    generations = generations_table(facts)
    if generations is not None:
        parts.append(html_table(generations))
    return parts


def _curves(facts: RunFacts) -> list[str]:
    loss_plot = facts.run_dir / LOSS_PLOT
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
    confusion = sorted((facts.run_dir / "plots").glob("confusion_*.png"))
    plot = calibration_plot(facts)
    if not confusion and plot is None:
        per_class = any(scores.get("per_class") for scores in facts.metrics.values())
        why = (
            "it scores each class (or label) on its own; see the per-class table above"
            if per_class
            else "it has no classes to confuse or probabilities to calibrate; its metrics are in the table above"
        )
        return [
            "<h2>Confusion matrix and calibration</h2>",
            f"<p>Not applicable to this {escape(facts.task)} run: {why}.</p>",
        ]
    parts = ["<h2>Confusion matrix</h2>"]
    parts += [_figure(p, f"Confusion matrix ({p.stem.removeprefix('confusion_')})") for p in confusion] or [
        "<p>No confusion matrix: multi-label classification scores each label on its own (see per class above).</p>"
    ]
    parts.append("<h2>Calibration</h2>")
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


EXAMPLE_HEADINGS = {
    "correct": "Correct predictions (the most confident)",
    "wrong": "Wrong predictions (the most confident)",
    "example": "Examples",
}
POSITIVE_RGB = (214, 39, 40)  # toward the explained label: red
NEGATIVE_RGB = (31, 119, 180)  # against it: blue
MAX_ALPHA = 0.85  # the strongest word of an example; the others in proportion to |score|


def _explanations(facts: RunFacts) -> list[str]:
    """Which words moved the predictions: how they were computed, how faithful they are, the top words per
    label, the identity terms' share, and examples as coloured text (or heat maps); one sentence when absent."""
    explained = facts.explanations if isinstance(facts.explanations, dict) else None
    if explained is None:
        return ["<h2>Explanations</h2>", f"<p>{escape(facts.explanations_absent())}</p>"]
    parts = [
        "<h2>Explanations</h2>",
        f"<p>Which parts of each input moved the prediction, by Captum's {escape(str(explained.get('method')))} on "
        f"{escape(fmt(explained.get('rows')))} {escape(str(explained.get('split')))} rows. An attribution is signed: "
        "<span style='color:rgb(214,39,40)'>red</span> pushed toward the label explained, "
        "<span style='color:rgb(31,119,180)'>blue</span> away from it. The convergence delta is integrated "
        "gradients' completeness gap relative to the change it explains: near 0, the attributions add up to the "
        "change. They explain the change from the input without its words: when that already gets the label (a "
        "default class), the words carry little.</p>",
        html_table(explanation_facts_table(explained)),
    ]
    faithfulness = faithfulness_table(explained)
    if faithfulness is None:
        parts.append(f"<p>Faithfulness: {escape(str(explained.get('faithfulness_note') or 'not measured'))}.</p>")
    else:
        by_k = list(((explained.get("faithfulness") or {}).get("by_k") or {}).values())
        verdicts = "; ".join(f"k = {figures.get('k')}: {faithful_verdict(figures)}" for figures in by_k)
        parts.append(
            "<p>Are the attributions faithful? Deleting the top-k words should lower the explained probability more "
            "than deleting k random words (comprehensiveness), and keeping only them should lower it less "
            f"(sufficiency) (ERASER, DeYoung et al. 2020). <b>{escape(verdicts or 'not measured')}</b>.</p>"
        )
        parts.append(html_table(faithfulness))
    for table in (top_words_table(explained), identity_attribution_table(explained)):
        if table is not None:
            parts.append(html_table(table))
    examples = [item for item in explained.get("examples") or [] if isinstance(item, dict)]
    for kind, heading in EXAMPLE_HEADINGS.items():
        shown = [item for item in examples if item.get("kind") == kind]
        if shown:
            parts.append(f"<h3>{escape(heading)}</h3>")
            parts += [_explained_example(facts, item) for item in shown]
        elif kind == "wrong" and any(item.get("kind") == "correct" for item in examples):
            rows = fmt(explained.get("rows"))
            parts.append(
                f"<h3>{escape(heading)}</h3><p>None: the model was right on all {escape(rows)} rows explained.</p>"
            )
    return parts


def _explained_example(facts: RunFacts, item: dict[str, Any]) -> str:
    """One explained row: what was explained and the truth, then its text(s) coloured by attribution, or its
    image's heat map."""
    truth = f" · true label: <b>{escape(str(item['label']))}</b>" if item.get("label") is not None else ""
    head = (
        f"<p class='muted'>row {escape(fmt(item.get('row')))} · explained: <b>{escape(str(item.get('target')))}</b> "
        f"({escape(fmt(item.get('probability')))}){truth}</p>"
    )
    if item.get("heatmap_png"):
        caption = f"Heat map of row {fmt(item.get('row'))}: {item.get('target')}"
        return f"<div class='explained'>{head}{_figure(facts.run_dir / str(item['heatmap_png']), caption)}</div>"
    texts = [str(text) for text in item.get("texts") or []]
    words = [word for word in item.get("words") or [] if isinstance(word, dict)]
    names = (
        facts.text_columns if len(facts.text_columns) == len(texts) else [f"text {i + 1}" for i in range(len(texts))]
    )
    lines = "".join(
        f"<p class='text'>{escape(name) + ': ' if len(texts) > 1 else ''}"
        f"{coloured_text(text, [w for w in words if w.get('text', 0) == index])}</p>"
        for index, (name, text) in enumerate(zip(names, texts, strict=True))
    )
    return f"<div class='explained'>{head}{lines}</div>"


def coloured_text(text: str, words: list[dict[str, Any]]) -> str:
    """`text` as HTML, each attributed word on a background of its sign's colour, as strong as its |score|
    relative to the row's strongest word (its score in the tooltip); everything from the text is escaped."""
    strongest = max((abs(float(w.get("score") or 0.0)) for w in words), default=0.0)
    pieces, at = [], 0
    for word in sorted(words, key=lambda w: int(w.get("start", 0))):
        start, end, score = int(word.get("start", 0)), int(word.get("end", 0)), float(word.get("score") or 0.0)
        if start < at or end <= start:  # overlapping or empty spans are left as plain text
            continue
        alpha = MAX_ALPHA * abs(score) / strongest if strongest > 0 else 0.0
        red, green, blue = POSITIVE_RGB if score >= 0 else NEGATIVE_RGB
        pieces.append(escape(text[at:start]))
        pieces.append(
            f"<span style='background:rgba({red},{green},{blue},{alpha:.2f})' title='{score:+.4f}'>"
            f"{escape(text[start:end])}</span>"
        )
        at = end
    pieces.append(escape(text[at:]))
    return "".join(pieces)


def _safety(facts: RunFacts) -> list[str]:
    """Generative runs: the safety gate and its red team, the content screen, and what the model memorised."""
    if not facts.can("generation"):
        return []
    verdict = safety_verdict(facts)
    status = str((facts.safety or {}).get("red_team", {}).get("status", "")) if isinstance(facts.safety, dict) else ""
    parts = ["<h2>Safety</h2>", f"<p class='{escape(status)}'>{escape(verdict or SAFETY_NOT_RUN)}</p>"]
    parts += [html_table(table) for table in safety_tables(facts)]
    parts.append("<h2>Memorisation</h2>")
    tables = memorisation_tables(facts)
    parts += [html_table(table) for table in tables] or ["<p>Not measured: there is no memorisation.json.</p>"]
    return parts


def _audit(facts: RunFacts) -> list[str]:
    parts = ["<h2>Data check</h2>"]
    if facts.audit is None:
        config_path = facts.run_dir / CONFIG_FILE
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


def _run_facts(facts: RunFacts) -> list[str]:
    parts = ["<h2>Run facts</h2>"]
    parts += [html_table(t) for t in run_facts_tables(facts) if t.rows]
    config_file = facts.run_dir / CONFIG_FILE
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


__all__ = ["write_report"]
