"""Benchmark: where a tunewise training step's time goes, from torch.profiler, on CPU or GPU.

    python bench/profile_steps.py                                  # MiniLM on SST-2, 20 steps, precision auto
    python bench/profile_steps.py --precision fp32 --dense-embeddings   # the loop as it was before bf16 on CPU
    python bench/profile_steps.py --steps 4 --rows 300             # smoke run
    python bench/profile_steps.py --workload gpt2-small            # GPT-2-small causal LM, 16 x 512 tokens (GPU)
    python bench/profile_steps.py --workload tiny-gpt2 --steps 4 --length 64 --batch-size 4   # causal smoke run
    python bench/profile_steps.py --trace bench/results/steps.json # also a Chrome trace (chrome://tracing)

It prepares a real tunewise run (the plan, the model, the optimizer, the schedule and the step strategy
the loop uses: `PlainSteps`), as `training.loop.fit` builds them. `--workload minilm` is MiniLM on SST-2
(text classification); the causal workloads are a randomly initialised model of a shape from
bench/causal_lm.py (`gpt2-small`, `smollm2-135m`, `tiny-gpt2`: its `tiny`) trained with `task: causal-lm`
on the BBC articles, packed into rows of `--length` tokens, so the steps are tunewise's causal-LM steps
(its packing, its collate, its loss). `--lora` adapts the attention projections (rank 16), `--compile`
is the run's `train.compile`.

It runs `--steps` batches once to warm up (each new length builds its oneDNN primitives and grows the
heap once; a compiled model compiles), then times the loop's phases over the same batches: collate (rows
to a padded batch on the device), forward, backward, clip, optimizer step, schedule step, zero_grad.
Phases are timed with the device synchronised at each boundary, which is exact on a CPU and on a GPU
shows what each phase costs when nothing overlaps. A third pass runs the same steps as the loop does,
unsynchronised, for the plain step time. A fourth runs them under torch.profiler, each part of the step
in a labelled range (the data loading inside `PlainSteps.backward` too: its `collate` and `to_device` are
wrapped for that pass), and splits each step's host wall time into data loading, host-side Python and
framework work outside aten operators, the aten operators' own time, CUDA API calls (kernel launches,
copies) and synchronisation waits, with the GPU's kernel time beside it; and the operators' self time
into kinds (matrix multiplies, attention, dropout randomness, other elementwise and norms, memory fills
and copies, optimizer). A step whose kernels take a few ms but whose host work takes 60 ms is host-bound.
Results: tables and bench/results/profile_steps.json (profile_steps-WORKLOAD.json for the others).
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from causal_lm import DEFAULT_DATA as DEFAULT_ARTICLES_DIR  # the sibling benchmarks'
from causal_lm import (
    LEARNING_RATE,
    LORA_LEARNING_RATE,
    LORA_RANK,
    SEED,
    WARMUP_RATIO,
    WEIGHT_DECAY,
    build_model_folder,
    packed_rows,
    read_articles,
    tokenizer_path,
)
from text_classification import DEFAULT_DATA_DIR, RESULTS_DIR, config_overrides, copy_head, model_path

WORKLOADS = {"minilm": None, "gpt2-small": "gpt2-small", "smollm2-135m": "smollm2-135m", "tiny-gpt2": "tiny"}
PHASES = ("collate", "forward", "backward", "clip", "optimizer", "scheduler", "zero_grad")
# the profiled pass's labelled ranges (torch.profiler.record_function), each the part of the step it names
STEP_LABEL = "profile_steps: step"
PART_LABELS = {
    "profile_steps: collate": "data loading",
    "profile_steps: to_device": "data loading",
    "profile_steps: forward+backward": "forward+backward",
    "profile_steps: clip": "clip",
    "profile_steps: optimizer": "optimizer",
    "profile_steps: scheduler": "scheduler",
    "profile_steps: zero_grad": "zero_grad",
}
PARTS = ("data loading", "forward+backward", "clip", "optimizer", "scheduler", "zero_grad", "rest of step")
# CUDA runtime and driver API calls on the host (cudaLaunchKernel, cuLaunchKernelEx, cudaMemcpyAsync, ...)
CUDA_API = re.compile(r"^cu(da)?[A-Z]")
CUDA_API_ACTIVITIES = ("cuda_runtime", "cuda_driver")
SYNC_API = re.compile(r"Synchronize")  # cudaStreamSynchronize, cudaDeviceSynchronize, cuEventSynchronize, ...
DEVICE_WORK_ACTIVITIES = ("kernel", "gpu_memcpy", "gpu_memset")  # not gpu_user_annotation, cuda_sync
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
    parser.add_argument("--workload", choices=list(WORKLOADS), default="minilm", help="what is trained (see above)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="SST-2 folder (train.tsv; minilm)")
    parser.add_argument(
        "--articles-dir", type=Path, default=DEFAULT_ARTICLES_DIR, help="BBC articles (*.jsonl.gz; causal workloads)"
    )
    parser.add_argument("--articles", type=int, default=0, help="causal: the first N articles only (default: all)")
    parser.add_argument(
        "--model", default=None, help="model folder (minilm: default the MiniLM package; causal: instead of the shape)"
    )
    parser.add_argument("--tokenizer", default=None, help="causal: tokenizer folder (default: the MiniLM package's)")
    parser.add_argument("--rows", type=int, default=2_000, help="minilm: rows of train.tsv (the plan holds some out)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 32 (minilm), 16 (causal)")
    parser.add_argument("--length", type=int, default=None, help="causal: tokens per packed row (512 on GPU, 128 CPU)")
    parser.add_argument("--steps", type=int, default=20, help="batches measured (after a warm-up pass over them)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32", "fp16"])
    parser.add_argument("--lora", action="store_true", help=f"LoRA r{LORA_RANK} on the attention projections")
    parser.add_argument(
        "--compile", default="auto", choices=["auto", "true", "false"], help="train.compile (auto: the run's default)"
    )
    parser.add_argument(
        "--run-steps",
        type=int,
        default=None,
        help="causal: the optimizer steps of the run the plan is for (default epochs auto); decides compile auto "
        "and regional or whole-model compilation, not the steps profiled",
    )
    parser.add_argument(
        "--dense-embeddings", action="store_true", help="the dense embedding backward (training.gradients off)"
    )
    parser.add_argument("--trace", type=Path, default=None, help="write a Chrome trace of the profiled steps here")
    parser.add_argument(
        "--output", type=Path, default=None, help="results JSON (default bench/results/profile_steps[-WORKLOAD].json)"
    )
    args = parser.parse_args(argv)
    args.causal = WORKLOADS[args.workload] is not None
    if args.batch_size is None:
        args.batch_size = 16 if args.causal else 32
    if args.output is None:
        name = "profile_steps.json" if args.workload == "minilm" else f"profile_steps-{args.workload}.json"
        args.output = RESULTS_DIR / name
    args.compile = {"true": True, "false": False}.get(args.compile, "auto")
    if not args.causal and (args.run_steps is not None or args.length is not None):
        parser.error("--run-steps and --length are for the causal workloads")
    return args


def minilm_config(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    train_file = folder / "train.tsv"
    copy_head(args.data_dir / "train.tsv", train_file, args.rows)
    return {
        "task": "text-classification",
        "model": args.model or model_path(),
        "data": {"train": str(train_file), "text_column": "sentence", "label_column": "label", "max_length": 128},
        "train": {"batch_size": args.batch_size, "precision": args.precision, "epochs": 1, "compile": args.compile},
        "output_dir": str(folder / "run"),
    }


def causal_config(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """bench/causal_lm.py's tunewise run: the articles as JSONL text, packed into rows of --length tokens."""
    texts = read_articles(args.articles_dir, args.articles or None)
    model_dir = Path(args.model) if args.model else None
    if model_dir is None:
        model_dir = build_model_folder(WORKLOADS[args.workload], tokenizer_path(args.tokenizer), folder / "model")
    train_file, validation_file = folder / "train.jsonl", folder / "validation.jsonl"
    train_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    validation_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:8]), encoding="utf-8")
    epochs: float | str = "auto"
    if args.run_steps is not None:
        epochs = args.run_steps * args.batch_size / packed_rows(model_dir, texts, args.length)
    return {
        "task": "causal-lm",
        "model": str(model_dir),
        "data": {"train": str(train_file), "validation": str(validation_file), "max_length": args.length},
        "train": {
            "epochs": epochs,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "learning_rate": LORA_LEARNING_RATE if args.lora else LEARNING_RATE,
            "weight_decay": WEIGHT_DECAY,
            "warmup_ratio": WARMUP_RATIO,
            "seed": SEED,
            "early_stopping": None,
            "compile": args.compile,
        },
        "safety": {"prompts": None},  # no red team: it is answered after training, and its default is on the hub
        "output_dir": str(folder / "run"),
    }


def prepared_steps(args: argparse.Namespace, folder: Path) -> tuple[Any, Any, Any, Any]:
    """The plan's settings, the loop's step strategy with its optimizer and schedule, as fit builds them."""
    import tunewise
    from tunewise.models.strategies import apply_strategy
    from tunewise.prepare import prepare
    from tunewise.training.optim import build_optimizer, build_scheduler
    from tunewise.training.steps import make_steps, run_accelerator

    config = causal_config(args, folder) if args.causal else minilm_config(args, folder)
    if args.lora:
        config["strategy"] = {"method": "lora", "lora": {"r": LORA_RANK, "alpha": 2 * LORA_RANK, "dropout": 0.05}}
    config = tunewise.load_config(config, config_overrides())
    plan = prepare(config)
    assert plan.training is not None
    settings = plan.training.settings
    accelerator = run_accelerator(settings.mixed_precision, cpu=plan.training.device_type != "cuda")
    built = plan.task.model.build(plan.model.source, plan.model.hints, plan.model.pooling)
    model = apply_strategy(built, config.strategy)
    optimizer = build_optimizer(model, settings)
    scheduler = build_scheduler(optimizer, settings)
    train = plan.training.encoded["train"]
    steps = make_steps(model, optimizer, train, settings, accelerator)
    if args.dense_embeddings and getattr(steps, "sparse_embeddings", None) is not None:
        steps.sparse_embeddings.release()
        steps.sparse_embeddings = None
    return steps, scheduler, settings, accelerator


def timed_phases(steps: Any, scheduler: Any, batches: list, device: Any) -> dict[str, float]:
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
        scheduler.step()
        sync()
        marks.append(time.perf_counter())
        steps.zero_grad()
        sync()
        marks.append(time.perf_counter())
        for phase, start, end in zip(PHASES, marks, marks[1:], strict=False):
            totals[phase] += (end - start) * 1e3
    return {phase: round(totals[phase] / len(batches), 2) for phase in PHASES}


def one_step(
    steps: Any, scheduler: Any, indices: Any, label: Callable[[str], AbstractContextManager] = lambda _: nullcontext()
) -> None:
    """A step as the loop takes it: the strategy's backward, clip, optimizer step, schedule step, zero_grad."""
    with label(STEP_LABEL):
        with label("profile_steps: forward+backward"):
            steps.backward(indices, sync=True)
        with label("profile_steps: clip"):
            steps.clip()
        with label("profile_steps: optimizer"):
            steps.optimizer.step()
        with label("profile_steps: scheduler"):
            scheduler.step()
        with label("profile_steps: zero_grad"):
            steps.zero_grad()


def plain_step_ms(steps: Any, scheduler: Any, batches: list, device: Any) -> float:
    """Milliseconds per step of the steps as the loop runs them: unsynchronised, the device waited for once."""
    import torch

    started = time.perf_counter()
    for indices in batches:
        one_step(steps, scheduler, indices)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return round((time.perf_counter() - started) * 1e3 / len(batches), 2)


@contextmanager
def labelled_data_loading() -> Iterator[None]:
    """`PlainSteps.backward`'s collate and to_device, each in a labelled range of the profile (restored after)."""
    from torch.profiler import record_function

    import tunewise.training.steps as module

    originals = {"collate": module.collate, "to_device": module.to_device}

    def labelled(name: str) -> Callable:
        original = originals[name]

        def call(*args: Any, **kwargs: Any) -> Any:
            with record_function(f"profile_steps: {name}"):
                return original(*args, **kwargs)

        return call

    try:
        for name in originals:
            setattr(module, name, labelled(name))
        yield
    finally:
        for name, original in originals.items():
            setattr(module, name, original)


def profiled(steps: Any, scheduler: Any, batches: list, device: Any, trace: Path | None) -> dict[str, Any]:
    """The steps under torch.profiler: host/GPU split per step, operator self time by kind, wall per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.type == "cuda" and torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    started = time.perf_counter()
    with profile(activities=activities) as profiler, labelled_data_loading():
        for indices in batches:
            one_step(steps, scheduler, indices, record_function)
        if cuda:
            torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - started) * 1e3 / len(batches)
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        profiler.export_chrome_trace(str(trace))
    events = list(profiler.events())
    host: dict[str, float] = defaultdict(float)
    for event in profiler.key_averages():
        if is_host(event):
            host[kind_of(event.key)] += event.self_cpu_time_total / 1e3
    per_step = {kind: round(ms / len(batches), 2) for kind, ms in sorted(host.items(), key=lambda kv: -kv[1])}
    split = host_device_split(events, len(batches), cuda)
    return {
        "wall_ms_per_step_profiled": round(wall_ms, 2),
        **split,
        "host_op_ms_per_step": per_step,
        "kernel_ms_per_step": split["split_ms_per_step"]["gpu_kernels"],
    }


def is_host(event: Any) -> bool:
    from torch.autograd import DeviceType

    return getattr(event, "device_type", DeviceType.CPU) == DeviceType.CPU


def is_device_work(event: Any) -> bool:
    """A kernel, copy or fill on the GPU; not a range annotation nor a synchronisation record on its timeline."""
    from torch.autograd import DeviceType

    if event.device_type != DeviceType.CUDA:
        return False
    activity = getattr(event, "activity_type", None)
    if activity is not None:
        return activity in DEVICE_WORK_ACTIVITIES
    # an older torch without activity types: leave out range annotations and CUPTI's synchronisation records
    return not getattr(event, "is_user_annotation", False) and not is_label(event.name) and "Sync" not in event.name


def is_label(name: str) -> bool:
    return name == STEP_LABEL or name in PART_LABELS


def api_kind(event: Any) -> str | None:
    """The kind of a CUDA runtime or driver call: "sync" for one that waits for the device, else "launch" (kernel
    launches, copies, events, attribute queries); None for any other event."""
    activity = getattr(event, "activity_type", None)
    if activity in CUDA_API_ACTIVITIES or CUDA_API.match(event.name):
        return "sync" if SYNC_API.search(event.name) else "launch"
    return None


def host_device_split(events: list, steps: int, cuda: bool) -> dict[str, Any]:
    """Each step's host wall time (its labelled range) split into parts of the step and, within each part, into
    aten operators' self time, CUDA API calls (launches, copies), synchronisation waits and the rest (Python and
    framework work outside aten operators: Accelerate's wrappers, autocast, autograd's engine, the optimizer's
    and scheduler's bookkeeping, torch.compile's guards and wrappers); GPU kernel time by the part that launched it.

    Events count towards the innermost labelled range their start lies in, whatever their thread: on a GPU,
    autograd runs the backward on its own thread while the step's thread waits for it."""
    ranges = sorted(
        (event for event in events if is_host(event) and is_label(event.name)), key=lambda e: e.time_range.start
    )
    starts = [event.time_range.start for event in ranges]
    steps_seen = sum(event.name == STEP_LABEL for event in ranges)

    def part_at(moment: float) -> str | None:
        index = bisect.bisect_right(starts, moment) - 1
        while index >= 0:  # the innermost range holding `moment`: ranges on one thread nest
            event = ranges[index]
            if event.time_range.end > moment:
                return PART_LABELS.get(event.name, "rest of step")
            index -= 1
        return None

    walls: dict[str, float] = defaultdict(float)
    for event in ranges:  # each range's own time: its duration less the labelled ranges directly inside it
        part, duration = PART_LABELS.get(event.name, "rest of step"), event.time_range.elapsed_us()
        walls[part] += duration
        parent = event.cpu_parent
        while parent is not None and not is_label(parent.name):
            parent = parent.cpu_parent
        if parent is not None:
            walls[PART_LABELS.get(parent.name, "rest of step")] -= duration
    sums: dict[str, dict[str, float]] = {part: defaultdict(float) for part in PARTS}
    api: dict[str, float] = defaultdict(float)
    busy: list[tuple[float, float]] = []
    gpu_total = 0.0
    for event in events:
        if getattr(event, "is_async", False):
            continue
        if not is_host(event):
            if cuda and is_device_work(event):
                busy.append((event.time_range.start, event.time_range.end))
                gpu_total += event.time_range.elapsed_us()
            continue
        if is_label(event.name):
            continue
        part = part_at(event.time_range.start)
        if part is None:  # outside the steps (the synchronisation after the last one)
            continue
        kind = api_kind(event)
        if kind is not None:
            sums[part][kind] += event.self_cpu_time_total
            api[event.name] += event.self_cpu_time_total
        elif event.name.startswith("aten::"):
            sums[part]["aten"] += event.self_cpu_time_total
        if cuda:
            sums[part]["gpu"] += sum(kernel.duration for kernel in getattr(event, "kernels", ()))

    def ms(us: float) -> float:
        return round(us / 1e3 / steps, 3)

    parts: dict[str, dict[str, float | None]] = {}
    for part in PARTS:
        own = sums[part]
        framework = walls[part] - own["aten"] - own["launch"] - own["sync"]
        parts[part] = {
            "host_wall": ms(walls[part]),
            "host_framework": ms(framework),
            "host_aten_ops": ms(own["aten"]),
            "launch_api": ms(own["launch"]) if cuda else None,
            "sync_wait": ms(own["sync"]) if cuda else None,
            "gpu_kernels": ms(own["gpu"]) if cuda else None,
        }
    parts["whole step"] = {  # the parts' sums: host wall = Python/framework + aten ops + CUDA API + sync wait
        column: None if values[0] is None else round(sum(values), 3)
        for column, values in ((c, [parts[part][c] for part in PARTS]) for c in parts["data loading"])
    }
    compute_parts = [part for part in PARTS if part != "data loading"]
    host_wall = sum(walls.values())
    sync_wait = sum(sums[part]["sync"] for part in PARTS)
    gpu_busy = union_length(busy)
    split: dict[str, Any] = {
        "host_wall": ms(host_wall),
        "data_loading": ms(walls["data loading"]),
        "host_framework": ms(
            sum(walls[p] - sums[p]["aten"] - sums[p]["launch"] - sums[p]["sync"] for p in compute_parts)
        ),
        "host_aten_ops": ms(sum(sums[part]["aten"] for part in compute_parts)),
        "launch_api": ms(sum(sums[part]["launch"] for part in compute_parts)) if cuda else None,
        "sync_wait": ms(sum(sums[part]["sync"] for part in compute_parts)) if cuda else None,
        "gpu_kernels": ms(gpu_total) if cuda else None,
        "gpu_busy": ms(gpu_busy) if cuda else None,
        "host_bound": (host_wall - sync_wait) > gpu_busy if cuda else None,
    }
    top_api = dict(sorted(api.items(), key=lambda kv: -kv[1])[:12])
    return {
        "profiled_steps_seen": steps_seen,
        "split_ms_per_step": split,
        "parts_ms_per_step": parts,
        "cuda_api_ms_per_step": {name: ms(us) for name, us in top_api.items()} if cuda else None,
    }


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals (the GPU's busy time: kernels on several streams may overlap)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def kind_of(key: str) -> str:
    if not key.startswith("aten::"):
        return "other"
    name = key.removeprefix("aten::")
    for kind, prefixes in KINDS.items():
        if any(name == prefix or name.startswith(prefix) for prefix in prefixes):
            return kind
    return "other"


def compile_mode(settings: Any) -> str:
    from tunewise.training.steps import WHOLE_MODEL_COMPILE_STEPS

    if not settings.compile:
        return "eager"
    return "whole model" if settings.total_steps >= WHOLE_MODEL_COMPILE_STEPS else "regional"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.causal and not (args.data_dir / "train.tsv").is_file():
        print(f"profile_steps: {args.data_dir / 'train.tsv'} not found; pass --data-dir (SST-2's folder)")
        return 2
    import torch

    if args.causal and args.length is None:
        args.length = 512 if torch.cuda.is_available() else 128
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        steps, scheduler, settings, accelerator = prepared_steps(args, Path(folder))
        device = accelerator.device
        batches = steps.epoch_batches(0)[: args.steps]
        if len(batches) < args.steps:
            more = "--articles (or lower --length or --batch-size)" if args.causal else "--rows"
            print(f"profile_steps: {len(batches)} batches in the epoch, {args.steps} asked: raise {more}")
            return 2
        steps.train()
        # warm-up over the very batches measured: a first pass over unseen lengths would charge the
        # one-off costs of each shape (and a compiled model's compilation) to the forward
        started = time.perf_counter()
        for indices in batches:
            one_step(steps, scheduler, indices)
        if device.type == "cuda":
            torch.cuda.synchronize()
        warmup_seconds = time.perf_counter() - started
        phases = timed_phases(steps, scheduler, batches, device)
        plain_ms = plain_step_ms(steps, scheduler, batches, device)
        kinds = profiled(steps, scheduler, batches, device, args.trace)
        embeddings_sparse = getattr(steps, "sparse_embeddings", None) is not None
        rows = len(steps.train_split)

    tokens_per_step = args.batch_size * args.length if args.causal else None
    report = {
        "workload": args.workload,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads",
        "precision": settings.mixed_precision,
        "strategy": "lora" if args.lora else "full",
        "compile": compile_mode(settings),
        "planned_total_steps": settings.total_steps,
        "sparse_embedding_gradients": embeddings_sparse,
        "batch_size": settings.batch_size,
        "length": args.length,
        "training_rows": rows,
        "steps": args.steps,
        "warmup_seconds": round(warmup_seconds, 2),
        "phase_ms_per_step": phases,
        "step_ms_synchronised": round(sum(phases.values()), 2),
        "step_ms_plain": plain_ms,
        "tokens_per_second_plain": round(tokens_per_step / plain_ms * 1e3, 1) if tokens_per_step else None,
        **kinds,
        "versions": {"torch": torch.__version__},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    print(f"results written to {args.output}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120))
    shape = f", rows of {report['length']} tokens" if report["length"] else ""
    title = (
        f"{report['workload']} ({report['strategy']}, {report['compile']}), batch {report['batch_size']}{shape}; "
        f"{report['device']}, precision {report['precision']}, sparse embeddings {report['sparse_embedding_gradients']}"
    )
    console.print(title)
    table = Table(title="the loop's phases, ms per step, the device synchronised at each boundary")
    table.add_column("phase")
    table.add_column("ms", justify="right")
    for phase, ms in report["phase_ms_per_step"].items():
        table.add_row(phase, f"{ms:.1f}")
    table.add_row("step", f"{report['step_ms_synchronised']:.1f}")
    table.add_row("step as the loop runs it (unsynchronised)", f"{report['step_ms_plain']:.1f}")
    if report["tokens_per_second_plain"]:
        table.add_row("tokens/s (unsynchronised)", f"{report['tokens_per_second_plain']:,.0f}")
    console.print(table)

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    columns = ("host_wall", "host_framework", "host_aten_ops", "launch_api", "sync_wait", "gpu_kernels")
    headers = ("host wall", "Python/framework", "aten ops (host)", "CUDA API", "sync wait", "GPU kernels")
    table = Table(title=f"profiled, ms per step (wall {report['wall_ms_per_step_profiled']:.1f} ms with the profiler)")
    table.add_column("part of the step")
    for header in headers:
        table.add_column(header, justify="right")
    for part, values in report["parts_ms_per_step"].items():
        table.add_row(part, *(cell(values[column]) for column in columns), end_section=part == PARTS[-1])
    console.print(table)
    split = report["split_ms_per_step"]
    bound = {True: "host-bound", False: "GPU-bound", None: "-"}[split["host_bound"]]
    console.print(
        f"per step: (a) data loading {cell(split['data_loading'])} ms, (b) host Python/framework outside aten ops "
        f"{cell(split['host_framework'])} ms, (c) CUDA API calls (launches, copies) {cell(split['launch_api'])} ms, "
        f"(d) GPU kernels {cell(split['gpu_kernels'])} ms; aten ops on the host {cell(split['host_aten_ops'])} ms, "
        f"sync waits {cell(split['sync_wait'])} ms; host wall {cell(split['host_wall'])} ms, GPU busy "
        f"{cell(split['gpu_busy'])} ms: {bound}"
    )
    table = Table(title="operators' self time per step (profiled), host")
    table.add_column("kind")
    table.add_column("host ms", justify="right")
    for kind, ms in report["host_op_ms_per_step"].items():
        table.add_row(kind, f"{ms:.1f}")
    console.print(table)


if __name__ == "__main__":
    raise SystemExit(main())
