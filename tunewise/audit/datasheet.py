"""A datasheet for the dataset (Gebru et al., "Datasheets for Datasets", 2018/2021), half filled in.

The audit can answer the composition questions (sizes, labels, duplicates, leakage, personal data,
lengths); only the people who built the dataset can answer why, how and by whom it was collected.
Those questions are kept, clearly marked, so the datasheet is honest about what is still missing.
"""

from __future__ import annotations

from pathlib import Path

from tunewise.audit.findings import Audit, Finding
from tunewise.config.sections import RunConfig
from tunewise.runs.atomic import write_text

ASK = "> **To answer (only you can):**"
SECTIONS = (
    "Motivation",
    "Composition",
    "Collection process",
    "Preprocessing, cleaning and labelling",
    "Uses",
    "Distribution",
    "Maintenance",
)

USER_QUESTIONS = {
    "Motivation": [
        "For what purpose was the dataset created? Was there a specific task or gap in mind?",
        "Who created it, on behalf of which organisation, and who funded it?",
    ],
    "Collection process": [
        "How was each text collected (scraped, reported by users, written by annotators, ...), and over what period?",
        "Who was involved (crowdworkers, employees, volunteers) and how were they paid?",
        "Did the people the texts are about or by consent to this use? Was an ethical review carried out?",
    ],
    "Preprocessing, cleaning and labelling": [
        "How were the labels assigned (by whom, with which guidelines), and how was their quality checked?",
        "Was anything removed or changed before this file was written?",
    ],
    "Uses": [
        "What other tasks has the dataset been used for? What should it not be used for?",
        "Could its composition or collection harm people if used for some purpose (e.g. unfair treatment)?",
    ],
    "Distribution": [
        "Under which licence or terms may the data be shared? Are there third-party or export restrictions?",
    ],
    "Maintenance": [
        "Who maintains the dataset, how can they be contacted, and will it be updated or corrected?",
    ],
}


def write_datasheet(audit: Audit, config: RunConfig, path: Path) -> Path:
    lines = ["# Datasheet", "", f"Data named by the run config: {_sources(config)}.", ""]
    for section in SECTIONS:
        lines += [f"## {section}", ""]
        if section == "Composition":
            lines += composition(audit, config)
        if section == "Preprocessing, cleaning and labelling":
            lines += preprocessing(audit, config)
        for question in USER_QUESTIONS.get(section, []):
            lines += [f"{ASK} {question}", ""]  # a blank line each, or markdown merges the quotes
    write_text(path, "\n".join(lines))
    return path


def composition(audit: Audit, config: RunConfig) -> list[str]:
    """What the audit measured: sizes, labels, lengths, and the problems it found."""
    lines = [
        "Measured by `tunewise check`:",
        "",
        "| split | rows | classes (rows) | tokens: median / 95th pct / max |",
        "|---|---|---|---|",
    ]
    for split, stats in audit.statistics.items():
        classes = ", ".join(f"{name} ({count})" for name, count in stats.get("class_counts", {}).items()) or "-"
        tokens = stats.get("tokens", {})
        length = f"{tokens.get('median', '-')} / {tokens.get('p95', '-')} / {tokens.get('max', '-')}"
        lines.append(f"| {split} | {stats['rows']} | {classes} | {length} |")
    lines.append("")
    for check, title in (
        ("duplicates", "Duplicates"),
        ("leakage", "Overlap between splits"),
        ("personal_data", "Personal data"),
        ("balance", "Class balance"),
        ("label_noise", "Disputed labels"),
    ):
        findings = [f for f in audit.findings if f.check == check]
        lines.append(f"- **{title}:** " + ("; ".join(_describe(f) for f in findings) if findings else "none found."))
    shared = {"duplicates", "leakage", "personal_data", "balance", "label_noise", "validity", "length"}
    task_findings = [f for f in audit.findings if f.check not in shared]  # e.g. NER tag schemes, QA answer spans
    if task_findings:
        lines.append("- **Task-specific checks:** " + "; ".join(_describe(f) for f in task_findings))
    lines += [
        "",
        f"{ASK} What does one row represent, and is the data a sample of a larger set? If so, how "
        "was it sampled and is it representative?",
        "",
        f"{ASK} Does the data relate to people? Does it identify sub-populations (age, gender, ...)?",
        "",
    ]
    return lines


def preprocessing(audit: Audit, config: RunConfig) -> list[str]:
    lengths = [stats for stats in audit.statistics.values() if "max_length" in stats]
    cut = sum(stats.get("truncated_rows", 0) for stats in lengths)
    max_length = lengths[0]["max_length"] if lengths else config.data.max_length
    return [
        f"tunewise tokenises with the tokenizer of `{config.model}` and cuts inputs at {max_length} tokens "
        f"({cut} row(s) across the splits are longer). It neither drops nor edits rows; the audit only reports.",
        "",
    ]


def _describe(finding: Finding) -> str:
    where = f"rows {', '.join(map(str, finding.rows))}" if finding.rows else ""
    return f"{finding.severity}: {finding.message}" + (f" (e.g. {where})" if where else "")


def _sources(config: RunConfig) -> str:
    names = {split: getattr(config.data, split) for split in ("train", "validation", "test")}
    return ", ".join(f"{split} `{source}`" for split, source in names.items() if source)
