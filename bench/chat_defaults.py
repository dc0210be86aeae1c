"""Do causal-lm's defaults learn? SmolLM2-135M-Instruct on 200 real SMS chats, defaults against a hand-tuned run.

    python bench/chat_defaults.py                       # both settings (about 20 min on 2 CPU cores)
    python bench/chat_defaults.py --settings defaults

Each chat is a system turn ("Answer spam or ham."), an SMS from the bundled SMS Spam Collection as the
user turn and its label as the answer; 200 balanced training chats, 100 balanced test chats from the
test file. `defaults` sets only the task, the model and the data (and max_new_tokens, a decoding
choice); `hand-tuned` is the setting tests/tasks/test_causal_lm_smollm2.py uses (LoRA, lr 1e-3, batch
8, 2 epochs, one chat per row). The base model is scored in each run on the same test prompts.
Writes bench/results/chat_defaults.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SMS = REPO / "tunewise/data/builtin/sms_spam"
RESULTS_FILE = REPO / "bench/results/chat_defaults.json"
SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "hand-tuned": {
        "data": {"max_length": 256, "packing": False},
        "strategy": {"method": "lora"},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "early_stopping": None},
    },
}


def balanced_chats(source: Path, count: int, seed: int) -> list[dict[str, Any]]:
    with open(source, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rng = random.Random(seed)
    picked = [
        row for label in ("spam", "ham") for row in rng.sample([r for r in rows if r["label"] == label], count // 2)
    ]
    rng.shuffle(picked)
    return [
        {
            "messages": [
                {"role": "system", "content": "Answer spam or ham."},
                {"role": "user", "content": row["text"].strip()},
                {"role": "assistant", "content": row["label"]},
            ]
        }
        for row in picked
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def run(name: str, folder: Path) -> dict[str, Any]:
    from rich.console import Console

    import tunewise

    overrides = SETTINGS[name]
    data = {
        "train": write_jsonl(folder / "train.jsonl", balanced_chats(SMS / "train.tsv", 200, seed=0)),
        "test": write_jsonl(folder / "test.jsonl", balanced_chats(SMS / "test.tsv", 100, seed=1)),
    }
    config = {
        "task": "causal-lm",
        "model": "smollm2-135m-instruct",
        # one test SMS nearly repeats a training one: the data check stops such a run unless it is dropped
        "data": {**data, "dedupe": True, **overrides.get("data", {})},
        "generation": {"max_new_tokens": 8},
        "output_dir": str(folder / name),
        **{key: value for key, value in overrides.items() if key != "data"},
    }
    started = time.perf_counter()
    result = tunewise.train(config, show_progress=False, console=Console(file=io.StringIO()))
    record = json.loads((result.run_dir / "run.json").read_text(encoding="utf-8"))
    test = result.metrics["test"]
    return {
        "name": name,
        "exact_match": test["exact_match"],
        "base_model_exact_match": test["baselines"]["base_model"]["exact_match"],
        "method": result.config.strategy.method,
        "batch_size": record["batch_size"],
        "learning_rate": record["learning_rate"],
        "epochs": result.config.train.epochs,
        "steps": record.get("steps"),
        "train_seconds": record["durations_seconds"]["training"],
        "total_seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS))
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    results = []
    for name in args.settings:
        with tempfile.TemporaryDirectory(prefix=f"bench-chat-{name}-") as scratch:
            results.append(run(name, Path(scratch)))
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = Table(title="SmolLM2-135M-Instruct, 200 SMS chats, exact match on 100 test chats")
    for column in ("setting", "exact match", "base model", "method", "batch", "lr", "epochs", "steps", "train s"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r["name"], f"{r['exact_match']:.1f}", f"{r['base_model_exact_match']:.1f}", r["method"],
            str(r["batch_size"]), f"{r['learning_rate']:.2e}", str(r["epochs"]), str(r["steps"]),
            f"{r['train_seconds']:.0f}",
        )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
