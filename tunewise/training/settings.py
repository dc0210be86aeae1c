"""The training loop's settings, every one concrete: preparation resolves each `auto` once and builds this.

The config says `batch_size: auto`; the loop never sees that. It sees a number, chosen by
`tunewise.prepare.defaults` for this data, model and hardware, and recorded in run.json and the
resolved config.yaml, so the run replays exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunewise.training.accounting import PrivacyPlan


@dataclass(frozen=True)
class Selection:
    """How the best model is picked: the validation metric, and when to stop waiting for it to improve."""

    metric: str
    patience: int
    min_delta: float


@dataclass(frozen=True)
class TrainingSettings:
    batch_size: int
    learning_rate: float
    epochs: float
    steps_per_epoch: int
    total_steps: int
    gradient_accumulation: int
    weight_decay: float
    warmup_ratio: float
    scheduler: str
    max_grad_norm: float | None  # None: no clipping (DP-SGD clips each example instead)
    layerwise_lr_decay: float
    mixed_precision: str  # accelerate's: no, bf16 or fp16
    seed: int
    eval_every: int | None  # optimizer steps between evaluations; None: at each epoch's end
    checkpoint_every: int
    keep_last: int
    compile: bool
    selection: Selection | None  # None: the final model is the result
    privacy: PrivacyPlan | None  # DP-SGD when set
    # data.balance: reweight (per-class loss weights) or oversample (per-row sampling weights);
    # fairness.reweight_groups multiplies into the sampling weights
    class_weights: np.ndarray | None = None
    sample_weights: np.ndarray | None = None
