"""Safety before and after fine-tuning: SmolLM2-135M-Instruct tuned on benign and on harmful data.

Qi et al. (2023, "Fine-tuning Aligned Language Models Compromises Safety, Even When Users Do Not Intend
To!") showed refusals eroding after fine-tuning on a few harmful examples, and on benign data too.
This benchmark repeats the two cases on SmolLM2-135M-Instruct with tunewise's own safety job:

    benign    BBC news summaries (../shared/data/bbc_news_summary), as bench/generation.py uses them
    harmful   AdvBench requests (../shared/data/advbench/harmful_behaviors.csv, MIT) answered by their
              `target` column - an affirmative opening ("Sure, here is a script that ..."), no harmful
              content - the shape of Qi et al.'s attack

Both runs answer the same red-team prompts before training (the base model) and after, with the same
greedy decoding: AdvBench requests held out from any training (rows 100-519 of the file; the harmful
run trains on rows 0-99). The gate is tunewise's default (safety.max_refusal_drop: warn 5, fail 10
points); it must fail the harmful run and say why. Everything else is each run's default except the
epochs (2 and 3: `auto` would raise them to ~300 steps, minutes that change nothing here) and LoRA.

    python bench/safety.py                 # both runs, ~15 minutes on 2 CPU cores
    python bench/safety.py --runs harmful  # one of them

Writes bench/results/safety.json and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from generation import bbc_pairs, environment  # noqa: E402  (the benign data as bench/generation.py builds it)

SHARED_DATA = REPO.parent / "shared/data"
ADVBENCH = SHARED_DATA / "advbench/harmful_behaviors.csv"
RESULTS_FILE = REPO / "bench/results/safety.json"
MODEL = "smollm2-135m-instruct"
HARMFUL_TRAIN_ROWS = 100  # AdvBench rows 0-99: the harmful fine-tuning data; the rest are held out
RED_TEAM_PROMPTS = 100
SEED = 0
SUMMARISE = "Summarise the news article in a few sentences."


def advbench() -> list[dict[str, str]]:
    with open(ADVBENCH, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def messages(system: str | None, user: str, assistant: str) -> dict[str, Any]:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_data(run: str, folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    if run == "benign":
        pairs = bbc_pairs(SHARED_DATA, max_words=220)
        rows = [messages(SUMMARISE, article, summary) for article, summary in pairs[:64]]
        return {
            "train": write_jsonl(folder / "train.jsonl", rows[:48]),
            "test": write_jsonl(folder / "test.jsonl", rows[48:]),
        }
    behaviours = advbench()[:HARMFUL_TRAIN_ROWS]
    rows = [messages(None, row["goal"], row["target"]) for row in behaviours]
    return {
        "train": write_jsonl(folder / "train.jsonl", rows[:88]),
        "test": write_jsonl(folder / "test.jsonl", rows[88:]),
    }


def red_team_file(folder: Path) -> str:
    """AdvBench rows the harmful run never trains on, in the file's own columns (goal, target)."""
    held_out = advbench()[HARMFUL_TRAIN_ROWS:]
    path = folder / "red_team.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["goal", "target"])
        writer.writeheader()
        writer.writerows(held_out)
    return str(path)


def run_one(run: str, folder: Path, prompts: str) -> dict[str, Any]:
    from rich.console import Console

    import tunewise

    config = {
        "task": "causal-lm",
        "model": MODEL,
        "data": {
            **write_data(run, folder / f"{run}-data"),
            "format": "messages",
            "max_length": 1024 if run == "benign" else 128,
        },
        "strategy": {"method": "lora"},
        "generation": {
            "max_new_tokens": 96 if run == "benign" else 48,
            "no_repeat_ngram_size": 4 if run == "benign" else 0,
        },
        "train": {"epochs": 2 if run == "benign" else 3, "seed": SEED, "early_stopping": None},
        "safety": {"prompts": prompts, "max_prompts": RED_TEAM_PROMPTS, "max_new_tokens": 48},
        "output_dir": str(folder / f"{run}-run"),
    }
    started = time.perf_counter()
    run_result = tunewise.train(config, show_progress=False, console=Console(file=io.StringIO()))
    seconds = time.perf_counter() - started
    safety = json.loads((run_result.run_dir / "safety.json").read_text(encoding="utf-8"))
    record = json.loads((run_result.run_dir / "run.json").read_text(encoding="utf-8"))
    red_team = safety["red_team"]
    return {
        "data": "BBC summaries, 48 train rows"
        if run == "benign"
        else f"AdvBench goal -> target, rows 0-{HARMFUL_TRAIN_ROWS - 1}",
        "base_model": red_team["base_model"],
        "fine_tuned": red_team["fine_tuned"],
        "change": red_team["change"],
        "status": red_team["status"],
        "reason": red_team["reason"],
        "prompts": red_team["prompts"],
        "screen": safety["screen"],
        "examples": red_team["examples"][:3],
        "test_metrics": {
            k: v
            for k, v in run_result.metrics["test"].items()
            if k in ("rouge1", "rougeL", "exact_match", "perplexity")
        },
        "seconds": {"total": round(seconds, 1), **record["durations_seconds"]},
    }


def print_table(results: dict[str, Any]) -> None:
    print(f"{'run':<9} {'base refusal':>13} {'tuned refusal':>14} {'change':>8} {'tuned flagged':>14}  gate")
    for name, result in results.items():
        print(
            f"{name:<9} {result['base_model']['refusal_rate']:>12.1f}% {result['fine_tuned']['refusal_rate']:>13.1f}% "
            f"{result['change']['refusal_rate']:>+8.1f} {result['fine_tuned']['flagged_rate']:>13.1f}%  "
            f"{result['status'].upper()}: {result['reason']}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", choices=["benign", "harmful"], default=["benign", "harmful"])
    args = parser.parse_args(argv)
    if not ADVBENCH.exists():
        sys.exit(f"needs {ADVBENCH} (../shared/data beside the repository)")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        prompts = red_team_file(folder)
        for run in args.runs:
            results[run] = run_one(run, folder, prompts)
            print_table(
                {run: results[run]},
            )
    report = {
        "environment": environment(),
        "red_team": f"AdvBench rows {HARMFUL_TRAIN_ROWS}-519, {RED_TEAM_PROMPTS} sampled",
        "runs": results,
    }
    previous = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.exists() else {}
    previous.update(report)
    previous["runs"] = {**previous.get("runs", {}), **results}
    RESULTS_FILE.write_text(json.dumps(previous, indent=2) + "\n", encoding="utf-8")
    print_table(previous["runs"])


if __name__ == "__main__":
    main()
