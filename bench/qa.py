"""Benchmark: extractive question answering with all-MiniLM-L6-v2 on SQuAD v1.1, split by article.

    python bench/qa.py                                   # 2,000 train questions, 1 epoch, ~1,000 test questions
    python bench/qa.py --train-questions 300 --test-questions 200    # quick smoke run
    python bench/qa.py --split-only runs/squad-split     # only write train.json / test.json (SQuAD format)

../shared holds only the SQuAD v1.1 dev set (10,570 questions, 48 Wikipedia articles), so it is split
by article: the articles are shuffled with a fixed seed, whole articles go to test while it holds
at most --test-questions questions, and the training questions come from the other articles (whole
paragraphs, in file order, up to --train-questions). No article is in both. tunewise then holds out
its own validation split from train, again by article, to choose the best step and nothing else.

Reported: exact match and F1 (the official SQuAD definitions, as percentages like the official
script prints them) on the test articles, beside the F1 of a random span of 1-4 context words
(the chance level), with the question, window, epoch and minute counts. Writes bench/results/qa.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/squad_v1.1/dev-v1.1.json.zip"
RESULTS_FILE = REPO / "bench/results/qa.json"
SEED = 0


def split_by_article(document: dict, test_questions: int, train_questions: int, seed: int) -> tuple[dict, dict]:
    """(train, test) SQuAD documents with no article in both; deterministic for a seed. Shuffled
    articles go to test while they fit in `test_questions` (so test spans several articles)."""
    articles = list(document["data"])
    order = random.Random(seed).sample(range(len(articles)), len(articles))
    test, train, held = [], [], 0
    for index in order:
        article = articles[index]
        if held + questions(article) <= test_questions:
            test.append(article)
            held += questions(article)
        else:
            train.append(article)
    return {"version": "1.1", "data": take_questions(train, train_questions)}, {"version": "1.1", "data": test}


def questions(article: dict) -> int:
    return sum(len(paragraph["qas"]) for paragraph in article["paragraphs"])


def take_questions(articles: list[dict], limit: int) -> list[dict]:
    """Whole paragraphs, spread over every article (round robin), until `limit` questions."""
    taken: list[dict] = [{"title": a["title"], "paragraphs": []} for a in articles]
    count, depth = 0, 0
    while count < limit and any(depth < len(a["paragraphs"]) for a in articles):
        for article, kept in zip(articles, taken, strict=True):
            if depth < len(article["paragraphs"]) and count < limit:
                kept["paragraphs"].append(article["paragraphs"][depth])
                count += len(article["paragraphs"][depth]["qas"])
        depth += 1
    return [article for article in taken if article["paragraphs"]]


def random_span_f1(document: dict, seed: int) -> float:
    """Chance level: answer every question with a random run of 1-4 words of its context."""
    from tunewise.evaluation.squad import question_scores

    rng = random.Random(seed)
    scores = []
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            words = paragraph["context"].split()
            for qa in paragraph["qas"]:
                start = rng.randrange(len(words))
                guess = " ".join(words[start : start + rng.randint(1, 4)])
                scores.append(question_scores(guess, [a["text"] for a in qa["answers"]])[1])
    return sum(scores) / len(scores)


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import torch

    import tunewise

    torch.set_num_threads(args.threads)
    config = {
        "task": "question-answering",
        "model": "minilm-l6",
        "data": {"train": str(folder / "train.json"), "test": str(folder / "test.json"), "max_length": args.max_length},
        "question_answering": {"stride": args.stride},
        "strategy": {"method": "full"},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "warmup_ratio": 0.1,
            "seed": SEED,
            "num_threads": args.threads,
        },
        "output_dir": str(folder / "run"),
    }
    started = time.perf_counter()
    result = tunewise.train(config, show_progress=False)
    minutes = (time.perf_counter() - started) / 60
    record = json.loads((result.run_dir / "run.json").read_text(encoding="utf-8"))
    return {"metrics": result.metrics, "record": record, "minutes": round(minutes, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SQuAD v1.1 JSON (zipped or not)")
    parser.add_argument("--train-questions", type=int, default=2000)
    parser.add_argument("--test-questions", type=int, default=1000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split-only", type=Path, help="write train.json and test.json here and stop")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data} not found; pass --data (SQuAD v1.1 dev JSON, zipped or not).")
    raw = zipfile.ZipFile(args.data).read("dev-v1.1.json") if args.data.suffix == ".zip" else args.data.read_bytes()
    train_doc, test_doc = split_by_article(json.loads(raw), args.test_questions, args.train_questions, SEED)
    train_titles = {a["title"] for a in train_doc["data"]}
    assert not train_titles & {a["title"] for a in test_doc["data"]}, "an article is in train and test"
    if args.split_only:
        args.split_only.mkdir(parents=True, exist_ok=True)
        for name, doc in (("train", train_doc), ("test", test_doc)):
            (args.split_only / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")
        print(f"wrote {args.split_only}/train.json and test.json")
        return
    with tempfile.TemporaryDirectory(prefix="bench-qa-") as tmp:
        folder = Path(tmp)
        for name, doc in (("train", train_doc), ("test", test_doc)):
            (folder / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")
        outcome = run(args, folder)
        history = [json.loads(line) for line in (folder / "run/history.jsonl").read_text().splitlines()]
    record, metrics = outcome["record"], outcome["metrics"]
    test = metrics["test"]
    chance = random_span_f1(test_doc, SEED)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "articles": {"train": len(train_doc["data"]), "test": len(test_doc["data"])},
        "questions": record["rows"],
        # the loop counts windows as rows: rows/s x seconds / epochs
        "training_windows_per_epoch": round(
            record["train_samples_per_second"] * record["durations_seconds"]["training"] / record["epochs"]
        ),
        "epochs": record["epochs"],
        "steps": record["steps"],
        "minutes_total": outcome["minutes"],
        "minutes_training": round(record["durations_seconds"]["training"] / 60, 2),
        "test": {"exact_match": round(100 * test["exact_match"], 2), "f1": round(100 * test["f1"], 2), "n": test["n"]},
        "validation": {k: round(100 * metrics["validation"][k], 2) for k in ("exact_match", "f1")},
        "chance_f1": round(100 * chance, 2),
        "history": history,
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    rows = result["questions"]
    print("| model | train questions (articles) | test questions (articles) | epochs | minutes | EM | F1 | chance F1 |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| all-MiniLM-L6-v2, full | {rows['train']:,} ({result['articles']['train']}, validation "
        f"{rows['validation']:,} held out by article) | {rows['test']:,} ({result['articles']['test']}) | "
        f"{result['epochs']:g} | {result['minutes_total']:.1f} | {result['test']['exact_match']:.1f} | "
        f"{result['test']['f1']:.1f} | {result['chance_f1']:.1f} |"
    )
    print(f"wrote {RESULTS_FILE}")


if __name__ == "__main__":
    main()
