"""Optimiser, schedule and the defaults that learn on small data as well as large.

The defaults come from measurements recorded in the README ("Defaults that learn"): encoders
fine-tuned with the tutorial learning rate of 5e-5 for 2 epochs often stay at chance on 2-5k rows,
while 1e-4 for 3 epochs learns. Smaller trainable parts tolerate (and need) larger rates.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import get_scheduler

from tunewise.config.schema import StrategyConfig, TrainConfig
from tunewise.models.strategies import parameter_groups

BASE_LEARNING_RATES = {"full": 1e-4, "last_n_layers": 2e-4, "lora": 5e-4, "freeze_backbone": 2e-3}
REFERENCE_BATCH = 32
MIN_AUTO_STEPS = 300
MAX_AUTO_EPOCHS = 10
DEFAULT_EPOCHS = 3


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
