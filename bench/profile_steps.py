"""Benchmark: where a tunewise training step's time goes, from torch.profiler, on CPU or GPU.

    python bench/profile_steps.py                                  # MiniLM on SST-2, 20 steps, precision auto
    python bench/profile_steps.py --precision fp32 --dense-embeddings   # the loop as it was before bf16 on CPU
    python bench/profile_steps.py --steps 4 --rows 300             # smoke run
    python bench/profile_steps.py --trace bench/results/steps.json # also a Chrome trace (chrome://tracing)

It prepares a real tunewise run (the plan, the model, the step strategy the loop uses: `PlainSteps`),
runs `--steps` batches once to warm up (each new length builds its oneDNN primitives and grows the
heap once), then times the loop's phases over the same batches: collate (rows to a padded batch on
the device), forward, backward, clip, optimizer step, zero_grad. Phases are timed with the device
synchronised at each boundary, which is exact on a CPU and on a GPU shows what each phase costs when
nothing overlaps. A third pass runs the same steps unsynchronised under torch.profiler and splits the
operators' self time into kinds (matrix multiplies, attention, dropout randomness, other elementwise
and norms, memory fills and copies, optimizer) and, on a GPU, sets the host's time per step beside
the kernels' (a step whose kernels take a few ms but whose host work takes 60 ms is host-bound).
Results: a table and bench/results/profile_steps.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from text_classification import DEFAULT_DATA_DIR, RESULTS_DIR, copy_head, model_path  # the sibling benchmark's

PHASES = ("collate", "forward", "backward", "clip", "optimizer", "zero_grad")
KINDS = {  # operator name prefixes (after "aten::") by kind; the rest is "other"
    "matrix multiplies": ("mm", "addmm", "bmm", "matmul", "linear", "baddbmm", "_addmm_activation"),
    "attention": ("_softmax", "_softmax_backward_data", "scaled_dot_product", "_scaled_dot_product", "_flash"),
    "dropout randomness": ("bernoulli", "native_dropout", "rand", "uniform_"),
    "elementwise and norms": (
        "gelu",
        "native_layer_norm",
        "add",
        "mul",
        "div",
        "sub",
        "tanh",
        "where",
        "masked_fill",
        "sum",
        "mean",
        "silu",
        "rsqrt",
        "pow",
        "neg",
        "exp",
        "log_softmax",
        "_log_softmax",
        "nll_loss",
        "threshold",
    ),
    "memory (fill, copy, allocate)": ("fill_", "zero_", "copy_", "empty", "_to_copy", "clone", "index_add", "zeros"),
    "optimizer and clipping": ("_fused_adamw", "_foreach", "linalg_vector_norm", "stack", "clamp"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="SST-2 folder (train.tsv)")
    parser.add_argument("--model", default=None, help="model folder (default: the MiniLM package)")
    parser.add_argument("--rows", type=int, default=2_000, help="rows of train.tsv (the plan holds some out)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="batches measured (after a warm-up pass over them)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32", "fp16"])
    parser.add_argument(
        "--dense-embeddings", action="store_true", help="the dense embedding backward (training.gradients off)"
    )
    parser.add_argument("--trace", type=Path, default=None, help="write a Chrome trace of the profiled steps here")
    return parser.parse_args(argv)


def prepared_steps(args: argparse.Namespace, folder: Path) -> tuple[Any, Any, Any]:
    """The plan's train split, settings, and the loop's step strategy with its optimizer, as fit builds them."""
    import tunewise
    from tunewise.models.strategies import apply_strategy
    from tunewise.prepare import prepare
    from tunewise.training.optim import build_optimizer
    from tunewise.training.steps import make_steps, run_accelerator

    train_file = folder / "train.tsv"
    copy_head(args.data_dir / "train.tsv", train_file, args.rows)
    config = tunewise.load_config(
        {
            "task": "text-classification",
            "model": args.model or model_path(),
            "data": {"train": str(train_file), "text_column": "sentence", "label_column": "label", "max_length": 128},
            "train": {"batch_size": args.batch_size, "precision": args.precision, "epochs": 1},
            "output_dir": str(folder / "run"),
        }
    )
    plan = prepare(config)
    assert plan.training is not None
    settings = plan.training.settings
    accelerator = run_accelerator(settings.mixed_precision, cpu=plan.training.device_type != "cuda")
    built = plan.task.model.build(plan.model.source, plan.model.hints, plan.model.pooling)
    model = apply_strategy(built, config.strategy)
    optimizer = build_optimizer(model, settings)
    train = plan.training.encoded["train"]
    steps = make_steps(model, optimizer, train, settings, accelerator)
    if args.dense_embeddings and getattr(steps, "sparse_embeddings", None) is not None:
        steps.sparse_embeddings.release()
        steps.sparse_embeddings = None
    return steps, settings, accelerator


def timed_phases(steps: Any, batches: list, device: Any) -> dict[str, float]:
    """Milliseconds per step of each phase, the device synchronised at each boundary. Reproduces
    `PlainSteps.backward` in its parts (collate, forward, backward) for one process."""
    import torch

    from tunewise.inference import collate, to_device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    totals: dict[str, float] = defaultdict(float)
    for indices in batches:
        marks = [time.perf_counter()]
        batch = to_device(collate(steps.train_split, indices, steps.pad_multiple), device)
        sync()
        marks.append(time.perf_counter())
        with steps.accelerator.autocast():
            loss = steps.forward(**batch).loss
        sync()
        marks.append(time.perf_counter())
        steps.accelerator.backward(loss)
        sync()
        marks.append(time.perf_counter())
        steps.clip()
        sync()
        marks.append(time.perf_counter())
        steps.optimizer.step()
        sync()
        marks.append(time.perf_counter())
        steps.zero_grad()
        sync()
        marks.append(time.perf_counter())
        for phase, start, end in zip(PHASES, marks, marks[1:], strict=False):
            totals[phase] += (end - start) * 1e3
    return {phase: round(totals[phase] / len(batches), 2) for phase in PHASES}


def one_step(steps: Any, indices: Any) -> None:
    """A step as the loop takes it: the strategy's backward, clip, optimizer step, zero_grad."""
    steps.backward(indices, sync=True)
    steps.clip()
    steps.optimizer.step()
    steps.zero_grad()


def profiled_kinds(steps: Any, batches: list, device: Any, trace: Path | None) -> dict[str, Any]:
    """Operator self time per step by kind (host), kernel time per step (GPU), wall time per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        for indices in batches:
            one_step(steps, indices)
        if device.type == "cuda":
            torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - started) * 1e3 / len(batches)
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        profiler.export_chrome_trace(str(trace))
    host: dict[str, float] = defaultdict(float)
    kernels_ms = 0.0
    for event in profiler.key_averages():
        host[kind_of(event.key)] += event.self_cpu_time_total / 1e3
        kernels_ms += getattr(event, "self_device_time_total", 0.0) / 1e3
    per_step = {kind: round(ms / len(batches), 2) for kind, ms in sorted(host.items(), key=lambda kv: -kv[1])}
    return {
        "wall_ms_per_step_profiled": round(wall_ms, 2),
        "host_op_ms_per_step": per_step,
        "kernel_ms_per_step": round(kernels_ms / len(batches), 2) if device.type == "cuda" else None,
    }


def kind_of(key: str) -> str:
    if not key.startswith("aten::"):
        return "other"
    name = key.removeprefix("aten::")
    for kind, prefixes in KINDS.items():
        if any(name == prefix or name.startswith(prefix) for prefix in prefixes):
            return kind
    return "other"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data_dir / "train.tsv").is_file():
        print(f"profile_steps: {args.data_dir / 'train.tsv'} not found; pass --data-dir (SST-2's folder)")
        return 2
    import torch
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        steps, settings, accelerator = prepared_steps(args, Path(folder))
        device = accelerator.device
        batches = steps.epoch_batches(0)[: args.steps]
        if len(batches) < args.steps:
            print(f"profile_steps: {len(batches)} batches from {args.rows} rows, {args.steps} asked: raise --rows")
            return 2
        steps.train()
        # warm-up over the very batches measured: a first pass over unseen lengths would charge the
        # one-off costs of each shape to the forward
        for indices in batches:
            one_step(steps, indices)
        phases = timed_phases(steps, batches, device)
        kinds = profiled_kinds(steps, batches, device, args.trace)
        embeddings_sparse = getattr(steps, "sparse_embeddings", None) is not None

    report = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads",
        "precision": settings.mixed_precision,
        "sparse_embedding_gradients": embeddings_sparse,
        "batch_size": settings.batch_size,
        "steps": args.steps,
        "phase_ms_per_step": phases,
        "step_ms_synchronised": round(sum(phases.values()), 2),
        **kinds,
        "versions": {"torch": torch.__version__},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "profile_steps.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    console = Console()
    title = f"{report['device']}, precision {report['precision']}, sparse embeddings {embeddings_sparse}"
    table = Table(title=f"ms per step: {title}")
    table.add_column("phase (synchronised)")
    table.add_column("ms", justify="right")
    for phase, ms in phases.items():
        table.add_row(phase, f"{ms:.1f}")
    table.add_row("step", f"{report['step_ms_synchronised']:.1f}")
    console.print(table)
    table = Table(title=f"operators' self time per step (profiled, wall {kinds['wall_ms_per_step_profiled']:.1f} ms)")
    table.add_column("kind")
    table.add_column("host ms", justify="right")
    for kind, ms in kinds["host_op_ms_per_step"].items():
        table.add_row(kind, f"{ms:.1f}")
    if kinds["kernel_ms_per_step"] is not None:
        table.add_row("GPU kernels (device time)", f"{kinds['kernel_ms_per_step']:.1f}")
    console.print(table)
    print(f"results written to {RESULTS_DIR / 'profile_steps.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
