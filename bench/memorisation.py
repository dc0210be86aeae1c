"""What SmolLM2-135M-Instruct memorises when fine-tuned, with and without DP-SGD: canary exposure.

Carlini et al. (2019, "The Secret Sharer") measure memorisation as the exposure of random secrets
("canaries") inserted into the training data. Both runs here fine-tune SmolLM2-135M-Instruct with LoRA
on the same 200 SMS chats from the bundled SMS Spam Collection (CC BY 4.0; an SMS as the user turn,
ham or spam as the reply, as bench/chat_defaults.py builds them) with `privacy.canaries: 10`, each
inserted 8 times (`--repeats 32`: 32 times); the second trains under `privacy.dp: {epsilon: 8}`.
Reported: the mean and max exposure of the inserted canaries beside the reference canaries never
inserted (chance: ~1.4 bits; the maximum, a secret given away: 29.9), the spent epsilon, test exact
match and time.

Settings: 3 epochs, batch 8, one chat per row (DP-SGD never packs; the plain run does not either, so both
take the same steps), LoRA; learning rate 1e-3 without DP (the hand-tuned rate of
bench/chat_defaults.py) and 1e-2 with it (DP-SGD's noise wants a larger rate; README, Differential
privacy); no red team (safety.prompts: null) - bench/safety.py measures that.

    python bench/memorisation.py               # both runs, 8 insertions each: ~25 minutes on 2 CPU cores
    python bench/memorisation.py --repeats 32  # both runs again, each canary inserted 32 times

Writes bench/results/memorisation.json and prints the table.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from chat_defaults import SMS, balanced_chats, write_jsonl  # noqa: E402  (the same chats)
from generation import environment  # noqa: E402

RESULTS_FILE = REPO / "bench/results/memorisation.json"
RUNS = {"no DP": None, "DP epsilon 8": {"epsilon": 8.0}}
LEARNING_RATES = {"no DP": 1e-3, "DP epsilon 8": 1e-2}


def run_one(name: str, folder: Path, repeats: int) -> dict[str, Any]:
    from rich.console import Console

    import tunewise

    data = folder / "data"
    data.mkdir(exist_ok=True)
    config = {
        "task": "causal-lm",
        "model": "smollm2-135m-instruct",
        "data": {
            "train": write_jsonl(data / "train.jsonl", balanced_chats(SMS / "train.tsv", 200, seed=0)),
            "test": write_jsonl(data / "test.jsonl", balanced_chats(SMS / "test.tsv", 100, seed=1)),
            "format": "messages",
            "max_length": 256,
            "dedupe": True,
            "packing": False,  # one chat per row in both runs, as DP-SGD trains: the same steps over the same rows
        },
        "strategy": {"method": "lora"},
        "generation": {"max_new_tokens": 8},
        "train": {
            "epochs": 3,
            "batch_size": 8,
            "learning_rate": LEARNING_RATES[name],
            "seed": 0,
            "early_stopping": None,
        },
        "privacy": {"canaries": 10, "canary_repeats": repeats, "dp": RUNS[name]},
        "safety": {"prompts": None},
        "output_dir": str(folder / name.replace(" ", "-")),
    }
    started = time.perf_counter()
    run = tunewise.train(config, show_progress=False, console=Console(file=io.StringIO()))
    seconds = time.perf_counter() - started
    memorised = json.loads((run.run_dir / "memorisation.json").read_text(encoding="utf-8"))
    record = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
    canaries = memorised["canaries"]
    return {
        "inserted": {k: canaries["inserted"][k] for k in ("mean_exposure", "max_exposure")},
        "reference": canaries["reference"],
        "max_exposure_possible": canaries["max_exposure_possible"],
        "spent_epsilon": round(record["privacy"]["epsilon"], 2) if record.get("privacy") else None,
        "dp": record.get("privacy"),
        "test_exact_match": run.metrics["test"].get("exact_match"),
        "seconds": round(seconds, 1),
        "train_seconds": record["durations_seconds"]["training"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=8, help="insertions of each canary (privacy.canary_repeats)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as temporary:
        for name in args.runs:
            key = f"{name}, {args.repeats} insertions"
            results[key] = run_one(name, Path(temporary), args.repeats)
            print(key, json.dumps(results[key]))
    previous = json.loads(RESULTS_FILE.read_text(encoding="utf-8")) if RESULTS_FILE.exists() else {}
    results = {**previous.get("runs", {}), **results}
    report = {"environment": environment(), "runs": results}
    RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        f"{'run':<30} {'inserted mean/max':>18} {'reference mean/max':>19} {'epsilon':>8} {'exact':>6} {'train s':>8}"
    )
    for name, result in results.items():
        inserted, reference = result["inserted"], result["reference"]
        print(
            f"{name:<30} {inserted['mean_exposure']:>8.1f} / {inserted['max_exposure']:<7.1f} "
            f"{reference['mean_exposure']:>8.1f} / {reference['max_exposure']:<8.1f} "
            f"{result['spent_epsilon'] if result['spent_epsilon'] is not None else '-':>8} "
            f"{result['test_exact_match']:>6.1f} {result['train_seconds']:>8.0f}"
        )


if __name__ == "__main__":
    main()
