"""Resumable checkpoints: everything that makes a resumed run bit-identical to an uninterrupted one.

A checkpoint holds the trainable weights, optimiser and scheduler state, every RNG state, the
position in the data (epoch and batch), the history so far and the early-stopping state. Frozen
weights never change, so they are not stored: LoRA checkpoints stay small. BatchNorm running
statistics are buffers, not parameters, yet training changes them: they are stored too, or the
best model would come back with the last step's statistics.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CHECKPOINT_FILE = "state.pt"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies (on CPU) of the weights that training changes, and of the normalisation statistics."""
    state = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}
    state.update({name: b.detach().to("cpu", copy=True) for name, b in running_statistics(model)})
    return state


def running_statistics(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """BatchNorm's running mean, variance and batch count: buffers that training updates."""
    return [
        (f"{module_name}.{name}" if module_name else name, buffer)
        for module_name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._NormBase)
        for name, buffer in module.named_buffers(recurse=False)
        if buffer is not None
    ]


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    tensors = {**dict(model.named_parameters()), **dict(running_statistics(model))}
    with torch.no_grad():
        for name, value in state.items():
            tensors[name].copy_(value)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(saved: list[dict[str, Any]] | dict[str, Any], rank: int = 0, processes: int = 1) -> bool:
    """Put back this process's RNG states from a checkpoint's (one per process, in rank order; a single
    state in checkpoints written before several processes were supported). False when the checkpoint
    was written by another number of processes: each then takes the first one's, and dropout's
    randomness no longer continues exactly (the weights still resume; only exactness is lost)."""
    states = saved if isinstance(saved, list) else [saved]
    exact = len(states) == processes
    _restore(states[rank] if exact else states[0])
    return exact


def _restore(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any], keep_last: int) -> Path:
    """Write `checkpoint-<step>/state.pt` atomically and prune all but the newest `keep_last`."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"checkpoint-{step:08d}"
    partial = folder / f".partial-{step:08d}"
    partial.mkdir(exist_ok=True)
    torch.save(payload, partial / CHECKPOINT_FILE)
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    for old in list_checkpoints(folder)[:-keep_last]:
        shutil.rmtree(old)
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("checkpoint-*") if (p / CHECKPOINT_FILE).is_file())


def load_latest_checkpoint(folder: Path) -> dict[str, Any] | None:
    checkpoints = list_checkpoints(folder)
    if not checkpoints:
        return None
    return torch.load(checkpoints[-1] / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
