"""ONNX export: PyTorch fp32 against ONNX Runtime fp32 and int8 (dynamic quantization), the same weights.

    python bench/export.py                          # the SMS spam run (trained if missing) and an SST-2 run
    python bench/export.py --sms-run runs/sms-spam --sst2-rows 4000

Each run is exported once with `--quantize int8` (`tunewise.jobs.export.export_run`), which measures all
three engines on the run's own test split in one process, on the same prepared batches and the same
number of threads: accuracy and F1, file size, CPU latency at batch 1 (median of 64 rows, one at a
time) and throughput at batch 32 (512 rows in batches of 32, longest first). The script
prints one table per run, with the speed-ups over PyTorch, and writes bench/results/export.json (the
export job's whole record for each run, the gate's verdict included). An int8 export the gate refuses
is reported with its numbers all the same.

Runs: SMS spam is examples/sms_spam.yaml (all-MiniLM-L6-v2, `model: minilm-l6`, built-in data) trained
for `--sms-epochs` (default 1, not the example's 2: the comparison is of one set of weights in three
engines, not of training); SST-2 is MiniLM on the first `--sst2-rows` rows of ../shared/data/sst2
train.tsv (1 epoch, 200 dev rows as validation), tested on its 872 test rows; skipped with a note when
../shared is absent.

Published anchor: ONNX Runtime's BERT-base MRPC example (dynamic int8 quantization, "Quantize BERT
model" notebook): accuracy 0.8603 -> 0.8578, 417.7 -> 106.5 MB, 1.73x the speed of PyTorch fp32 on a
CPU; on CPUs without VNNI (int8 dot products in one instruction) the gains are smaller, 10-20 %. The
JSON records whether this CPU has VNNI.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

import tunewise
from tunewise.errors import ExportRefused
from tunewise.jobs.export import export_run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
EXAMPLE = ROOT / "examples" / "sms_spam.yaml"
SST2 = ROOT.parent / "shared" / "data" / "sst2"
ENGINES = {"pytorch": "PyTorch fp32", "onnx_fp32": "ONNX Runtime fp32", "onnx_int8": "ONNX Runtime int8"}
ANCHOR = {
    "source": "ONNX Runtime, Quantize BERT model (BERT-base, MRPC), dynamic int8",
    "accuracy": [0.8603, 0.8578],
    "size_mb": [417.7, 106.5],
    "speedup_over_pytorch_fp32": 1.73,
    "without_vnni": "10-20 % faster",
}


def sms_run(run_dir: Path | None, epochs: float, scratch: Path) -> Path:
    """The given SMS spam run, or the example trained for `epochs` into `scratch`."""
    if run_dir is not None:
        return run_dir
    target = scratch / "sms-spam"
    overrides = [f"train.epochs={epochs}", f"output_dir={target}"]
    tunewise.train(EXAMPLE, overrides=overrides, show_progress=False)
    return target


def sst2_run(rows: int, scratch: Path) -> Path:
    """MiniLM fine-tuned on the first `rows` rows of SST-2 train.tsv for one epoch."""
    files = {}
    for split, source, limit in (("train", "train", rows), ("validation", "dev", 200), ("test", "test", None)):
        frame = pd.read_csv(SST2 / f"{source}.tsv", sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
        files[split] = str(scratch / f"sst2-{split}.csv")
        frame.rename(columns={"sentence": "text"}).iloc[:limit].to_csv(files[split], index=False)
    config = {
        "model": "minilm-l6",
        "data": {**files, "max_length": 128, "dedupe": True},
        "train": {"epochs": 1, "batch_size": 32, "early_stopping": None, "checkpoint_every": 10**9},
        "output_dir": str(scratch / "sst2"),
    }
    tunewise.train(config, show_progress=False)
    return scratch / "sst2"


def measure(run_dir: Path, output: Path, max_drop: float) -> dict[str, Any]:
    """The int8 export job's record (also when its gate refuses the int8 model)."""
    started = time.perf_counter()
    try:
        record = export_run(run_dir, output=output, quantize="int8", max_drop=max_drop, overwrite=True)
    except ExportRefused as refused:
        record = refused.result
    return {**record, "export_seconds": round(time.perf_counter() - started, 1)}


def rows_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per engine: quality, size and speed, with the speed-ups over PyTorch."""
    speed, sizes, metrics = record["speed"], record["file_bytes"], record["metrics"]
    base = speed["pytorch"]
    rows = []
    for engine, label in ENGINES.items():
        size = sizes["pytorch_safetensors" if engine == "pytorch" else engine]
        rows.append(
            {
                "engine": label,
                "accuracy": metrics[engine]["accuracy"],
                "f1_macro": metrics[engine]["f1_macro"],
                "size_mb": size / 1e6,
                "latency_ms": speed[engine]["latency_batch1_ms"],
                "latency_speedup": base["latency_batch1_ms"] / speed[engine]["latency_batch1_ms"],
                "throughput": speed[engine]["throughput_batch32_rows_per_s"],
                "throughput_speedup": speed[engine]["throughput_batch32_rows_per_s"]
                / base["throughput_batch32_rows_per_s"],
                "max_logit_difference": record["max_abs_logit_difference"].get(engine, 0.0),
            }
        )
    return rows


def table_of(name: str, record: dict[str, Any]) -> Table:
    data, gate = record["data"], record["gate"]
    verdict = "accepted" if gate["accepted"] else "REFUSED"
    title = (
        f"{name}: {data['rows']} {data['split']} rows, {record['speed']['threads']} threads; int8 gate {verdict} "
        f"({gate['metric']} drop {gate['drop']:.2f} {gate['unit']}, max {gate['max_drop']:g})"
    )
    table = Table(title=title)
    columns = ("engine", "accuracy", "F1 macro", "MB", "latency b1 ms", "x", "rows/s b32", "x", "max |dlogit|")
    for column in columns:
        table.add_column(column, justify="left" if column == "engine" else "right")
    for row in rows_of(record):
        table.add_row(
            row["engine"],
            f"{row['accuracy']:.4f}",
            f"{row['f1_macro']:.4f}",
            f"{row['size_mb']:.1f}",
            f"{row['latency_ms']:.2f}",
            f"{row['latency_speedup']:.2f}x",
            f"{row['throughput']:.0f}",
            f"{row['throughput_speedup']:.2f}x",
            f"{row['max_logit_difference']:.1e}",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms-run", type=Path, help="a finished SMS spam run (default: train the example)")
    parser.add_argument("--sms-epochs", type=float, default=1.0)
    parser.add_argument("--sst2-rows", type=int, default=2000)
    parser.add_argument("--max-drop", type=float, default=1.0, help="the int8 gate's tolerance, in points")
    parser.add_argument("--output", type=Path, default=RESULTS / "export.json")
    args = parser.parse_args()

    console = Console()
    results: dict[str, Any] = {"anchor": ANCHOR, "settings": vars(args) | {"output": str(args.output)}, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="tunewise-bench-export-") as folder:
        scratch = Path(folder)
        runs = {"sms-spam": lambda: sms_run(args.sms_run, args.sms_epochs, scratch)}
        if (SST2 / "train.tsv").is_file():
            runs["sst2"] = lambda: sst2_run(args.sst2_rows, scratch)
        else:
            console.print(f"SST-2 skipped: {SST2} not found (the shared data folder beside the repository)")
            results["skipped"] = {"sst2": f"{SST2} not found"}
        for name, make in runs.items():
            started = time.perf_counter()
            run_dir = make()
            trained = round(time.perf_counter() - started, 1)
            record = measure(run_dir, scratch / f"{name}-onnx-int8", args.max_drop)
            results["runs"][name] = {"train_seconds": trained, "table": rows_of(record), "export": record}
            console.print(table_of(name, record))
    hardware = next(iter(results["runs"].values()))["export"]["hardware"]
    console.print(
        f"CPU: {hardware['cpu']}, {hardware['cores']} cores, VNNI {'yes' if hardware['vnni'] else 'no'}. Published "
        f"anchor ({ANCHOR['source']}): accuracy 0.8603 -> 0.8578, 417.7 -> 106.5 MB, 1.73x PyTorch fp32 "
        "(10-20 % without VNNI)."
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
