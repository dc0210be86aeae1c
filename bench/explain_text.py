"""Are tunewise's text explanations faithful, and what do they cost? Every Captum method on SST-2 and on
the planted-bias set of bench/fairness.py.

Fine-tunes all-MiniLM-L6-v2 (model: minilm-l6) twice with tunewise's defaults: on the first `--rows` rows of
SST-2, and on the same number of rows with fairness.py's planted bias ("a woman wrote :" prefixed to a fifth
of the rows, 90 % of them negative). On `--explain-rows` test rows, each method explains the predicted label,
and the deletion test of ERASER (DeYoung et al., 2020) measures it:

- comprehensiveness: the drop in the predicted label's probability when the k most-attributed words are
  deleted, beside the drop when k random words are deleted (higher than random = the words mattered);
- sufficiency: the drop when only the k most-attributed words are kept, beside k random words kept
  (lower than random = the words suffice).

On the planted set, the biased predictions are the woman-prefixed test rows whose predicted label changes
when "woman" is swapped for "man": for those the planted word must be the top attribution. A sweep of
integrated gradients' steps gives the time per explanation and the convergence delta (the completeness gap
relative to the explained change in probability).

    python bench/explain_text.py                       # 2,000 rows, 200 explained (about 15 minutes, 2 CPU cores)
    python bench/explain_text.py --rows 300 --explain-rows 40      # smoke run

Writes bench/results/explain_text.json and prints the tables.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fairness import planted_test, planted_training, read  # the planted bias, as fairness.py plants it

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "explain_text.json"
STEP_SWEEP = (8, 16, 32, 64)
SEED = 0


def write_splits(folder: Path, splits: dict[str, pd.DataFrame]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, frame in splits.items():
        paths[split] = str(folder / f"{split}.tsv")
        frame.to_csv(paths[split], sep="\t", index=False, quoting=csv.QUOTE_NONE)
    return paths


def train(folder: Path, files: dict[str, str], name: str) -> Any:
    import tunewise

    config = {
        "task": "text-classification",
        "model": "minilm-l6",
        "data": {**files, "text_column": "sentence", "label_column": "label"},
        "train": {"seed": SEED},
        "audit": {"before_training": False},
        "explain": {"enabled": False},  # measured here, method by method
        "output_dir": str(folder / name),
    }
    return tunewise.train(config, show_progress=False, console=Console(file=io.StringIO()))


def explain_all(model: Any, frame: pd.DataFrame, method: str, steps: int = 32) -> tuple[list, list, float]:
    """The targets, their explanations and the seconds per explanation (the model's forward for the
    targets not counted: that is prediction, which the user pays anyway)."""
    from tunewise.explain import explain_targets
    from tunewise.explain.settings import ExplainSettings
    from tunewise.tasks import explanation

    targets = explanation(model.task).targets(model.model, model.processor, frame, model.max_length)
    start = time.perf_counter()
    explanations = explain_targets(model.model, targets, ExplainSettings(method=method, steps=steps))
    return targets, explanations, (time.perf_counter() - start) / max(len(targets), 1)


def measure_methods(model: Any, frame: pd.DataFrame) -> list[dict[str, Any]]:
    from tunewise.explain import measure_faithfulness
    from tunewise.explain.results import METHODS

    rows = []
    for method in METHODS:
        targets, explanations, seconds = explain_all(model, frame, method)
        faithfulness = measure_faithfulness(model.model, targets, explanations, seed=SEED)
        deltas = [e.convergence_delta for e in explanations if e.convergence_delta is not None]
        rows.append({
            "method": method,
            "seconds_per_explanation": seconds,
            "convergence_delta_mean": float(np.mean(deltas)) if deltas else None,
            "faithfulness": faithfulness.as_dict(),
        })  # fmt: skip
    return rows


def sweep_steps(model: Any, frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for steps in STEP_SWEEP:
        _, explanations, seconds = explain_all(model, frame, "integrated_gradients", steps)
        deltas = [e.convergence_delta for e in explanations if e.convergence_delta is not None]
        rows.append({
            "steps": steps,
            "seconds_per_explanation": seconds,
            "convergence_delta_mean": float(np.mean(deltas)),
            "convergence_delta_p90": float(np.quantile(deltas, 0.9)),
        })  # fmt: skip
    return rows


def planted_word_on_top(model: Any, test: pd.DataFrame, method: str) -> dict[str, Any]:
    """Among the woman-prefixed rows whose prediction flips when "woman" becomes "man" (the biased
    predictions), how often "woman" is the most-attributed word toward the predicted label, and its rank."""
    prefixed = test[test.sentence.str.startswith("a woman wrote :")].reset_index(drop=True)
    swapped = prefixed.assign(sentence=prefixed.sentence.str.replace("a woman wrote :", "a man wrote :", n=1))
    before = [p["label"] for p in model.predict(prefixed.sentence.tolist())]
    after = [p["label"] for p in model.predict(swapped.sentence.tolist())]
    biased = prefixed[[b != a for b, a in zip(before, after, strict=True)]].reset_index(drop=True)
    if biased.empty:
        return {"method": method, "prefixed_rows": len(prefixed), "biased_rows": 0}
    _, explanations, _ = explain_all(model, biased[["sentence"]], method)
    ranks = []
    for explained in explanations:
        order = [w.text.lower() for w in sorted(explained.words, key=lambda w: w.score, reverse=True)]
        ranks.append(order.index("woman") + 1 if "woman" in order else len(order) + 1)
    ranks_array = np.array(ranks)
    return {
        "method": method,
        "prefixed_rows": len(prefixed),
        "biased_rows": len(biased),
        "woman_top1_share": float(np.mean(ranks_array == 1)),
        "woman_top3_share": float(np.mean(ranks_array <= 3)),
        "woman_median_rank": float(np.median(ranks_array)),
    }


def sst2_splits(data_dir: Path, rows: int) -> dict[str, pd.DataFrame]:
    return {
        "train": read(data_dir / "train.tsv").head(rows),
        "validation": read(data_dir / "dev.tsv").head(300),
        "test": read(data_dir / "test.tsv"),
    }


def planted_splits(data_dir: Path, rows: int) -> dict[str, pd.DataFrame]:
    return {
        "train": planted_training(read(data_dir / "train.tsv"), rows, SEED),
        "validation": planted_test(read(data_dir / "dev.tsv").head(300), SEED + 7),
        "test": planted_test(read(data_dir / "test.tsv"), SEED),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="training rows")
    parser.add_argument("--explain-rows", type=int, default=200, help="test rows explained per method")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    if not (args.data_dir / "train.tsv").is_file():
        raise SystemExit(f"error: SST-2 not found in {args.data_dir} (the shared data folder); pass --data-dir.")
    report: dict[str, Any] = {
        "settings": {"rows": args.rows, "explain_rows": args.explain_rows, "model": "minilm-l6", "seed": SEED},
        "hardware": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
    }
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as scratch:
        folder = Path(scratch)
        splits = sst2_splits(args.data_dir, args.rows)
        run = train(folder, write_splits(folder / "sst2", splits), "sst2-run")
        sample = splits["test"].sample(n=min(args.explain_rows, len(splits["test"])), random_state=SEED)
        sample = sample[["sentence"]].reset_index(drop=True)
        report["sst2"] = {
            "test_accuracy": run.metrics["test"]["accuracy"],
            "methods": measure_methods(run.model, sample),
            "steps": sweep_steps(run.model, sample.head(min(50, len(sample)))),
        }
        planted = planted_splits(args.data_dir, args.rows)
        run = train(folder, write_splits(folder / "planted", planted), "planted-run")
        sample = planted["test"].sample(n=min(args.explain_rows, len(planted["test"])), random_state=SEED)
        sample = sample[["sentence"]].reset_index(drop=True)
        from tunewise.explain.results import METHODS

        report["planted"] = {
            "test_accuracy": run.metrics["test"]["accuracy"],
            "methods": measure_methods(run.model, sample),
            "planted_word": [planted_word_on_top(run.model, planted["test"], method) for method in METHODS],
        }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_tables(report)


def print_tables(report: dict[str, Any]) -> None:
    console = Console(width=160)
    for workload in ("sst2", "planted"):
        table = Table(
            title=f"{workload}: faithfulness per method (test accuracy {report[workload]['test_accuracy']:.4f})"
        )
        for column in ("method", "s / explanation", "conv. delta", "k", "compr. top", "compr. random",
                       "suff. top", "suff. random", "rows"):  # fmt: skip
            table.add_column(column, justify="left" if column == "method" else "right")
        for row in report[workload]["methods"]:
            delta = row["convergence_delta_mean"]
            for k, figures in row["faithfulness"]["by_k"].items():
                table.add_row(row["method"], f"{row['seconds_per_explanation']:.3f}",
                              "-" if delta is None else f"{delta:.4f}", k,
                              f"{figures['comprehensiveness_top']:.3f}", f"{figures['comprehensiveness_random']:.3f}",
                              f"{figures['sufficiency_top']:.3f}", f"{figures['sufficiency_random']:.3f}",
                              str(figures["rows"]))  # fmt: skip
        console.print(table)
    table = Table(title="integrated gradients: steps against time and convergence (sst2)")
    for column in ("steps", "s / explanation", "delta mean", "delta p90"):
        table.add_column(column, justify="right")
    for row in report["sst2"]["steps"]:
        table.add_row(str(row["steps"]), f"{row['seconds_per_explanation']:.3f}",
                      f"{row['convergence_delta_mean']:.4f}", f"{row['convergence_delta_p90']:.4f}")  # fmt: skip
    console.print(table)
    table = Table(title="planted bias: is 'woman' the top attribution of the biased predictions?")
    for column in ("method", "prefixed rows", "biased rows", "top-1", "top-3", "median rank"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in report["planted"]["planted_word"]:
        if not row["biased_rows"]:
            table.add_row(row["method"], str(row["prefixed_rows"]), "0", "-", "-", "-")
            continue
        table.add_row(row["method"], str(row["prefixed_rows"]), str(row["biased_rows"]),
                      f"{row['woman_top1_share']:.2f}", f"{row['woman_top3_share']:.2f}",
                      f"{row['woman_median_rank']:.1f}")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
