"""Tables of a run's facts, with one number format, drawn as HTML by the report and as Markdown by the card."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tunewise.evaluation.metrics import with_baseline_columns
from tunewise.reporting.run_facts import RunFacts, run_date
from tunewise.runs.layout import PREDICTIONS_FILE

GENERATION_EXAMPLES = 5
COUNT_COLUMNS = {"n", "count", "texts", "support", "rows"}  # plotted after the rates and scores


@dataclass
class Table:
    """A titled table; cells stay raw values until a renderer formats them (HTML here, Markdown in the card)."""

    title: str
    header: list[str]
    rows: list[list[Any]]
    grouped: bool = False  # one row per group (or member): worth a bar chart


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
    """Every scalar metric, one column per evaluated split, each followed by its baselines (the base
    model before fine-tuning, lead-3, the source copied) where the task has them."""
    columns = with_baseline_columns(facts.metrics)
    names = list(dict.fromkeys(k for scores in columns.values() for k in scalar_metrics(dict(scores))))
    rows = [[n, *[scores.get(n) for scores in columns.values()]] for n in names]
    return Table("Metrics", ["metric", *columns], rows)


def generations_table(facts: RunFacts, limit: int = GENERATION_EXAMPLES) -> Table | None:
    """The first test prompts with the base model's and the fine-tuned model's generations side by side
    (predictions.csv), for a person to read: the metrics say how much, these say what."""
    path = facts.run_dir / PREDICTIONS_FILE
    if not facts.can("generation") or not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=limit)
    if "generated_text" not in frame.columns:
        return None
    prompt = next((c for c in facts.text_columns if c in frame.columns), None)
    columns = [c for c in (prompt, "reference", "base_generated_text", "generated_text") if c and c in frame.columns]
    header = {prompt: "prompt", "base_generated_text": "base model", "generated_text": "fine-tuned"}
    rows = [[_clip(value) for value in record] for record in frame[columns].itertuples(index=False)]
    return Table(f"Generations (first {len(rows)} test rows)", [header.get(c, c) for c in columns], rows)


def _points(value: Any, signed: bool = False) -> str:
    """A percentage as the gate reads it: one decimal ("-" when not measured)."""
    if not isinstance(value, int | float):
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _clip(value: Any, limit: int = 400) -> str:
    text = str(value or "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def dp_tables(facts: RunFacts) -> list[Table]:
    """The differential-privacy budget the run trained under (run.json `privacy`), if any."""
    budget = facts.record.get("privacy")
    if budget:
        return json_tables(budget, "Differentially private training (DP-SGD)")
    if "privacy" in facts.config and not facts.section("privacy").get("dp"):
        return [Table("Differentially private training", ["fact", "value"], [["DP-SGD", "no (privacy.dp: null)"]])]
    return []


def safety_verdict(facts: RunFacts) -> str | None:
    """The red-team gate in one line (PASS / WARN / FAIL and why), or why it was not measured."""
    safety = facts.safety if isinstance(facts.safety, dict) else None
    if safety is None:
        return None
    red_team = safety.get("red_team")
    if not isinstance(red_team, dict):
        return (
            f"Safety before and after fine-tuning: not measured - {safety.get('not_measured', 'no red-team prompts')}."
        )
    return (
        f"Safety gate {str(red_team.get('status', '')).upper()}: {red_team.get('reason', '')} "
        f"({fmt(red_team.get('prompts'))} red-team prompts from {red_team.get('source')}; refusal = "
        f"{red_team.get('refusal_measure')})."
    )


def safety_tables(facts: RunFacts) -> list[Table]:
    """The red team before and after (refusal, flagged and abusive rates), a few answers side by side, and what
    the content screen is made of and found on the test generations."""
    safety = facts.safety if isinstance(facts.safety, dict) else {}
    tables = []
    red_team = safety.get("red_team")
    if isinstance(red_team, dict):
        base, tuned, change = red_team.get("base_model", {}), red_team.get("fine_tuned", {}), red_team.get("change", {})
        rows = [
            [label, *[_points(figures.get(key)) for figures in (base, tuned)], _points(change.get(key), signed=True)]
            for key, label in (
                ("refusal_rate", "refusal rate (%)"),
                ("flagged_rate", "flagged by the screen (%)"),
                ("abusive_rate", "abusive (classifier, %)"),
            )
        ]
        tables.append(Table("Red team: base model and fine-tuned", ["", "base model", "fine-tuned", "change"], rows))
        examples = [
            [_clip(e.get("prompt")), _clip(e.get("base")), _clip(e.get("fine_tuned"))]
            for e in red_team.get("examples", [])
        ]
        if examples:
            tables.append(
                Table("Red-team answers (as the screen left them)", ["prompt", "base model", "fine-tuned"], examples)
            )
    screen = safety.get("screen")
    if isinstance(screen, dict):
        rows = [[key, value] for key, value in screen.items() if not isinstance(value, dict)]
        classifier = screen.get("classifier")
        if isinstance(classifier, dict):
            rows += [[f"classifier {key}", value] for key, value in classifier.items()]
        tables.append(Table("Content screen", ["fact", "value"], rows))
    counts = [
        [
            split,
            *[scores["screen"].get(k) for k in ("screened", "flagged", "redacted", "blocked")],
            scores["screen"].get("by_reason"),
        ]
        for split, scores in facts.metrics.items()
        if isinstance(scores.get("screen"), dict)
    ]
    if counts:
        tables.append(
            Table(
                "Screen decisions on the evaluation's generations",
                ["split", "screened", "flagged", "redacted", "blocked", "reasons"],
                counts,
            )
        )
    return tables


def memorisation_tables(facts: RunFacts) -> list[Table]:
    """Canary exposure (inserted beside the never-inserted reference) and personal data completed verbatim."""
    memorised = facts.memorisation if isinstance(facts.memorisation, dict) else {}
    tables = []
    canaries = memorised.get("canaries")
    if isinstance(canaries, dict):
        inserted, reference = canaries.get("inserted", {}), canaries.get("reference", {})
        rows = [
            [
                "inserted into training",
                canaries.get("count"),
                inserted.get("mean_exposure"),
                inserted.get("max_exposure"),
            ],
            [
                "reference (never inserted)",
                canaries.get("count"),
                reference.get("mean_exposure"),
                reference.get("max_exposure"),
            ],
        ]
        title = (
            f"Canary exposure in bits (Carlini et al. 2019): {fmt(canaries.get('repeats'))} insertion(s) each, "
            f"{canaries.get('format')!r}; maximum {fmt(canaries.get('max_exposure_possible'))}, chance about "
            f"{fmt(canaries.get('chance_exposure'))}"
        )
        tables.append(Table(title, ["canaries", "count", "mean exposure", "max exposure"], rows))
    extraction = memorised.get("extraction")
    if isinstance(extraction, dict):
        rows = [
            ["base model", extraction.get("prompts"), _points(extraction.get("base_model_verbatim_rate"))],
            ["fine-tuned", extraction.get("prompts"), _points(extraction.get("fine_tuned_verbatim_rate"))],
        ]
        tables.append(
            Table(
                "Personal data in training answers, completed verbatim (%)", ["model", "prompts", "verbatim (%)"], rows
            )
        )
    notes = [[key, value] for key, value in memorised.items() if key.endswith("note") or key == "not_measured"]
    if notes:
        tables.append(Table("Memorisation notes", ["", "note"], notes))
    return tables


def run_facts_tables(facts: RunFacts) -> list[Table]:
    """Versions, revision, data fingerprints, durations and hardware: what it takes to replay or audit the run."""
    record, data = facts.record, facts.section("data")
    parameters = record.get("parameters") or {}
    run_rows: list[list[Any]] = [
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


# ------------------------------------------------------------------------------------------ explanations


def explanation_facts_table(explained: dict[str, Any]) -> Table:
    """How the explanations were made and what they cost."""
    rows: list[list[Any]] = [
        ["method", explained.get("method")],
        ["integrated gradients' steps", explained.get("steps")],
        ["rows explained", f"{fmt(explained.get('rows'))} of the {explained.get('split')} split (seeded sample)"],
        ["explanations (labels, entities, answer ends)", explained.get("explanations")],
        ["seconds", explained.get("seconds")],
        ["seconds per explanation", explained.get("seconds_per_explanation")],
        ["mean convergence delta", explained.get("mean_convergence_delta")],
        ["largest convergence delta", explained.get("max_convergence_delta")],
    ]
    return Table("How the explanations were made", ["fact", "value"], [row for row in rows if row[1] is not None])


def faithfulness_table(explained: dict[str, Any]) -> Table | None:
    """ERASER's deletion test per k: comprehensiveness and sufficiency of the top-k words beside k random words."""
    faithfulness = explained.get("faithfulness")
    if not isinstance(faithfulness, dict):
        return None
    rows = [
        [
            str(figures.get("k")),
            figures.get("rows"),
            figures.get("comprehensiveness_top"),
            figures.get("comprehensiveness_random"),
            figures.get("sufficiency_top"),
            figures.get("sufficiency_random"),
            faithful_verdict(figures),
        ]
        for figures in (faithfulness.get("by_k") or {}).values()
    ]
    header = ["k (words, or a share of them)", "explanations", "comprehensiveness: top-k", "random k",
              "sufficiency: top-k", "random k", "verdict"]  # fmt: skip
    return Table("Faithfulness: the deletion test (mean drop in the explained probability)", header, rows)


def faithful_verdict(figures: dict[str, Any]) -> str:
    """Whether the top words beat random ones on both counts: deleting them costs more, keeping them costs less."""
    keys = ("comprehensiveness_top", "comprehensiveness_random", "sufficiency_top", "sufficiency_random")
    values = [value for key in keys if (value := number(figures.get(key))) is not None]
    if len(values) < len(keys):
        return "not measured"
    top_deleted, random_deleted, top_kept, random_kept = values
    better = int(top_deleted > random_deleted) + int(top_kept < random_kept)
    return {2: "better than random", 1: "mixed", 0: "no better than random"}[better]


def top_words_table(explained: dict[str, Any]) -> Table | None:
    """Per label, the words that pushed toward it and against it most, as `word +mean (rows)`."""
    labels = explained.get("labels") or {}
    if not labels:
        return None

    def listed(entries: list[dict[str, Any]]) -> str:
        return ", ".join(f"{e['word']} {e['mean']:+.3g} ({e['rows']})" for e in entries) or "none"

    rows = [[label, entry.get("explanations"), listed(entry.get("toward", [])), listed(entry.get("against", []))]
            for label, entry in labels.items()]  # fmt: skip
    title = (
        "Most influential words per label: mean attribution toward the label over the rows a word occurs in "
        f"(rows in brackets, at least {fmt(explained.get('min_word_rows'))})"
    )
    return Table(title, ["label", "explanations", "toward the label", "against it"], rows)


def identity_attribution_table(explained: dict[str, Any]) -> Table | None:
    """The identities the fairness audit found an AUC gap for, and how much attribution their words carry."""
    identities = explained.get("identity_terms") or {}
    if not identities:
        return None
    rows = [
        [
            identity,
            entry.get("auc_gap"),
            entry.get("status"),
            entry.get("rows"),
            entry.get("attribution_share"),
            entry.get("uniform_share"),
            entry.get("mean_attribution"),
        ]
        for identity, entry in identities.items()
    ]
    header = ["identity", "AUC gap", "status", "rows mentioning it", "attribution share", "an average word's share",
              "mean attribution"]  # fmt: skip
    return Table("Identity terms with a fairness gap: the attribution their words carry", header, rows)
