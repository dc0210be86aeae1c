"""Benchmark: chat fine-tuning of SmolLM2-135M-Instruct with LoRA, tunewise against TRL's SFTTrainer.

    python bench/generation.py                 # both tasks, tunewise and trl (about 40 min on 2 CPU cores)
    python bench/generation.py --tasks translate --train-rows 64 --test-rows 8 --epochs 1  # smoke run
    python bench/generation.py --contenders tunewise trl trl-grouped

Two tasks, on real data from ../shared/data (the `shared` folder beside the repository):
- **summarise**: BBC News Summary (bbc_news_summary.jsonl.gz). Each article's first line is its title, which
  is dropped (the published lead-3 does not count it); the reference summaries glue their extracted
  sentences together ("$10.9bn.For the"), so a space is put back between them. Duplicated articles are
  kept once. To fit 2 CPU cores, only articles of at most --max-article-words words are used.
- **translate**: Multi30k English -> German, the first --train-rows pairs of train, the first --test-rows of
  test.

Every example is a chat: a system turn naming the task, the article or English sentence as the user
turn, the summary or German sentence as the assistant turn, rendered by SmolLM2's own ChatML template.
Both contenders train the same rows with the same LoRA (rank 8, alpha 16, dropout 0.1, on q_proj and
v_proj, peft's choice for Llama), batch 8, learning rate, linear schedule with 6 % warm-up, seed,
max length and fp32 on CPU (bf16 on a GPU), and the loss on the assistant turn (with its end-of-turn
token) only:

- `tunewise`: `tunewise.train` with `format: messages`, `strategy.method: lora` and `data.packing: false`
  (so each step sees the same 8 examples as TRL's), with all its evidence on: the data check, the base
  model scored on the test prompts, the trivial baselines, the report.
- `trl`: TRL's `SFTTrainer` as its docs write it for conversational prompt-completion rows
  (`completion_only_loss`, the assistant-only loss for such rows) with `peft_config`; no packing (its default).
- `trl-no-checkpointing`: the same without gradient checkpointing, which SFTConfig turns on by default
  (it recomputes activations in the backward pass: less memory, more time); tunewise does not checkpoint.
- `trl-grouped`: the same with length-grouped batches (`train_sampling_strategy="group_by_length"`), as an
  expert would add.

After training, each contender's model generates greedily for the same test prompts with the same
`max_new_tokens` (left-padded batches of 8, stopping at `<|im_end|>`; for summaries no 4-gram twice within
the answer, without which the tuned model repeats a sentence until the limit), and the texts are scored by the same
code (`tunewise.evaluation.generation`: ROUGE with stemming, sacreBLEU BLEU and chrF). Beside them: the
zero-shot base model (tunewise measures it in its run, on the same prompts), lead-3 of the article and the
source copied.

Measured per contender, each in its own child process: **train s** (TRL: `trainer.train()`; tunewise: the
optimisation steps, `durations_seconds.training`), **tokens/s** (the tokens of the rendered training
conversations times the epochs, over train s: the same count for both), **peak RSS** (the child's
maximum resident memory, model and data included), **total s** (data to scored test generations). The
script prints a table and writes bench/results/generation.json.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared/data"
RESULTS_FILE = REPO / "bench/results/generation.json"
MODEL = "smollm2-135m-instruct"
BATCH_SIZE = 8
LORA = {"r": 8, "alpha": 16, "dropout": 0.1}
LORA_TARGETS = ["q_proj", "v_proj"]  # peft's mapping for Llama, which tunewise's `auto` resolves to
WARMUP_RATIO = 0.06
SEED = 0
VALIDATION_ROWS = 8
CONTENDERS = ("tunewise", "trl", "trl-no-checkpointing", "trl-grouped")

TASKS: dict[str, dict[str, Any]] = {
    "summarise": {
        "system": "Summarise the news article in a few sentences taken from it.",
        "max_new_tokens": 160,
        "no_repeat_ngram_size": 4,  # within the answer: without it the tuned model repeats a sentence to the limit
        "baseline": "lead_3",
        "headline": ("rouge1", "rouge2", "rougeL", "rougeLsum"),
        "max_length": 1024,
    },
    "translate": {
        "system": "Translate the English sentence into German.",
        "max_new_tokens": 64,
        "no_repeat_ngram_size": 0,
        "baseline": "copy_source",
        "headline": ("bleu", "chrf"),
        "max_length": 256,
    },
}


# ----------------------------------------------------------------------------------------------- data


def bbc_pairs(data: Path, max_words: int) -> list[tuple[str, str]]:
    """(article body, repaired summary) pairs, each article once, of at most `max_words` words."""
    path = data / "bbc_news_summary/bbc_news_summary.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    pairs, seen = [], set()
    for row in rows:
        body = row["article"].partition("\n")[2].strip()
        summary = re.sub(r"([.!?][\"']?)(?=[A-Z\"])", r"\1 ", row["summary"].strip())
        if body in seen or len(body.split()) > max_words:
            continue
        seen.add(body)
        pairs.append((body, summary))
    random.Random(SEED).shuffle(pairs)
    return pairs


def multi30k_pairs(data: Path, split: str, rows: int) -> list[tuple[str, str]]:
    folder = data / "multi30k"
    english = (folder / f"{split}.en").read_text(encoding="utf-8").splitlines()
    german = (folder / f"{split}.de").read_text(encoding="utf-8").splitlines()
    return [(en.strip(), de.strip()) for en, de in zip(english, german, strict=True) if en.strip()][:rows]


def chat(system: str, source: str, target: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": source},
            {"role": "assistant", "content": target},
        ]
    }


def conversation_tokens(tokenizer: Any, row: dict[str, Any]) -> int:
    return len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])


def write_task_data(task: str, args: argparse.Namespace, folder: Path, tokenizer: Any) -> dict[str, Any]:
    """train/validation/test JSONL chats for `task` in `folder`; every chat fits the task's max length."""
    spec = TASKS[task]
    fits = lambda row: conversation_tokens(tokenizer, row) <= spec["max_length"]  # noqa: E731
    if task == "summarise":
        rows = [
            row
            for row in (chat(spec["system"], *pair) for pair in bbc_pairs(args.data_dir, args.max_article_words))
            if fits(row)
        ]
        needed = args.test_rows + VALIDATION_ROWS + args.train_rows
        if len(rows) < needed:
            sys.exit(f"only {len(rows)} BBC articles fit --max-article-words {args.max_article_words}; {needed} needed")
        splits = {
            "test": rows[: args.test_rows],
            "validation": rows[args.test_rows : args.test_rows + VALIDATION_ROWS],
            "train": rows[args.test_rows + VALIDATION_ROWS : needed],
        }
    else:
        splits = {
            "train": [chat(spec["system"], *pair) for pair in multi30k_pairs(args.data_dir, "train", args.train_rows)],
            "validation": [
                chat(spec["system"], *pair) for pair in multi30k_pairs(args.data_dir, "val", VALIDATION_ROWS)
            ],
            "test": [chat(spec["system"], *pair) for pair in multi30k_pairs(args.data_dir, "test", args.test_rows)],
        }
        splits = {name: [row for row in rows if fits(row)] for name, rows in splits.items()}
    for name, rows in splits.items():
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return {
        "rows": {name: len(rows) for name, rows in splits.items()},
        "train_tokens_per_epoch": sum(conversation_tokens(tokenizer, row) for row in splits["train"]),
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------- contenders


def peak_memory() -> dict[str, float]:
    import torch

    peaks = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # Linux: KiB
    if torch.cuda.is_available():
        peaks["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peaks


def model_folder() -> str:
    from tunewise.models.registry import resolve_model

    return resolve_model(MODEL).location


def run_tunewise(task: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from rich.console import Console

    import tunewise

    spec = TASKS[task]
    config = {
        "task": "causal-lm",
        "model": MODEL,
        "data": {
            **{split: str(folder / f"{split}.jsonl") for split in ("train", "validation", "test")},
            "format": "messages",
            "max_length": spec["max_length"],
            "packing": False,
        },
        "strategy": {"method": "lora", "lora": LORA},
        "generation": {
            "max_new_tokens": spec["max_new_tokens"],
            "no_repeat_ngram_size": spec["no_repeat_ngram_size"],
            "eval_rows": 4,
            "batch_size": BATCH_SIZE,
        },
        "train": {
            "epochs": args.epochs,
            "batch_size": BATCH_SIZE,
            "learning_rate": args.lr,
            "warmup_ratio": WARMUP_RATIO,
            "scheduler": "linear",
            "seed": SEED,
            "early_stopping": None,
            "checkpoint_every": 10**9,
        },
        "output_dir": str(folder / "tunewise-run"),
    }
    started = time.perf_counter()
    run = tunewise.train(config, show_progress=False, console=Console(file=io.StringIO()))
    total_seconds = time.perf_counter() - started
    record = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
    test = run.metrics["test"]
    baselines = test.get("baselines", {})
    return {
        "train_seconds": record["durations_seconds"]["training"],
        "total_seconds": round(total_seconds, 2),
        "steps": record.get("steps"),
        "metrics": headline(test),
        "base_model": headline(baselines.get("base_model", {})),
        "baselines": {name: headline(values) for name, values in baselines.items() if name != "base_model"},
        "durations_seconds": record["durations_seconds"],
        **peak_memory(),
    }


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    names = ("loss", "perplexity", "exact_match", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf")
    return {name: round(float(metrics[name]), 2) for name in names if name in metrics}


def run_trl(task: str, args: argparse.Namespace, folder: Path, grouped: bool, checkpointing: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tunewise.evaluation.generation import generation_metrics

    spec = TASKS[task]
    started = time.perf_counter()
    path = model_folder()
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
    train = [row["messages"] for row in read_jsonl(folder / "train.jsonl")]
    dataset = Dataset.from_list([{"prompt": turns[:-1], "completion": turns[-1:]} for turns in train])
    known = SFTConfig.__dataclass_fields__
    settings: dict[str, Any] = {
        "output_dir": str(folder / "trl-run"),
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": BATCH_SIZE,
        "learning_rate": args.lr,
        "lr_scheduler_type": "linear",
        ("warmup_ratio" if "warmup_ratio" in known else "warmup_steps"): WARMUP_RATIO,
        "seed": SEED,
        "max_length": spec["max_length"],
        "completion_only_loss": True,
        "packing": False,
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "bf16": bf16,
        "use_cpu": not cuda,
        "gradient_checkpointing": checkpointing,  # SFTConfig's default is True
    }
    if grouped:
        settings["train_sampling_strategy"] = "group_by_length"
    peft_config = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA_TARGETS,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**settings),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    training_started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - training_started
    test = [row["messages"] for row in read_jsonl(folder / "test.jsonl")]
    texts = generate(trainer.model, tokenizer, [turns[:-1] for turns in test], spec)
    metrics = generation_metrics(texts, [turns[-1]["content"] for turns in test])
    return {
        "train_seconds": round(train_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "steps": trainer.state.global_step,
        "metrics": headline(metrics),
        **peak_memory(),
    }


def generate(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], spec: dict[str, Any]) -> list[str]:
    """Greedy generations in left-padded batches of prompts of similar length, stopping at <|im_end|>, with
    n-grams repeated within the answer forbidden as tunewise forbids them (its logits processor, so both
    contenders decode alike: transformers' own no_repeat_ngram_size would forbid the article's n-grams too)."""
    import torch
    from transformers import LogitsProcessorList

    from tunewise.tasks.generation import NoRepeatInAnswer

    model.eval()
    tokenizer.padding_side = "left"
    encoded = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        for p in prompts
    ]
    order = sorted(range(len(encoded)), key=lambda row: len(encoded[row]))
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop
    texts: dict[int, str] = {}
    for start in range(0, len(order), BATCH_SIZE):
        rows = order[start : start + BATCH_SIZE]
        batch = tokenizer.pad({"input_ids": [encoded[row] for row in rows]}, return_tensors="pt")
        batch = {name: tensor.to(model.device) for name, tensor in batch.items()}
        processors = LogitsProcessorList()
        if spec["no_repeat_ngram_size"]:
            processors.append(NoRepeatInAnswer(spec["no_repeat_ngram_size"], batch["input_ids"].shape[1]))
        with torch.inference_mode():
            output = model.generate(
                **batch,
                max_new_tokens=spec["max_new_tokens"],
                do_sample=False,
                logits_processor=processors,
                eos_token_id=stop,
                pad_token_id=pad,
            )
        for row, tokens in zip(rows, output[:, batch["input_ids"].shape[1] :], strict=True):
            texts[row] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return [texts[row] for row in range(len(prompts))]


def run_contender(name: str, task: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    if name == "tunewise":
        return run_tunewise(task, args, folder)
    return run_trl(task, args, folder, grouped=name == "trl-grouped", checkpointing=name != "trl-no-checkpointing")


# ----------------------------------------------------------------------------------------------- driver


def run_in_child(name: str, task: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    out = folder / f"{name}.result.json"
    command = [
        sys.executable, str(Path(__file__).resolve()), "--only", name, "--tasks", task, "--work-dir", str(folder),
        "--epochs", str(args.epochs), "--lr", str(args.lr), "--json-out", str(out),
    ]  # fmt: skip
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, env=env, check=False)
    if completed.returncode != 0 or not out.is_file():
        return {"name": name, "error": f"child process exited with {completed.returncode}"}
    result = json.loads(out.read_text(encoding="utf-8"))
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    return {"name": name, **result}


def environment() -> dict[str, Any]:
    import torch

    from tunewise.runs.record import package_versions

    cuda = torch.cuda.is_available()
    versions = package_versions()
    try:
        import trl

        versions["trl"] = trl.__version__
    except ImportError:
        pass
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for task, outcome in report["tasks"].items():
        spec, data = TASKS[task], outcome["data"]
        table = Table(
            title=f"{task}: {data['rows']['train']} train, {data['rows']['test']} test rows, "
            f"{report['settings']['epochs']} epochs, {report['environment']['device']}"
        )
        for column in ("contender", *spec["headline"], "train s", "tokens/s", "peak RSS MB", "total s"):
            table.add_column(column, justify="left" if column == "contender" else "right")
        tunewise_result = next((r for r in outcome["results"] if r["name"] == "tunewise" and "error" not in r), None)
        if tunewise_result:
            for name, values in {
                "base model (zero-shot)": tunewise_result["base_model"],
                **tunewise_result["baselines"],
            }.items():
                if name in ("base model (zero-shot)", spec["baseline"]):
                    table.add_row(
                        name, *(f"{values.get(m, float('nan')):.1f}" for m in spec["headline"]), "", "", "", ""
                    )
        for result in outcome["results"]:
            if "error" in result:
                table.add_row(result["name"], result["error"])
                continue
            table.add_row(
                result["name"],
                *(f"{result['metrics'][m]:.1f}" for m in spec["headline"]),
                f"{result['train_seconds']:.0f}",
                f"{result['tokens_per_second']:.0f}",
                f"{result['peak_rss_mb']:.0f}",
                f"{result['total_seconds']:.0f}",
            )
        console.print(table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=tuple(TASKS), default=list(TASKS))
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=["tunewise", "trl"])
    parser.add_argument("--train-rows", type=int, default=None, help="default: 96 articles, 400 sentence pairs")
    parser.add_argument("--test-rows", type=int, default=None, help="default: 32 articles, 100 sentence pairs")
    parser.add_argument("--max-article-words", type=int, default=220, help="summarise: the longest article used")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--lr", type=float, default=1e-3, help="the LoRA learning rate, both contenders")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    parser.add_argument("--results", type=Path, default=RESULTS_FILE, help="where the JSON goes")
    parser.add_argument("--only", choices=CONTENDERS, help=argparse.SUPPRESS)  # child: one contender, one task
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.only:
        result = run_contender(args.only, args.tasks[0], args, args.work_dir)
        args.json_out.write_text(json.dumps(result), encoding="utf-8")
        return
    for needed in ("bbc_news_summary", "multi30k"):
        if not (args.data_dir / needed).is_dir():
            sys.exit(f"{args.data_dir / needed} is missing: point --data-dir at the shared data folder")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_folder())
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "settings": {"epochs": args.epochs, "learning_rate": args.lr, "batch_size": BATCH_SIZE, "lora": LORA,
                     "max_article_words": args.max_article_words, "contenders": args.contenders},
        "tasks": {},
    }  # fmt: skip
    for task in args.tasks:
        train_rows = args.train_rows or (96 if task == "summarise" else 400)
        test_rows = args.test_rows or (32 if task == "summarise" else 100)
        task_args = argparse.Namespace(**{**vars(args), "train_rows": train_rows, "test_rows": test_rows})
        with tempfile.TemporaryDirectory(prefix=f"bench-generation-{task}-") as scratch:
            folder = Path(scratch)
            data = write_task_data(task, task_args, folder, tokenizer)
            results = [run_in_child(name, task, args, folder) for name in args.contenders]
        for result in results:
            if "error" not in result:
                result["tokens_per_second"] = round(
                    data["train_tokens_per_epoch"] * args.epochs / result["train_seconds"], 1
                )
        report["tasks"][task] = {"data": {**data, "max_length": TASKS[task]["max_length"]}, "results": results}
    report["environment"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    print(f"written: {args.results}")


if __name__ == "__main__":
    main()
