"""Audit speed and findings: `tunewise check` on the full SST-2 training set (GLUE train, 67,349 rows).

    python bench/check.py                          # ../shared/data/sst2: train.tsv + dev.tsv as train, test.tsv as test
    python bench/check.py --data-dir DIR --model minilm-l6

train is `train.tsv` + `dev.tsv` concatenated (together GLUE SST-2 train), written to a temporary folder;
no validation file is given, so training would hold out a stratified share of train and the audit covers all
of train; test is `test.tsv` (GLUE SST-2 dev, 872 rows). The audit runs through `run_audit` and `write_audit`,
exactly as `tunewise check` calls them; each check is timed by wrapping the function the runner calls, so the
per-check times add up to (nearly all of) the total. Prints a table of seconds per check and what the audit
found, and writes bench/results/check.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sst2"

# (label in the table, module, attribute that does the work): preparation reads the data and loads the
# tokenizer, the data check (tunewise.audit.check) runs the checks
TIMED = (
    ("read + validate data", "tunewise.prepare.planner", "prepare_data"),
    ("tokenizer load", "tunewise.prepare.planner", "prepare_model"),
    ("validity / text quality", "tunewise.audit.check", "text_quality"),
    ("balance", "tunewise.audit.check", "class_balance"),
    ("token lengths", "tunewise.audit.check", "token_lengths"),
    ("exact duplicates", "tunewise.audit.check", "exact_duplicates"),
    ("near duplicates (MinHash)", "tunewise.audit.check", "near_duplicates"),
    ("leakage (exact + near)", "tunewise.audit.check", "find_leakage"),
    ("label noise (cleanlab)", "tunewise.audit.check", "find_label_issues"),
)


def concatenate(data_dir: Path, scratch: Path) -> dict[str, str]:
    """train.tsv + dev.tsv as one train file (GLUE train), test.tsv as test."""
    read = lambda name: pd.read_csv(  # noqa: E731
        data_dir / name, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False
    )
    train = pd.concat([read("train.tsv"), read("dev.tsv")], ignore_index=True)
    path = scratch / "train.tsv"
    train.to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_NONE)
    return {"train": str(path), "test": str(data_dir / "test.tsv")}


def read_rows(path: Path) -> pd.DataFrame:
    """A split with the row numbers the audit reports (line numbers: the header is line 1, data starts at 2)."""
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    frame["_row"] = range(2, len(frame) + 2)
    return frame.set_index("_row", drop=False)


def near_pair_details(train: pd.DataFrame, threshold: float, seed: int) -> dict:
    """All near pairs again (untimed; the finding keeps 20): how many have identical words, how many disagree."""
    from tunewise.audit.duplicates import near_duplicates

    pairs = near_duplicates(train, ["sentence"], threshold=threshold, seed=seed)
    labels = train["label"]
    return {
        "rows_in_near_pairs": len({row for a, b, _ in pairs for row in (a, b)}),
        "near_pairs_same_words": sum(similarity == 1.0 for *_, similarity in pairs),
        "near_pairs_with_different_labels": sum(labels[a] != labels[b] for a, b, _ in pairs),
    }


def instrument(pii_module, seconds: dict[str, float]) -> None:
    """Replace what the check calls by timed wrappers that add their wall time to `seconds[label]`."""
    import importlib

    def timed(label: str, function: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - started

        return wrapper

    for label, module_name, name in TIMED:
        module = importlib.import_module(module_name)
        setattr(module, name, timed(label, getattr(module, name)))
    scanner = pii_module.PiiScanner
    scanner.scan = timed("personal data (PII)", scanner.scan)


def findings_summary(audit, texts: dict[str, pd.Series]) -> dict:
    """The counts worth reporting, read from the findings the audit produced, with example texts.

    `texts[split]` maps the audit's row numbers (file lines, the header being line 1) to texts.
    """
    text = lambda split, row: str(texts[split].get(row, ""))  # noqa: E731
    summary: dict = {
        "errors": 0,
        "warnings": 0,
        "notes": 0,
        "exact_duplicate_rows": 0,
        "exact_duplicate_groups": 0,
        "conflicting_texts": 0,
        "near_duplicate_pairs": 0,
        "leaked_rows": {split: {"total": 0, "exact": 0} for split in audit.statistics if split != "train"},
        "label_suspects": 0,
        "personal_data": {},
    }
    for finding in audit.findings:
        summary[finding.severity + "s"] += 1
        details = finding.details
        if finding.check == "duplicates" and "groups" in details:
            summary["exact_duplicate_rows"] = finding.count
            summary["exact_duplicate_groups"] = int(re.search(r"in (\d+) group", finding.message).group(1))
        elif finding.check == "duplicates" and "conflicts" in details:
            summary["conflicting_texts"] = finding.count
            summary["conflict_examples"] = [
                {**conflict, "text": text("train", conflict["rows"][0])} for conflict in details["conflicts"][:10]
            ]
        elif finding.check == "duplicates" and "pairs" in details:
            summary["near_duplicate_pairs"] = finding.count
            summary["near_duplicate_examples"] = [
                {"rows": pair[:2], "similarity": pair[2], "texts": [text("train", pair[0]), text("train", pair[1])]}
                for pair in details["pairs"][:5]
            ]
        elif finding.check == "leakage":
            exact = int(re.search(r"\((\d+) exactly", finding.message).group(1))
            summary["leaked_rows"][finding.split] = {"total": finding.count, "exact": exact}
        elif finding.check == "label_noise":
            summary["label_suspects"] = finding.count
            summary["label_baseline_accuracy"] = re.search(r"(\d+%) accurate", finding.message).group(1)
            summary["label_suspect_examples"] = [
                {**suspect, "text": text("train", suspect["row"])} for suspect in details["suspects"][:10]
            ]
        elif finding.check == "personal_data" and "by_type" in details:
            summary["personal_data"][finding.split] = {
                "rows": finding.count,
                "by_type": details["by_type"],
                "examples": [text(finding.split, row) for row in finding.rows],
            }
        elif finding.check in ("validity", "balance", "length"):
            summary.setdefault(finding.check, []).append(finding.message)
    for split, stats in audit.statistics.items():
        summary.setdefault("splits", {})[split] = {
            "rows": stats["rows"],
            "class_counts": stats.get("class_counts"),
            "tokens": stats.get("tokens"),
            "truncated_rows": stats.get("truncated_rows"),
        }
    return summary


def print_findings(console: Console, found: dict) -> None:
    console.print("[bold]What the audit found[/]")
    console.print(
        f"  exact duplicates: {found['exact_duplicate_rows']} repeated rows in {found['exact_duplicate_groups']} "
        f"groups; {found['conflicting_texts']} texts with conflicting labels"
    )
    for conflict in found.get("conflict_examples", []):
        console.print(f"    rows {conflict['rows']} labels {conflict['labels']}: {conflict['text']!r}")
    console.print(
        f"  near-duplicate pairs: {found['near_duplicate_pairs']} over {found['rows_in_near_pairs']} rows; "
        f"{found['near_pairs_same_words']} with the same words, "
        f"{found['near_pairs_with_different_labels']} with different labels"
    )
    for pair in found.get("near_duplicate_examples", [])[:3]:
        console.print(f"    {pair['similarity']:.2f}: {pair['texts'][0]!r} ~ {pair['texts'][1]!r}")
    for split, leaks in found["leaked_rows"].items():
        console.print(f"  {split} rows also in train: {leaks['total']} ({leaks['exact']} exactly)")
    console.print(
        f"  label suspects: {found['label_suspects']} "
        f"(baseline {found.get('label_baseline_accuracy', '-')} accurate out of fold); the most suspicious:"
    )
    for suspect in found.get("label_suspect_examples", []):
        console.print(
            f"    row {suspect['row']}, given {suspect['given']} "
            f"(p={suspect['confidence_in_given']:.4f}): {suspect['text']!r}"
        )
    for split, personal in found["personal_data"].items():
        console.print(f"  personal data in {split}: {personal['rows']} rows {personal['by_type']}")
        for example in personal["examples"][:3]:
            console.print(f"    {example!r}")
    for check in ("validity", "balance", "length"):
        for message in found.get(check, []):
            console.print(f"  {check}: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder with SST-2 train/dev/test.tsv")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--output", type=Path, default=RESULTS / "check.json")
    args = parser.parse_args()
    console = Console()
    missing = [name for name in ("train.tsv", "dev.tsv", "test.tsv") if not (args.data_dir / name).is_file()]
    if missing:
        console.print(
            f"[yellow]skipped:[/] needs SST-2 ({', '.join(missing)}) in {args.data_dir} (the shared data folder "
            "beside the project, ../shared/data/sst2); pass --data-dir DIR to point elsewhere."
        )
        return

    from transformers.utils import logging as transformers_logging

    import tunewise
    from tunewise.audit import pii as pii_module

    transformers_logging.set_verbosity_error()
    seconds: dict[str, float] = {}
    instrument(pii_module, seconds)
    with tempfile.TemporaryDirectory() as scratch:
        paths = concatenate(args.data_dir, Path(scratch))
        config = tunewise.load_config(
            {
                "model": args.model,
                "data": {**paths, "text_column": "sentence", "label_column": "label"},
                "output_dir": str(Path(scratch) / "run"),
            }
        )
        from tunewise.jobs.check import run_check, write_check
        from tunewise.prepare import prepare_check

        started = time.perf_counter()
        plan = prepare_check(config)
        audit = run_check(plan)
        audited = time.perf_counter() - started
        write_check(audit, plan, Path(scratch) / "audit")
        total = time.perf_counter() - started
        frames = {split: read_rows(Path(path)) for split, path in paths.items()}
        found = findings_summary(audit, {split: frame["sentence"] for split, frame in frames.items()})
        found.update(near_pair_details(frames["train"], config.audit.near_duplicate_threshold, config.train.seed))
    seconds["write audit.json, plots, datasheet"] = total - audited
    accounted = sum(seconds.values())
    seconds["other (findings, bookkeeping)"] = max(total - accounted, 0.0)

    table = Table(title=f"tunewise check on SST-2 GLUE train ({audit.statistics['train']['rows']:,} rows) + test")
    table.add_column("check")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for label, value in seconds.items():
        table.add_row(label, f"{value:.2f}", f"{value / total:.0%}")
    table.add_row("[bold]total", f"[bold]{total:.2f}", "100%")
    console.print(table)

    print_findings(console, found)

    report = {
        "data": {"train": "sst2 train.tsv + dev.tsv (GLUE train)", "test": "sst2 test.tsv (GLUE dev)"},
        "model": args.model,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "load_average": os.getloadavg(),
        "seconds": {label: round(value, 3) for label, value in seconds.items()},
        "total_seconds": round(total, 3),
        "findings": found,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    console.print(f"written to {args.output}")


if __name__ == "__main__":
    main()
