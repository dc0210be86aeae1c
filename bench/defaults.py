"""Which defaults matter when fine-tuning MiniLM on small data? Pooling, learning rate, epochs, warm-up.

Fine-tunes the real all-MiniLM-L6-v2 weights with tunewise on a few thousand rows of held-out real
datasets and scores each setting on a fixed test set, so the README's defaults rest on numbers:

    python bench/defaults.py                  # SST-2 (binary) and AG News (4 classes)
    python bench/defaults.py --rows 1000 --datasets sst2

Writes bench/results/defaults.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

import tunewise

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"

# (name, pooling, learning rate, epochs, warm-up ratio)
SETTINGS = [
    ("tutorial: cls, 5e-5, 2 ep", "cls", 5e-5, 2, 0.0),
    ("cls, 1e-4, 3 ep", "cls", 1e-4, 3, 0.06),
    ("mean, 5e-5, 2 ep", "mean", 5e-5, 2, 0.0),
    ("mean, 1e-4, 2 ep", "mean", 1e-4, 2, 0.06),
    ("tunewise default: mean, 1e-4, 3 ep", "mean", 1e-4, 3, 0.06),
    ("mean, 1e-4, 3 ep, no warm-up", "mean", 1e-4, 3, 0.0),
    ("mean, 2e-4, 3 ep", "mean", 2e-4, 3, 0.06),
]

LONG_TEXT_SETTINGS = (0, 1, 4)  # AG News texts are ~4x longer: the decisive comparisons only


def load_dataset(name: str, rows: int, test_rows: int, folder: Path) -> dict[str, str]:
    """Balanced training rows and a fixed test slice, written as CSV files tunewise reads."""
    if name == "sst2":
        train = pd.read_csv(SHARED / "sst2/train.tsv", sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
        test = pd.read_csv(SHARED / "sst2/test.tsv", sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
        train, test = (f.rename(columns={"sentence": "text"}) for f in (train, test))
        validation = pd.read_csv(SHARED / "sst2/dev.tsv", sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
        validation = validation.rename(columns={"sentence": "text"})
    else:  # AG News: 4 topics; the dev file (sampled from train) gives training and validation rows
        frame, test = (
            pd.read_csv(
                SHARED / f"ag_news/{split}.tsv",
                sep="\t",
                dtype=str,
                quoting=csv.QUOTE_NONE,
                header=None,
                names=["text", "label"],
            )
            for split in ("dev", "test")
        )
        validation, train = frame.iloc[:300], frame.iloc[300:]
    per_class = rows // train["label"].nunique()
    train = train.sample(frac=1.0, random_state=0).groupby("label").head(per_class)
    paths = {}
    for split, part in {
        "train": train,
        "validation": validation.iloc[:300],
        "test": test.sample(min(test_rows, len(test)), random_state=0),
    }.items():
        paths[split] = str(folder / f"{name}-{split}.csv")
        part[["text", "label"]].to_csv(paths[split], index=False)
    return paths


def run_setting(paths: dict[str, str], setting: tuple, folder: Path, max_length: int) -> dict:
    name, pooling, lr, epochs, warmup = setting
    config = {
        "model": "minilm-l6",
        "data": {**paths, "max_length": max_length},
        "strategy": {"pooling": pooling},
        "train": {
            "epochs": epochs,
            "learning_rate": lr,
            "warmup_ratio": warmup,
            "batch_size": 32,
            "early_stopping": None,
            "checkpoint_every": 100000,
        },
        "output_dir": str(folder / f"run-{abs(hash(setting))}"),
    }
    started = time.perf_counter()
    run = tunewise.train(config, show_progress=False, overwrite=True)
    per_epoch = [h["metrics"]["accuracy"] for h in run.history if h.get("split") == "validation"]
    return {
        "setting": name,
        "test_accuracy": run.metrics["test"]["accuracy"],
        "test_f1_macro": run.metrics["test"]["f1_macro"],
        "validation_accuracy_by_epoch": per_epoch,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--test-rows", type=int, default=872)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "ag_news"])
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared datasets at {SHARED}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            paths = load_dataset(dataset, args.rows, args.test_rows, Path(tmp))
            for setting in SETTINGS if dataset == "sst2" else [SETTINGS[i] for i in LONG_TEXT_SETTINGS]:
                result = {
                    "dataset": dataset,
                    "rows": args.rows,
                    **run_setting(paths, setting, Path(tmp), args.max_length),
                }
                results.append(result)
                print(json.dumps(result), flush=True)
    table = Table(title=f"MiniLM, {args.rows} training rows, batch 32")
    for column in ("dataset", "setting", "test accuracy", "test F1 macro", "val acc by epoch", "seconds"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r["dataset"],
            r["setting"],
            f"{r['test_accuracy']:.3f}",
            f"{r['test_f1_macro']:.3f}",
            " ".join(f"{a:.3f}" for a in r["validation_accuracy_by_epoch"]),
            str(r["seconds"]),
        )
    Console().print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "defaults.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
