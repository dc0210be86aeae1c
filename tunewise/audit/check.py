"""The data check: every check over the data files a config names, before a single training step.

The checks read the frames preparation parsed (the same the trainer trains on) and add findings; a
file that did not read is itself a finding (an error), so the audit reports everything it can
instead of stopping at the first problem. `tunewise check` and `tunewise train` both call
`audit_data` (through `tunewise.jobs.check`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from tunewise.audit.basic_checks import class_balance, text_quality, token_lengths
from tunewise.audit.duplicates import Leak, exact_duplicates, find_leakage, near_duplicates
from tunewise.audit.findings import Audit
from tunewise.audit.label_noise import find_label_issues
from tunewise.audit.pii import PiiScanner
from tunewise.config.sections import RunConfig
from tunewise.errors import TunewiseError
from tunewise.types import Finding, TaskFacts


def audit_data(
    files: dict[str, pd.DataFrame],
    problems: list[TunewiseError],
    facts: TaskFacts,
    task_findings: Callable[[dict[str, pd.DataFrame]], list[Finding]],
    processor: Any,
    max_length: int,
    config: RunConfig,
    leaks: dict[str, list[Leak]] | None = None,
) -> Audit:
    """Every check over the data files as read (train whole, before any held-out split).

    `problems` are what preparation could not read or check: each is an error finding. When the
    training data itself failed, nothing else can be checked against it. `leaks`: the evaluation rows
    that also stand in train, when preparation already found them (data.dedupe) on these same frames."""
    audit = Audit()
    # first: a configured NER model that is not installed is a ConfigError, whatever the data holds
    scanner = PiiScanner(custom_patterns=config.audit.pii_patterns, ner_model=config.audit.pii_ner_model)
    for problem in problems:
        audit.add(Finding("validity", "error", str(problem), split=getattr(problem, "split", None)))
    if "train" not in files or any(getattr(problem, "split", None) == "train" for problem in problems):
        return audit
    frames = files
    text_columns = list(facts.text_columns)
    labelled = facts.capabilities.class_labels
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
                frame, text_columns, processor, max_length, split, config.audit.truncation_warning_share
            )
            stats.update(lengths)
            shared_lengths_apply = facts.capabilities.truncates and not facts.capabilities.measures_own_lengths
            for finding in findings if shared_lengths_apply else []:  # windows cut nothing
                audit.add(finding)
        audit.statistics[split] = stats
    for finding in task_findings(frames):
        audit.add(finding)
    if not text_columns:  # images: the text checks below do not apply
        return audit
    check_duplicates(frames["train"], text_columns, config, audit)
    check_leakage(leaks if leaks is not None else leaks_by_split(frames, text_columns, config), config, audit)
    if labelled and config.audit.label_noise:
        check_label_noise(frames["train"], text_columns, config, audit)
    check_personal_data(frames, text_columns, scanner, audit)
    return audit


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


def leaks_by_split(
    frames: dict[str, pd.DataFrame], text_columns: list[str], config: RunConfig
) -> dict[str, list[Leak]]:
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


def check_leakage(found: dict[str, list[Leak]], config: RunConfig, audit: Audit) -> None:
    for split, leaks in found.items():
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
