"""What makes a run replayable: package versions, git revision and hardware, written beside the data fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from tunewise.runs import atomic

PACKAGES = (
    "tunewise",
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "tokenizers",
    "scikit-learn",
    "numpy",
    "pandas",
    "pydantic",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_revision(folder: Path) -> str | None:
    """The commit of the repository the user runs from (with +dirty when it has changes), if any."""
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ("+dirty" if dirty else "")


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def cpu_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu() -> dict[str, Any]:
    """The processor's name, the cores this process may use, and whether it has VNNI (AVX-512 or AVX
    VNNI: int8 dot products in one instruction, which is where int8 models gain most)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: the name is what platform knows, the flags unknown
        return {"cpu": name, "cores": cpu_cores(), "vnni": None}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            name = value.strip()
        elif key.strip() == "flags":
            flags.update(value.split())
    return {"cpu": name, "cores": cpu_cores(), "vnni": bool(flags & {"avx512_vnni", "avx_vnni"})}


def config_fingerprint(requested: dict[str, Any], data_sha256: dict[str, str]) -> str:
    """sha256 of what `--resume` must find unchanged (runs.guard compares the same): the config as the user
    wrote it, output_dir aside, and the data files' sha256. run.json records it; checkpoints carry it."""
    identity = {"config": {k: v for k, v in requested.items() if k != "output_dir"}, "data_sha256": data_sha256}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def write_json(path: Path, payload: Any) -> None:
    """Written whole or not at all (runs.atomic): a kill or a full disk leaves the previous file."""
    atomic.write_json(path, payload)
