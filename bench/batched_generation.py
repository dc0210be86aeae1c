"""Benchmark: batched generation tokens/s, tunewise against generate() one prompt at a time and a pipeline.

    python bench/batched_generation.py                                          # 256 prompts, 64 new tokens, batch 32
    python bench/batched_generation.py --prompts 8 --max-new-tokens 16 --batch-size 4   # CPU smoke run
    python bench/batched_generation.py --weights random --tokenizer .device/smollm2-tokenizer \
        --data-dir .device/data/bbc_news_summary                              # the GPU machine (bench/gpu_stage.py)
    python bench/batched_generation.py --model DIR --contenders tunewise pipeline

Every contender decodes the same chat prompts greedily, with the same weights, dtype, stop tokens and
--max-new-tokens: SmolLM2-135M-Instruct (the built-in weights, converted from their GGUF file once, as
`model: smollm2-135m-instruct` resolves them) asked to summarise BBC news articles (the title and first
three paragraphs of articles spread over ../shared/data/bbc_news_summary, so prompt lengths vary the
way real ones do), each rendered by the model's chat template as tunewise's chat tasks render it.

    tunewise                   tunewise.tasks.generation.generate_texts: prompts sorted by length,
                               left-padded, --batch-size at a time
    generate-one-by-one        model.generate() once per prompt: batch 1, no padding (the reference for
                               agreement; on the first --one-by-one-prompts prompts, since it is slow)
    generate-batched-unsorted  model.generate() on --batch-size prompts at a time in input order, left-padded:
                               what tunewise's length sorting buys
    pipeline                   transformers.pipeline("text-generation", batch_size=--batch-size), left padding,
                               return_full_text=False, on the same rendered prompt strings

Each contender runs once on two prompts to warm up (CUDA context, kernels, the allocator), then is
timed over its prompts with the device synchronised at both ends; --repeat N times it N times,
round-robin over the contenders, and reports the fastest pass (all are in the JSON). Tokens are the
new tokens each prompt really produced, up to and including its stop token (a row that stopped early
but rides on in its batch is not counted after it), read from every model.generate() call the
contender makes. Agreement: the share of the prompts generate-one-by-one ran whose text (and whose
tokens) equal its; left padding changes a few greedy outputs in low precision, which is reported, not
asserted.

All contenders run in one process. Peak memory is CUDA's max_memory_allocated, reset before each
contender's timed pass; on a CPU the process's peak RSS, likewise reset (Linux's /proc/self/clear_refs;
elsewhere ru_maxrss, the whole process's), so it includes the model and the libraries.

--weights random builds a randomly initialised model of bench/causal_lm.py's SmolLM2-135M shape with
the builtin's tokenizer (or --tokenizer DIR), for a machine that lacks the weights file, and sets
min_new_tokens to --max-new-tokens for every contender, so all generate the same number of tokens.
The GPU machine gets neither ../shared nor the cache: copy bbc_news_summary.jsonl.gz and the tokenizer
files into a carried folder and pass --data-dir and --tokenizer (bench/README.md has the commands).
Prints a table and writes bench/results/batched_generation.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from causal_lm import SHAPES  # the sibling benchmark's model shapes

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared/data/bbc_news_summary"
RESULTS_FILE = REPO / "bench/results/batched_generation.json"
CONTENDERS = ("tunewise", "generate-one-by-one", "generate-batched-unsorted", "pipeline")
REFERENCE = "generate-one-by-one"
INSTRUCTION = "Summarise this news article in one sentence."
PARAGRAPHS = 4  # the title and the first three paragraphs of each article
WARMUP_PROMPTS = 2
SEED = 0


# ----------------------------------------------------------------------------------------------- inputs


def read_articles(data_dir: Path, count: int) -> list[str]:
    """`count` article openings spread evenly over the file (the file is grouped by category)."""
    files = sorted(data_dir.glob("*.jsonl.gz")) if data_dir.is_dir() else []
    if not files:
        sys.exit(
            f"error: no *.jsonl.gz in {data_dir}; pass --data-dir (the folder of bbc_news_summary.jsonl.gz, "
            "../shared/data/bbc_news_summary beside the repository)."
        )
    articles = []
    for file in files:
        with gzip.open(file, "rt", encoding="utf-8") as handle:
            articles.extend(json.loads(line)["article"] for line in handle if line.strip())
    if count > len(articles):
        sys.exit(f"error: --prompts {count}: {data_dir} holds {len(articles)} articles.")
    step = len(articles) / count
    chosen = [articles[int(i * step)] for i in range(count)]
    return ["\n\n".join([p.strip() for p in a.split("\n") if p.strip()][:PARAGRAPHS]) for a in chosen]


@dataclass
class Setup:
    model: Any
    tokenizer: Any
    stop_ids: list[int]
    pad_id: int
    chat: bool  # prompts rendered with the chat template (else the plain text, with the tokenizer's specials)
    source: str
    prompt_ids: list[np.ndarray] = field(default_factory=list)
    prompt_texts: list[str] = field(default_factory=list)


def builtin_folder() -> str:
    from tunewise.errors import TunewiseError
    from tunewise.models.registry import SMOLLM2, resolve_model

    try:
        return resolve_model(SMOLLM2).location
    except TunewiseError as error:
        sys.exit(f"error: {error}\n(or pass --weights random --tokenizer DIR, or --model DIR)")


def load(args: argparse.Namespace, device: str, dtype: Any) -> Setup:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tunewise.tasks.chat_template import set_up_tokenizer

    if args.model:
        if not (args.model / "config.json").is_file():
            sys.exit(f"error: --model {args.model} is not a transformers model folder (no config.json).")
        folder = str(args.model)
    elif args.weights == "random":
        folder = str(args.tokenizer) if args.tokenizer else builtin_folder()
    else:
        folder = builtin_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # tunewise's data.chat_template: the tokenizer's own template (auto) or a named one, and a pad token
    chat = set_up_tokenizer(tokenizer, args.chat_template, needs_template=False)
    stops = [chat.end_of_turn] if chat else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
        stops.append(tokenizer.eos_token_id)
    if args.weights == "random" and not args.model:
        torch.manual_seed(SEED)
        settings = SHAPES["smollm2-135m"]["settings"]
        config = LlamaConfig(
            **settings, eos_token_id=stops[0], bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id
        )
        model = LlamaForCausalLM(config)
        source = f"random weights, SmolLM2-135M shape; tokenizer {folder}"
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        source = folder
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # a pad token was added
        model.resize_token_embeddings(len(tokenizer))
    model.to(device=device, dtype=dtype).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # every contender calls model.generate(), which starts from this: the same greedy decoding for all
    model.generation_config.update(
        do_sample=False,
        num_beams=1,
        temperature=None,
        top_p=None,
        top_k=None,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens if args.weights == "random" else None,
        eos_token_id=stops,
        pad_token_id=pad,
    )
    return Setup(model, tokenizer, stops, pad, chat is not None, source)


def render_prompts(setup: Setup, articles: list[str]) -> None:
    from tunewise.tasks.chat_template import prompt_ids, render

    for article in articles:
        if setup.chat:
            messages = [{"role": "user", "content": f"{INSTRUCTION}\n\n{article}"}]
            setup.prompt_texts.append(render(setup.tokenizer, messages, generation=True))
            setup.prompt_ids.append(np.asarray(prompt_ids(setup.tokenizer, messages), dtype=np.int64))
        else:  # a model without a chat template: the prompt as written, as tunewise's text runs give it
            text = f"{INSTRUCTION}\n\n{article}\n\nSummary:"
            setup.prompt_texts.append(text)
            setup.prompt_ids.append(np.asarray(setup.tokenizer(text)["input_ids"], dtype=np.int64))


# ----------------------------------------------------------------------------------------------- measuring


class GenerateRecorder:
    """Wraps model.generate for the timed call: keeps each call's inputs and output (on the device, so
    nothing is synchronised), then counts each row's new tokens up to and including its first stop token."""

    def __init__(self, model: Any):
        self.model = model
        self.calls: list[tuple[Any, Any, Any]] = []

    def __enter__(self) -> GenerateRecorder:
        original = self.model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            ids = kwargs.get("input_ids", args[0] if args else None)
            sequences = getattr(output, "sequences", output)
            self.calls.append((ids, kwargs.get("attention_mask"), sequences))
            return output

        self.model.generate = generate
        return self

    def __exit__(self, *exc: object) -> None:
        del self.model.generate  # the class's method again

    def rows(self, stops: Sequence[int]) -> tuple[dict[tuple[int, ...], list[int]], int, int]:
        """{prompt tokens (padding removed): new tokens through the stop}, prompt positions fed, padding among them."""
        generated: dict[tuple[int, ...], list[int]] = {}
        positions = padding = 0
        stop_set = set(stops)
        for ids, mask, sequences in self.calls:
            ids, sequences = ids.cpu(), sequences.cpu()
            mask = mask.cpu().bool() if mask is not None else ids.new_ones(ids.shape).bool()
            positions += ids.numel()
            padding += int((~mask).sum())
            for row in range(ids.shape[0]):
                new = sequences[row, ids.shape[1] :].tolist()
                end = next((i + 1 for i, token in enumerate(new) if token in stop_set), len(new))
                generated[tuple(ids[row][mask[row]].tolist())] = new[:end]
        return generated, positions, padding


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak(cuda: bool) -> None:
    import torch

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # "5" resets the peak RSS (VmHWM) of this process
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def resident_mb() -> float | None:
    """The process's resident memory now (Linux), what a CPU contender's peak RSS starts from."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            return next((round(int(line.split()[1]) / 1024, 1) for line in handle if line.startswith("VmRSS:")), None)
    except OSError:
        return None


def peak_mb(cuda: bool) -> tuple[float, str]:
    import torch

    if cuda:
        return round(torch.cuda.max_memory_allocated() / 2**20, 1), "cuda max_memory_allocated"
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1), "peak RSS since the contender started"
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "ru_maxrss (whole process)"


# ----------------------------------------------------------------------------------------------- contenders


def contender_function(name: str, setup: Setup, args: argparse.Namespace) -> Callable[[list[int]], list[str]]:
    """A function of prompt indices that returns their generated texts, in that order."""
    import torch

    model, tokenizer = setup.model, setup.tokenizer
    device = next(model.parameters()).device
    extra = {"min_new_tokens": args.max_new_tokens} if args.weights == "random" else {}
    greedy = {
        "max_new_tokens": args.max_new_tokens,
        "do_sample": False,
        "eos_token_id": setup.stop_ids,
        "pad_token_id": setup.pad_id,
        **extra,
    }

    def decode(tokens: Any) -> str:
        return tokenizer.decode(tokens, skip_special_tokens=True).strip()

    if name == "tunewise":
        from tunewise.tasks.generation import GenerationConfig, generate_texts

        settings = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

        def run_tunewise(indices: list[int]) -> list[str]:
            prompts = [setup.prompt_ids[i] for i in indices]
            return generate_texts(model, tokenizer, prompts, settings, setup.stop_ids, decoder_only=True)

        return run_tunewise

    if name == "generate-one-by-one":

        @torch.inference_mode()
        def run_one_by_one(indices: list[int]) -> list[str]:
            texts = []
            for i in indices:
                ids = torch.as_tensor(setup.prompt_ids[i], device=device).unsqueeze(0)
                output = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **greedy)
                texts.append(decode(output[0, ids.shape[1] :]))
            return texts

        return run_one_by_one

    if name == "generate-batched-unsorted":

        @torch.inference_mode()
        def run_unsorted(indices: list[int]) -> list[str]:
            texts = []
            for start in range(0, len(indices), args.batch_size):
                batch = [setup.prompt_ids[i] for i in indices[start : start + args.batch_size]]
                ids, mask = left_padded(batch, setup.pad_id)
                output = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **greedy)
                texts.extend(decode(row) for row in output[:, ids.shape[1] :])
            return texts

        return run_unsorted

    from transformers import pipeline

    tokenizer.padding_side = "left"  # tunewise and the generate contenders pad by hand; this is the pipeline's
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)

    def run_pipeline(indices: list[int]) -> list[str]:
        outputs = generator(
            [setup.prompt_texts[i] for i in indices],
            batch_size=args.batch_size,
            return_full_text=False,
            add_special_tokens=not setup.chat,  # a rendered chat template holds its own special tokens
            **greedy,
        )
        return [output[0]["generated_text"].strip() for output in outputs]

    return run_pipeline


def left_padded(prompts: list[np.ndarray], pad: int) -> tuple[Any, Any]:
    import torch

    longest = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.as_tensor(prompt)
        mask[row, longest - len(prompt) :] = 1
    return ids, mask


def measure(
    name: str,
    function: Callable[[list[int]], list[str]],
    setup: Setup,
    args: argparse.Namespace,
    indices: list[int],
    cuda: bool,
) -> dict[str, Any]:
    """One timed pass of a contender over its prompts (warmed up already)."""
    import torch

    synchronize()
    reset_peak(cuda)
    start_mb = round(torch.cuda.memory_allocated() / 2**20, 1) if cuda else resident_mb()
    with GenerateRecorder(setup.model) as recorder:
        started = time.perf_counter()
        texts = function(indices)
        synchronize()
        seconds = time.perf_counter() - started
    peak, peak_kind = peak_mb(cuda)
    generated, positions, padding = recorder.rows(setup.stop_ids)
    tokens = [generated.get(tuple(setup.prompt_ids[i].tolist())) for i in indices]
    counted = sum(len(t) for t in tokens if t is not None)
    return {
        "name": name,
        "prompts": len(indices),
        "seconds": round(seconds, 3),
        "new_tokens": counted,
        "tokens_per_second": round(counted / seconds, 1),
        "prompts_per_second": round(len(indices) / seconds, 2),
        "stopped_before_limit": sum(1 for t in tokens if t is not None and len(t) < args.max_new_tokens),
        "prompt_padding_share": round(padding / positions, 4) if positions else 0.0,
        "generate_calls": len(recorder.calls),
        "peak_mb": peak,
        "peak_kind": peak_kind,
        "memory_at_start_mb": start_mb,  # the model, and on a CPU the libraries: what the peak starts from
        "prompts_not_matched": sum(1 for t in tokens if t is None),  # a pipeline that tokenised a prompt differently
        "_texts": texts,
        "_tokens": tokens,
    }


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run's outputs with the fastest run's seconds (another job on the machine only ever slows a
    run down) and the highest peak."""
    result = dict(runs[0])
    seconds = min(run["seconds"] for run in runs)
    result["seconds"] = round(seconds, 3)
    result["seconds_all"] = [run["seconds"] for run in runs]
    result["tokens_per_second"] = round(result["new_tokens"] / seconds, 1)
    result["prompts_per_second"] = round(result["prompts"] / seconds, 2)
    result["peak_mb"] = max(run["peak_mb"] for run in runs)
    result["outputs_same_every_run"] = all(run["_tokens"] == runs[0]["_tokens"] for run in runs)
    return result


def compare(results: dict[str, dict[str, Any]], indices: list[int], reference_indices: list[int]) -> None:
    """Agreement with generate-one-by-one on the prompts both ran, and the speed-ups."""
    reference = results.get(REFERENCE)
    position = {prompt: k for k, prompt in enumerate(indices)}
    for result in results.values():
        if reference is not None:
            ours = [position[i] for i in reference_indices]
            same_text = [result["_texts"][k] == reference["_texts"][j] for j, k in enumerate(ours)]
            same_tokens = [
                result["_tokens"][k] is not None and result["_tokens"][k] == reference["_tokens"][j]
                for j, k in enumerate(ours)
            ]
            result["agreement_text"] = round(sum(same_text) / len(ours), 4)
            result["agreement_tokens"] = round(sum(same_tokens) / len(ours), 4)
            result["agreement_prompts"] = len(ours)
            result["first_disagreements"] = [
                {"prompt": reference_indices[j], "text": result["_texts"][k], "reference": reference["_texts"][j]}
                for j, k in enumerate(ours)
                if not same_text[j]
            ][:3]
        for other in (REFERENCE, "pipeline"):
            if other in results:
                theirs = results[other]["tokens_per_second"]
                result[f"speedup_vs_{other}"] = round(result["tokens_per_second"] / theirs, 2) if theirs else None
        result["sample_texts"] = result["_texts"][:3]
    for result in results.values():
        del result["_texts"], result["_tokens"]


# ----------------------------------------------------------------------------------------------- report


def environment(device: str, dtype: Any) -> dict[str, Any]:
    import torch
    import transformers

    import tunewise

    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu_model = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu_model
            )
    except OSError:
        pass
    return {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "tunewise": getattr(tunewise, "__version__", None),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 165))
    env, settings = report["environment"], report["settings"]
    table = Table(
        title=f"Batched generation: {settings['prompts']} prompts ({report['prompt_tokens']['min']}-"
        f"{report['prompt_tokens']['max']} tokens), {settings['max_new_tokens']} new tokens at most, batch "
        f"{settings['batch_size']}, greedy, {env['dtype']}, {env['device']}, {settings['weights']} weights, "
        f"best of {settings['repeat']}"
    )
    columns = ("contender", "prompts", "seconds", "new tokens", "tokens/s", "x one-by-one", "x pipeline")
    for column in (*columns, "same text", "same tokens", "prompt padding", "peak MB"):
        table.add_column(column, justify="left" if column == "contender" else "right", no_wrap=column == "contender")

    def ratio(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else ""

    def share(value: float | None) -> str:
        return f"{value:.1%}" if value is not None else ""

    for row in report["results"]:
        table.add_row(
            row["name"],
            str(row["prompts"]),
            f"{row['seconds']:.2f}",
            f"{row['new_tokens']:,}",
            f"{row['tokens_per_second']:,.1f}",
            ratio(row.get(f"speedup_vs_{REFERENCE}")),
            ratio(row.get("speedup_vs_pipeline")),
            share(row.get("agreement_text")),
            share(row.get("agreement_tokens")),
            share(row["prompt_padding_share"]),
            f"{row['peak_mb']:,.0f}",
        )
    console.print(table)
    console.print(
        "tokens/s: new tokens produced (through each prompt's stop token) / wall seconds; x: tokens/s over that "
        "contender's; same text / tokens: share of the prompts generate-one-by-one ran whose output equals its; "
        f"peak MB: {report['results'][0]['peak_kind'] if report['results'] else ''}."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", choices=["builtin", "random"], default="builtin")
    parser.add_argument("--model", type=Path, help="a local causal-LM folder instead (overrides --weights)")
    parser.add_argument("--tokenizer", type=Path, help="--weights random: tokenizer folder (default: the builtin's)")
    parser.add_argument(
        "--chat-template",
        default="auto",
        help="as tunewise's data.chat_template: auto (the tokenizer's), chatml, zephyr, llama3 or none (plain text); "
        "chatml for a tokenizer folder without its chat_template.jinja",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="folder of bbc_news_summary.jsonl.gz")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument(
        "--one-by-one-prompts",
        type=int,
        default=64,
        help="generate-one-by-one runs the first N prompts only (default 64; 0: all): its tokens/s, and agreement "
        "is computed on those",
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--device", choices=["auto", "cpu"], default="auto")
    parser.add_argument(
        "--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 on CUDA, fp32 on CPU"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="timed passes per contender, round-robin; the fastest counts"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    if min(args.prompts, args.max_new_tokens, args.batch_size, args.repeat) < 1:
        parser.error("--prompts, --max-new-tokens, --batch-size and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    articles = read_articles(args.data_dir, args.prompts)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(args.dtype, torch.bfloat16 if cuda else torch.float32)
    setup = load(args, device, dtype)
    render_prompts(setup, articles)
    lengths = [len(ids) for ids in setup.prompt_ids]
    indices = list(range(len(articles)))
    limit = args.one_by_one_prompts or len(indices)
    reference_indices = indices[:limit]
    report: dict[str, Any] = {
        "benchmark": "batched_generation",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(device, dtype),
        "settings": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "output"},
            "model_source": setup.source,
            "rendered_with_chat_template": setup.chat,
            "stop_ids": setup.stop_ids,
            "pad_id": setup.pad_id,
        },
        "prompt_tokens": {"min": min(lengths), "median": int(np.median(lengths)), "max": max(lengths)},
    }
    functions: dict[str, Callable[[list[int]], list[str]]] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.contenders}
    for round_number in range(args.repeat):  # round-robin, so a slow spell of a shared machine hits each alike
        for name in args.contenders:
            chosen = reference_indices if name == REFERENCE else indices
            if name not in functions:
                print(f"[bench] {name}: warm-up ...", file=sys.stderr, flush=True)
                functions[name] = contender_function(name, setup, args)
                functions[name](chosen[:WARMUP_PROMPTS])  # CUDA context, kernels, the allocator's first growth
            runs[name].append(measure(name, functions[name], setup, args, chosen, cuda))
            summary = {k: v for k, v in runs[name][-1].items() if not k.startswith("_")}
            print(f"[bench] round {round_number + 1} {name}: {json.dumps(summary)}", file=sys.stderr, flush=True)
    results = {name: combined(found) for name, found in runs.items()}
    compare(results, indices, reference_indices)
    report["results"] = list(results.values())
    report["environment"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    print(f"results written to {args.output}")


if __name__ == "__main__":
    main()
