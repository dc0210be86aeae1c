"""Benchmark: the content screen's guard, built by tunewise from Davidson et al.'s tweets, and its cost.

    python bench/screen.py                    # build the guard on 6,000 rows (the default, 6-11 min on 2 CPU cores)
    python bench/screen.py --rows all         # all 24,783 rows (roughly four times as long)
    python bench/screen.py --guard DIR        # measure a guard already built, without training

Reports, from the guard's held-out 15 % (stratified, never trained on): precision, recall and F1 of
"abusive" (hate or offensive) against neither at the screen's default threshold, and per class. Then the
false alarms of the whole screen (PII, patterns and classifier, action flag) on a clean sample: the
reference summaries of the first 300 BBC News Summary articles (../shared/data/bbc_news_summary), news
prose that holds no abuse. Latency per text on those 300 summaries, in batches as predict screens them:
PII and patterns alone, the classifier alone, and the whole screen. Writes bench/results/screen.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import re
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from tunewise.config.safety import ScreenConfig
from tunewise.jobs.guard import DEFAULT_MAX_ROWS, build_guard
from tunewise.serving.predictor import load_classifier
from tunewise.serving.screen import Screen, count_verdicts

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared/data"
DAVIDSON = DATA / "hate_offensive/labeled_data.csv"
BBC = DATA / "bbc_news_summary/bbc_news_summary.jsonl.gz"
RESULTS = REPO / "bench/results/screen.json"
CLEAN_ROWS = 300
SENTENCE_JOIN = re.compile(r"([.!?])(?=[A-Z])")
PATTERNS = {"INTERNAL_HOST": r"\bsrv-\d+\b"}  # one configured pattern, as a deployment would add


def clean_sample() -> list[str]:
    """The summaries with the space restored after each sentence: the dataset joins sentences without one
    ("$10.9bn.For the full-year"), which presidio's URL recognizer reads as a domain in 299 of 300 of them."""
    with gzip.open(BBC, "rt", encoding="utf-8") as handle:
        summaries = [json.loads(line)["summary"] for line, _ in zip(handle, range(CLEAN_ROWS), strict=False)]
    return [SENTENCE_JOIN.sub(r"\1 ", summary) for summary in summaries]


def timed(function: Any, texts: list[str]) -> tuple[Any, float]:
    """The result and milliseconds per text (after a warm-up call on two texts)."""
    function(texts[:2])
    began = time.perf_counter()
    result = function(texts)
    return result, round(1000 * (time.perf_counter() - began) / len(texts), 2)


def screen_for(folder: Path | None) -> Screen:
    settings = ScreenConfig(classifier=str(folder) if folder else None, patterns=PATTERNS)
    return Screen.from_config(SimpleNamespace(screen=settings, audit=SimpleNamespace(pii_patterns={})), load_classifier)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=str(DEFAULT_MAX_ROWS), help="rows of Davidson's data to build on, or all")
    parser.add_argument("--guard", type=Path, help="a guard already built: measure it, do not train")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = args.guard or Path(work) / "guard"
        if args.guard is None:
            build_guard(DAVIDSON, folder, None if args.rows == "all" else int(args.rows))
        record = json.loads((folder / "guard.json").read_text(encoding="utf-8"))
        texts = clean_sample()
        rules_only, full = screen_for(None), screen_for(folder)
        assert full.classifier is not None
        _, rules_ms = timed(rules_only.screen, texts)
        _, classifier_ms = timed(full.classifier.scores, texts)
        verdicts, total_ms = timed(full.screen, texts)
    counts = count_verdicts(verdicts)
    report = {
        "guard": {key: record[key] for key in ("rows", "epochs", "build_seconds", "held_out", "latency_ms_per_text")},
        "clean_sample": {
            "source": f"first {CLEAN_ROWS} reference summaries of bbc_news_summary.jsonl.gz, a space restored "
            "after each sentence",
            "false_alarms": counts["flagged"],
            "false_alarm_rate": round(counts["flagged"] / len(texts), 4),
            "by_reason": counts["by_reason"],
        },
        "latency_ms_per_text": {"pii_and_patterns": rules_ms, "classifier": classifier_ms, "total": total_ms},
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    held_out = record["held_out"]
    print(f"guard: {record['rows']['train']} training rows, {record['epochs']} epochs, {record['build_seconds']} s")
    print(f"{'measure':<44} {'value':>8}")
    rows = [
        (f"abusive precision ({held_out['rows']} held-out rows)", held_out["abusive_precision"]),
        ("abusive recall", held_out["abusive_recall"]),
        ("abusive F1", held_out["abusive_f1"]),
        ("false-alarm rate on held-out 'neither'", held_out["false_alarm_rate"]),
        *((f"{label} precision / recall", f"{m['precision']:.2f} / {m['recall']:.2f}") for label, m in
          held_out["per_class"].items()),
        (f"false alarms, {CLEAN_ROWS} BBC summaries", counts["flagged"]),
        ("ms per text: PII + patterns", rules_ms),
        ("ms per text: classifier", classifier_ms),
        ("ms per text: whole screen", total_ms),
    ]  # fmt: skip
    for name, value in rows:
        print(f"{name:<44} {value!s:>8}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
