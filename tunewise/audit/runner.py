"""`tunewise check`: audit the data a config names before a single training step.

Each check reads the same validated frames the trainer would train on and adds findings; a
failing read is itself a finding (an error), so the audit reports everything it can instead of
stopping at the first problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from tunewise.audit.basic_checks import class_balance, text_quality, token_lengths
from tunewise.audit.duplicates import exact_duplicates, find_leakage, near_duplicates
from tunewise.audit.findings import Audit, Finding
from tunewise.audit.label_noise import find_label_issues
from tunewise.audit.pii import PiiScanner
from tunewise.config.schema import RunConfig
from tunewise.errors import DataError
from tunewise.reporting.plots import plot_class_balance, plot_length_histogram
from tunewise.tasks import Task, make_task

SPLITS = ("train", "validation", "test")


def run_audit(config: RunConfig) -> Audit:
    audit = Audit()
    # first: a configured NER model that is not installed is a ConfigError before any data is read
    scanner = PiiScanner(custom_patterns=config.audit.pii_patterns, ner_model=config.audit.pii_ner_model)
    task = make_task(config)
    frames = read_frames(task, config, audit)
    if "train" not in frames:
        return audit
    text_columns = task.text_columns
    labelled = task.problem_type == "single_label"
    tokenizer, max_length = _tokenizer(config)
    for split, frame in frames.items():
        stats: dict = {"rows": len(frame)}
        for finding in text_quality(frame, text_columns, split):
            audit.add(finding)
        if labelled:
            balance, findings = class_balance(
                frame[config.data.label_column], split, config.audit.imbalance_warning_ratio
            )
            stats.update(balance)
            for finding in findings:
                audit.add(finding)
        if text_columns:
            lengths, findings = token_lengths(
                frame, text_columns, tokenizer, max_length, split, config.audit.truncation_warning_share
            )
            stats.update(lengths)
            for finding in findings if task.truncates else []:  # windows cut nothing
                audit.add(finding)
        audit.statistics[split] = stats
    for finding in task.audit_findings(frames, tokenizer, max_length):
        audit.add(finding)
    if not text_columns:  # images: the text checks below do not apply
        return audit
    check_duplicates(frames["train"], text_columns, config, audit)
    check_leakage(frames, text_columns, config, audit)
    if labelled and config.audit.label_noise:
        check_label_noise(frames["train"], text_columns, config, audit)
    check_personal_data(frames, text_columns, scanner, audit)
    return audit


def read_frames(task: Task, config: RunConfig, audit: Audit) -> dict[str, pd.DataFrame]:
    """The splits that load cleanly; what does not load is an error finding naming the fix."""
    frames = {}
    for split in SPLITS:
        source = getattr(config.data, split)
        if source is None:
            continue
        try:
            frames[split] = task.read_split(source, split)
        except DataError as error:
            audit.add(Finding("validity", "error", str(error), split=split))
    if "train" in frames:
        try:
            task.fit_labels(frames["train"])
        except DataError as error:
            audit.add(Finding("validity", "error", str(error), split="train"))
            return {}
        for split in [s for s in frames if s != "train"]:
            try:
                task.check_split(frames[split], split, getattr(config.data, split))
            except DataError as error:
                audit.add(Finding("validity", "error", str(error), split=split))
    return frames


def _tokenizer(config: RunConfig):
    """The configured model's tokenizer and the max_length training would use (auto resolved the same way)."""
    from tunewise.api import resolve_auto_settings
    from tunewise.models.registry import read_checkpoint_hints

    task = make_task(config)
    source = task.resolve_source(config.model)
    tokenizer = task.load_tokenizer(source)
    resolved = config.model_copy(deep=True)
    resolve_auto_settings(resolved, read_checkpoint_hints(source), tokenizer)
    return tokenizer, int(resolved.data.max_length)


def check_duplicates(train: pd.DataFrame, text_columns: list[str], config: RunConfig, audit: Audit) -> None:
    label_column = config.data.label_column if config.data.label_column in train.columns else None
    groups = exact_duplicates(train, text_columns, label_column)
    conflicts = [g for g in groups if g.conflicting]
    if groups:
        extra = sum(len(g.rows) - 1 for g in groups)
        audit.add(
            Finding(
                "duplicates",
                "warning",
                f"train: {extra} row(s) repeat an earlier text (after ignoring case and whitespace), "
                f"in {len(groups)} group(s).",
                "Remove the repeats: they weigh those texts more than the rest and can hide leakage.",
                "train",
                extra,
                [row for g in groups for row in g.rows[1:]],
                {"groups": [g.rows for g in groups[:20]]},
            )
        )
    if conflicts:
        audit.add(
            Finding(
                "duplicates",
                "warning",
                f"train: {len(conflicts)} text(s) appear with different labels "
                f"(e.g. rows {', '.join(map(str, conflicts[0].rows))}"
                f": {', '.join(conflicts[0].labels)}).",
                "Decide the right label for each and fix the others: the model cannot learn both.",
                "train",
                len(conflicts),
                [row for g in conflicts for row in g.rows],
                {"conflicts": [{"rows": g.rows, "labels": g.labels} for g in conflicts[:20]]},
            )
        )
    pairs = near_duplicates(
        train, text_columns, threshold=config.audit.near_duplicate_threshold, seed=config.train.seed
    )
    if pairs:
        audit.add(
            Finding(
                "duplicates",
                "note",
                f"train: {len(pairs)} pair(s) of near-duplicate texts "
                f"(similarity >= {config.audit.near_duplicate_threshold}).",
                "Review them: templated or lightly edited copies inflate the weight of a few examples.",
                "train",
                len(pairs),
                list(dict.fromkeys(row for pair in pairs for row in pair[:2])),
                {"pairs": [list(pair) for pair in pairs[:20]]},
            )
        )


def leaks_by_split(frames: dict[str, pd.DataFrame], text_columns: list[str], config: RunConfig) -> dict[str, list]:
    """For each evaluation split, its rows whose text also stands (exactly or nearly) in train."""
    return {
        split: find_leakage(
            frames["train"],
            frames[split],
            text_columns,
            threshold=config.audit.near_duplicate_threshold,
            seed=config.train.seed,
        )
        for split in frames
        if split != "train"
    }


def check_leakage(frames: dict[str, pd.DataFrame], text_columns: list[str], config: RunConfig, audit: Audit) -> None:
    for split, leaks in leaks_by_split(frames, text_columns, config).items():
        if not leaks:
            continue
        exact = sum(leak.kind == "exact" for leak in leaks)
        dropped = len({row for leak in leaks for row in leak.train_rows})
        where = f"{split}: {len(leaks)} row(s) also stand in train ({exact} exactly, {len(leaks) - exact} nearly)"
        audit.add(
            Finding(
                "leakage",
                "note" if config.data.dedupe else "error",
                f"{where}; data.dedupe drops the {dropped} train row(s) involved from training."
                if config.data.dedupe
                else f"{where}; every {split} metric would be inflated by them.",
                f"Remove these rows from {split} or from train (the same text must not be in both), or set "
                "data.dedupe: true to drop them from training.",
                split,
                len(leaks),
                [leak.row for leak in leaks],
                {"leaks": [{"row": leak.row, "train_rows": leak.train_rows, "kind": leak.kind} for leak in leaks[:20]]},
            )
        )


def leaked_train_rows(frames: dict[str, pd.DataFrame], text_columns: list[str], config: RunConfig) -> set[int]:
    """Row numbers of train rows whose text also stands, exactly or nearly, in validation or test."""
    leaks = leaks_by_split(frames, text_columns, config).values()
    return {row for split_leaks in leaks for leak in split_leaks for row in leak.train_rows}


def check_label_noise(train: pd.DataFrame, text_columns: list[str], config: RunConfig, audit: Audit) -> None:
    result = find_label_issues(train, text_columns, config.data.label_column, seed=config.train.seed)
    if result is None or not result.n_flagged:
        return
    audit.add(
        Finding(
            "label_noise",
            "warning",
            f"train: {result.n_flagged} row(s) have a label the rest of the data disputes (a TF-IDF baseline, "
            f"{result.baseline_accuracy:.0%} accurate out of fold, confidently predicts another label).",
            "Review the listed rows and correct wrong labels; nothing is dropped automatically.",
            "train",
            result.n_flagged,
            [s.row for s in result.suspects],
            {"suspects": [s.__dict__ for s in result.suspects]},
        )
    )


def check_personal_data(
    frames: dict[str, pd.DataFrame], text_columns: list[str], scanner: PiiScanner, audit: Audit
) -> None:
    for split, frame in frames.items():
        matches = scanner.scan(frame, text_columns)
        if not matches:
            continue
        by_type: dict[str, int] = {}
        for match in matches:
            by_type[match.entity] = by_type.get(match.entity, 0) + 1
        rows = sorted({m.row for m in matches})
        summary = ", ".join(f"{count} {entity}" for entity, count in sorted(by_type.items()))
        audit.add(
            Finding(
                "personal_data",
                "warning",
                f"{split}: personal data in {len(rows)} row(s): {summary}.",
                "Remove or pseudonymise it before training (tunewise check --redact DIR writes redacted copies): a "
                "model can memorise and repeat it.",
                split,
                len(rows),
                rows,
                {"by_type": by_type},
            )
        )
    audit.add(Finding("personal_data", "note", scanner.note))


def write_audit(audit: Audit, folder: Path) -> Path:
    """audit.json (lengths summarised as a histogram) plus the class-balance and token-length plots."""
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
    (folder / "audit.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    return folder / "audit.json"
