"""Optimiser, schedule and the defaults that learn on small data as well as large.

The defaults come from measurements recorded in the README ("Defaults that learn"): encoders
fine-tuned with the tutorial learning rate of 5e-5 for 2 epochs often stay at chance on 2-5k rows,
while 1e-4 for 3 epochs learns. Smaller trainable parts tolerate (and need) larger rates.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers import get_scheduler

from tunewise.config.schema import StrategyConfig, TrainConfig
from tunewise.errors import ConfigError
from tunewise.models.strategies import parameter_groups

BASE_LEARNING_RATES = {"full": 1e-4, "last_n_layers": 2e-4, "lora": 5e-4, "freeze_backbone": 2e-3}
REFERENCE_BATCH = 32
MIN_AUTO_STEPS = 300
MAX_AUTO_EPOCHS = 10
DEFAULT_EPOCHS = 3
CPU_AUTO_BATCH = 32
GPU_AUTO_BATCHES = (256, 128, 64, 32)  # tried largest first
GPU_TOKENS_PER_BATCH = 32_768  # keeps activations of long rows well inside a GPU's memory
MIN_STEPS_PER_EPOCH = 100
COMPILE_MIN_STEPS = 300  # regional compilation costs ~10 s once; below this many steps it rarely pays


def resolve_batch_size(train: TrainConfig, device_type: str, lengths: np.ndarray, num_processes: int = 1) -> int:
    """A number as given; `auto` picks a batch for the hardware.

    On CPU, compute is the bottleneck and per-sample time does not fall with larger batches
    (measured in bench/README.md), so more, smaller steps learn more per second. On a GPU, a batch
    of 32 short texts leaves the device idle behind per-step host overhead: 256 SST-2 sentences
    take about as long as 32, so larger batches train up to 8x faster at the same accuracy once the
    learning rate is scaled (see `resolve_learning_rate`). Small datasets keep a smaller batch, so an
    epoch still has enough optimizer steps to learn.
    """
    if train.batch_size != "auto":
        return int(train.batch_size)
    if device_type != "cuda":
        return CPU_AUTO_BATCH
    rows = max(len(lengths), 1)
    typical_length = float(np.percentile(lengths, 95)) if len(lengths) else 0.0
    for batch in GPU_AUTO_BATCHES:
        enough_steps = rows / (batch * num_processes) >= MIN_STEPS_PER_EPOCH
        if enough_steps and batch * typical_length <= GPU_TOKENS_PER_BATCH:
            return batch
    return GPU_AUTO_BATCHES[-1]


def resolve_compile(
    train: TrainConfig, device_type: str, num_processes: int, steps_per_epoch: int, fixed_shape: bool
) -> bool:
    """`auto`: compile on one GPU when every batch has one shape and the run pays back the compile.

    Measured on an H100 (bench/README.md): packed causal-LM rows of one shape train 2.8x faster
    compiled (GPT-2 small); encoder batches padded to their longest text vary in shape, and there
    the compiled blocks' recompilations cost more than they saved, so they stay eager."""
    if train.compile is not True and train.compile is not False:
        total_steps = steps_per_epoch * float(train.epochs)
        single_gpu = device_type == "cuda" and num_processes == 1
        return single_gpu and fixed_shape and total_steps >= COMPILE_MIN_STEPS
    if train.compile and num_processes > 1:
        raise ConfigError(
            "train.compile is not supported with several processes yet (the compiled blocks would bypass "
            "the gradient synchronisation). Set train.compile: false, or auto."
        )
    return bool(train.compile)


def resolve_learning_rate(train: TrainConfig, strategy: StrategyConfig) -> float:
    """A number as given; `auto` scales the strategy's base rate by sqrt(effective batch / 32)."""
    if train.learning_rate != "auto":
        return float(train.learning_rate)
    effective_batch = train.batch_size * train.gradient_accumulation
    return BASE_LEARNING_RATES[strategy.method] * math.sqrt(effective_batch / REFERENCE_BATCH)


def batches_per_process(rows: int, batch_size: int, num_processes: int) -> int:
    """Batches each process sees per epoch (processes take equal shares, the remainder is dropped)."""
    batches = math.ceil(rows / batch_size)
    return max(batches // num_processes, 1) if num_processes > 1 else batches


def steps_per_epoch(rows: int, train: TrainConfig, num_processes: int = 1) -> int:
    """Optimizer steps per epoch: the epoch's last, partial accumulation still makes a step."""
    return math.ceil(batches_per_process(rows, train.batch_size, num_processes) / train.gradient_accumulation)


def resolve_epochs(train: TrainConfig, steps_per_epoch: int) -> float:
    """`auto`: 3 epochs, or enough for ~300 optimizer steps on small data (at most 10 epochs)."""
    if train.epochs != "auto":
        return float(train.epochs)
    needed = math.ceil(MIN_AUTO_STEPS / max(steps_per_epoch, 1))
    return float(min(max(DEFAULT_EPOCHS, needed), MAX_AUTO_EPOCHS))


def build_optimizer(model: nn.Module, train: TrainConfig, strategy: StrategyConfig, learning_rate: float):
    groups = parameter_groups(model, learning_rate, train.weight_decay, strategy.layerwise_lr_decay)
    # fused AdamW: one kernel over all parameters, on GPU and CPU alike. Measured on 2 CPU cores for
    # MiniLM (22.7M parameters): 8 ms per step against 53 ms for the default foreach implementation.
    return torch.optim.AdamW(groups, lr=learning_rate, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int):
    warmup = math.ceil(train.warmup_ratio * total_steps)  # as Trainer rounds, so runs compare
    name = "constant_with_warmup" if train.scheduler == "constant" else train.scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
