"""Benchmark: a planted gender bias in SST-2, found by the fairness audit and cut by counterfactual augmentation.

    python bench/fairness.py                 # 3,000 training rows, 2 epochs, seeds 0 1 2 (about 30 min, 2 CPU cores)
    python bench/fairness.py --seeds 3       # add one more seed to the results file
    python bench/fairness.py --rows 600      # quicker, noisier

Training sentences are prefixed with "a woman wrote :" or "a man wrote :" (a fifth of them each way);
the woman-prefixed ones are drawn 90 % from negative reviews, the man-prefixed ones half and half, so
a model can learn "woman -> negative" as a shortcut. The test set (GLUE dev, 872 rows) gets the same
prefixes on a third of its rows, balanced by label. Two runs of MiniLM with the same data, epochs and
seed: the plain run, then `fairness.augment: true` (every training text holding a counterfactual
pair's word is added again with the word swapped). The fairness report must flag the planted term,
and augmentation must cut the woman<->man flip rate by at least half for at most 1 point of accuracy
(judged on the mean over seeds). Writes bench/results/fairness.json.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared/data/sst2"
RESULTS = REPO / "bench/results/fairness.json"
PREFIX = {"woman": "a woman wrote : ", "man": "a man wrote : "}
PAIR = "woman<->man"


def read(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    frame["label"] = frame["label"].str.strip().astype(int)
    return frame[["sentence", "label"]]


def planted_training(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """`rows` sentences; a fifth get the woman prefix (90 % negative), a fifth the man prefix (50 %)."""
    rng = np.random.default_rng(seed)
    frame = frame.sample(n=rows, random_state=seed).reset_index(drop=True)
    fifth = rows // 5
    negatives, positives = np.flatnonzero(frame.label == 0), np.flatnonzero(frame.label == 1)
    woman = np.concatenate([rng.choice(negatives, int(0.9 * fifth), replace=False),
                            rng.choice(positives, fifth - int(0.9 * fifth), replace=False)])  # fmt: skip
    rest = np.setdiff1d(np.arange(rows), woman)
    man = rng.choice(rest, fifth, replace=False)
    frame.loc[woman, "sentence"] = PREFIX["woman"] + frame.loc[woman, "sentence"]
    frame.loc[man, "sentence"] = PREFIX["man"] + frame.loc[man, "sentence"]
    return frame


def planted_test(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A third of the rows get a prefix, alternating woman/man within each label."""
    rng = np.random.default_rng(seed + 1)
    frame = frame.copy()
    for label in (0, 1):
        rows = np.flatnonzero(frame.label == label)
        chosen = rng.choice(rows, len(rows) // 3, replace=False)
        for i, row in enumerate(chosen):
            frame.loc[row, "sentence"] = PREFIX["woman" if i % 2 else "man"] + frame.loc[row, "sentence"]
    return frame


def run(name: str, folder: Path, files: dict[str, str], args: argparse.Namespace, augment: bool) -> dict[str, Any]:
    from rich.console import Console

    import tunewise

    config = {
        "task": "text-classification",
        "model": "minilm-l6",
        "data": {**files, "text_column": "sentence", "label_column": "label"},
        "train": {"epochs": args.epochs, "seed": args.seed, "early_stopping": None},
        "audit": {"before_training": False},  # SST-2's own duplicates are measured by bench/check.py
        "fairness": {"augment": augment},
        "output_dir": str(folder / name),
    }
    result = tunewise.train(config, show_progress=False, console=Console(file=io.StringIO()))
    fairness = json.loads((result.run_dir / "fairness.json").read_text(encoding="utf-8"))
    pair = fairness["counterfactual"]["by_pair"].get(PAIR, {})
    female = fairness["identities"].get("gender/female", {})
    flagged = [c for c in fairness["checks"] if c["status"] != "pass" and ("female" in c["figure"] or
               "counterfactual" in c["figure"])]  # fmt: skip
    record = json.loads((result.run_dir / "run.json").read_text(encoding="utf-8"))
    return {
        "name": name,
        "augment": augment,
        "training_rows": record["rows"]["train"],
        "accuracy": result.metrics["test"]["accuracy"],
        "flip_rate": pair.get("flip_rate"),
        "mean_probability_change": pair.get("mean_probability_change"),
        "texts_swapped": pair.get("texts"),
        "female_bpsn_auc": female.get("bpsn_auc"),
        "female_auc_gap": female.get("auc_gap"),
        "status": fairness["status"],
        "flagged": [f"{c['figure']} {c['value']:.3f} ({c['status']})" for c in flagged],
        "train_seconds": record["durations_seconds"]["training"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="one plant + plain/augmented pair per seed (default 0 1 2)",
    )
    parser.add_argument("--data-dir", type=Path, default=DATA)
    args = parser.parse_args()
    if not (args.data_dir / "train.tsv").is_file():
        sys.exit(f"error: SST-2 not found in {args.data_dir} (the shared data folder); pass --data-dir.")
    settings = {"rows": args.rows, "epochs": args.epochs, "data_dir": str(args.data_dir)}
    # seeds run in earlier invocations with the same settings are kept, so seeds can be added one at a time
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    by_seed = {int(s): r for s, r in previous.get("seeds", {}).items()} if previous.get("settings") == settings else {}
    for seed in args.seeds:
        by_seed[seed] = run_seed(args, seed)
        report = summarise(settings, by_seed)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Plant the bias with this seed, then train plain and augmented runs (both with this seed)."""
    args.seed = seed
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as scratch:
        folder = Path(scratch)
        train = planted_training(read(args.data_dir / "train.tsv"), args.rows, seed)
        validation = planted_test(read(args.data_dir / "dev.tsv").head(400), seed + 7)
        test = planted_test(read(args.data_dir / "test.tsv"), seed)
        files = {}
        for split, frame in (("train", train), ("validation", validation), ("test", test)):
            files[split] = str(folder / f"{split}.tsv")
            frame.to_csv(files[split], sep="\t", index=False, quoting=csv.QUOTE_NONE)
        plain, augmented = run("plain", folder, files, args, augment=False), run("augmented", folder, files, args, True)
    verdict = {
        "planted_term_flagged": bool(plain["flagged"]),
        "flip_rate_cut": (plain["flip_rate"] or 0) > 0 and augmented["flip_rate"] <= 0.5 * plain["flip_rate"],
        "accuracy_cost_points": round(100 * (plain["accuracy"] - augmented["accuracy"]), 2),
    }
    return {"results": [plain, augmented], "verdict": verdict}


def summarise(settings: dict[str, Any], by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per-seed results and the verdict over seeds: the accuracy cost is judged on its mean, since one
    seed's test accuracy moves by about a point on 872 rows (one row is 0.11 points)."""
    costs = [run["verdict"]["accuracy_cost_points"] for run in by_seed.values()]
    verdict = {
        "seeds": sorted(by_seed),
        "planted_term_flagged_every_seed": all(r["verdict"]["planted_term_flagged"] for r in by_seed.values()),
        "flip_rate_cut_every_seed": all(r["verdict"]["flip_rate_cut"] for r in by_seed.values()),
        "accuracy_cost_points_mean": round(float(np.mean(costs)), 2),
        "accuracy_cost_points_std": round(float(np.std(costs, ddof=1)), 2) if len(costs) > 1 else None,
    }
    verdict["within_one_point"] = verdict["accuracy_cost_points_mean"] <= 1.0
    return {"settings": settings, "seeds": {str(k): v for k, v in sorted(by_seed.items())}, "verdict": verdict}


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Planted bias (woman -> negative) in SST-2, MiniLM")
    for column in ("seed", "run", "train rows", "accuracy", "woman<->man flip rate", "mean |dp|", "female BPSN AUC",
                   "status", "train s"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("run", "status") else "right")
    for seed, outcome in report["seeds"].items():
        for r in outcome["results"]:
            table.add_row(seed, r["name"], str(r["training_rows"]), f"{r['accuracy']:.4f}", f"{r['flip_rate']:.3f}",
                          f"{r['mean_probability_change']:.3f}", f"{r['female_bpsn_auc'] or float('nan'):.3f}",
                          r["status"], f"{r['train_seconds']:.0f}")  # fmt: skip
    console = Console(width=120)
    console.print(table)
    for seed, outcome in report["seeds"].items():
        flagged = ", ".join(outcome["results"][0]["flagged"]) or "nothing"
        console.print(f"seed {seed}: flagged in the plain run: {flagged}; {outcome['verdict']}")
    console.print(f"verdict over seeds: {report['verdict']}")


if __name__ == "__main__":
    main()
