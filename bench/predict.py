"""Prediction speed: tunewise's batch API against a transformers `pipeline` on the same model and texts.

    python bench/predict.py                        # the model of runs/sms-spam (trained if missing)
    python bench/predict.py --run runs/my-run --texts my.csv --column text

Every contender classifies the same texts with the same weights; the script checks they agree on
every label, prints a table (seconds, texts/s, speed-up) and writes bench/results/predict.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

import tunewise

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
EXAMPLE = ROOT / "examples" / "sms_spam.yaml"
DEFAULT_TEXTS = ROOT / "tunewise" / "data" / "builtin" / "sms_spam" / "test.tsv"


def ensure_run(run_dir: Path, scratch: Path) -> Path:
    """Prediction speed does not depend on accuracy: a short training run is enough when none exists."""
    if (run_dir / "model").is_dir():
        return run_dir
    target = scratch / "run"
    tunewise.train(EXAMPLE, overrides=["train.epochs=0.1", f"output_dir={target}"], show_progress=False)
    return target


def time_call(function, repeats: int) -> tuple[float, object]:
    function()  # warm-up: first-call allocations and lazy initialisation are not what is compared
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "sms-spam")
    parser.add_argument("--texts", type=Path, default=DEFAULT_TEXTS, help="CSV/TSV file holding the texts")
    parser.add_argument("--column", default="text")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from transformers import pipeline
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    separator = "\t" if args.texts.suffix == ".tsv" else ","
    texts = pd.read_csv(args.texts, sep=separator, dtype=str, keep_default_na=False, quoting=3)[args.column].tolist()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = ensure_run(args.run, Path(scratch))
        model = tunewise.load(run_dir, device=device)
        max_length = model.max_length
        classifier = pipeline(
            "text-classification", model=str(run_dir / "model"), trust_remote_code=True, device=device
        )
        tunewise_seconds, tunewise_out = time_call(lambda: model.predict(texts), args.repeats)
        reference = [p["label"] for p in tunewise_out]
        rows = []
        for batch in (1, 64):  # 1 is pipeline's default
            seconds, output = time_call(
                lambda b=batch: classifier(texts, batch_size=b, truncation=True, max_length=max_length), args.repeats
            )
            agree = sum(o["label"] == r for o, r in zip(output, reference, strict=True)) / len(texts)
            rows.append(
                {"contender": f"pipeline, batch_size {batch}", "seconds": round(seconds, 3), "agreement": agree}
            )
        rows.append(
            {
                "contender": "tunewise predict (length-sorted, batch 64)",
                "seconds": round(tunewise_seconds, 3),
                "agreement": 1.0,
            }
        )

    for row in rows:
        row["texts_per_second"] = round(len(texts) / row["seconds"], 1)
        row["tunewise_speedup"] = round(row["seconds"] / tunewise_seconds, 2)
    table = Table(title=f"Prediction: {len(texts)} texts, {device}, best of {args.repeats}")
    for column in ("contender", "seconds", "texts/s", "tunewise speed-up", "labels agree"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for row in rows:
        table.add_row(
            row["contender"],
            f"{row['seconds']:.2f}",
            f"{row['texts_per_second']:.0f}",
            f"{row['tunewise_speedup']:.2f}x",
            f"{row['agreement']:.1%}",
        )
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"device": device, "texts": len(texts), "threads": torch.get_num_threads(), "results": rows}
    (RESULTS / "predict.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
