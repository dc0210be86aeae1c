"""Defaults that learn: what each `auto` in a config becomes, chosen from measurements.

Every function takes what it needs (the setting, the model family, the data's size, the hardware)
and returns a concrete value; `tunewise.prepare.planner` calls them once, and nothing after it sees
an `auto`. The measurements behind the numbers are in bench/README.md ("Defaults that learn"):

- transformer encoders fine-tuned with the tutorial rate of 5e-5 for 2 epochs often stay at chance
  on 2-5k rows, while full fine-tuning at 1e-4 for 3 epochs learns; smaller trainable parts
  tolerate (and need) larger rates;
- a CNN (EfficientNet-Lite0, ImageNet weights) on 244 photos: a frozen backbone with a new head
  reaches 0.961 validation accuracy, LoRA 0.941, full fine-tuning 0.922-0.935 at rates from 1e-4 to
  2e-3 (best 5e-4). Below SMALL_IMAGE_DATA training images `auto` trains the head only; above it,
  the whole network at 5e-4, as transfer-learning practice does once there are enough images to
  move the features (that side is the usual guidance, not measured here).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any, Literal

import numpy as np
import torch

from tunewise.errors import ConfigError
from tunewise.explain.settings import IMAGE_AUTO, TEXT_AUTO
from tunewise.training.accounting import auto_delta
from tunewise.types import Capabilities, CheckpointHints

# peak learning rates at batch 32, per model family and strategy
BASE_LEARNING_RATES: dict[str, dict[str, float]] = {
    "transformer": {"full": 1e-4, "last_n_layers": 2e-4, "lora": 5e-4, "freeze_backbone": 2e-3},
    "cnn": {"full": 5e-4, "last_n_layers": 2e-4, "lora": 5e-4, "freeze_backbone": 2e-3},
}
SMALL_IMAGE_DATA = 1_000  # training rows below which a CNN's pretrained features are kept frozen
REFERENCE_BATCH = 32
MAX_AUTO_LENGTH = 512
MIN_AUTO_STEPS = 300
MAX_AUTO_EPOCHS = 10
DEFAULT_EPOCHS = 3
CPU_AUTO_BATCH = 32
GPU_AUTO_BATCHES = (256, 128, 64, 32)  # tried largest first
GPU_TOKENS_PER_BATCH = 32_768  # keeps activations of long rows well inside a GPU's memory
MIN_STEPS_PER_EPOCH = 100
COMPILE_MIN_STEPS = 300  # regional compilation costs ~10 s once; below this many steps it rarely pays


def max_length(setting: int | Literal["auto"], hints: CheckpointHints, processor: Any) -> int:
    """auto: what the checkpoint declares (sentence-transformers max_seq_length, else the tokenizer's
    limit), at most MAX_AUTO_LENGTH."""
    if setting != "auto":
        return int(setting)
    limit = hints.max_length or getattr(processor, "model_max_length", None) or MAX_AUTO_LENGTH
    return min(int(limit), MAX_AUTO_LENGTH)


def pooling(setting: str, hints: CheckpointHints) -> str:
    """auto: the pooling the checkpoint was trained with (1_Pooling/config.json), else the [CLS] head."""
    return (hints.pooling or "cls") if setting == "auto" else setting


def strategy(setting: str, family: str, train_rows: int, generative: bool = False) -> str:
    """auto: the adaptation measured best for the model family (and, for CNNs, the amount of data);
    LoRA for generative models, which keeps the pretrained model's abilities (its chat, its refusals)
    and its memory small: with every other default it took SmolLM2 from 0.0 to 84.0 exact match on
    SMS chats (bench/chat_defaults.py; hand-tuned 87.0)."""
    if setting != "auto":
        return setting
    if family == "cnn" and train_rows < SMALL_IMAGE_DATA:
        return "freeze_backbone"
    return "lora" if generative else "full"


def batch_size(
    setting: int | Literal["auto"],
    device_type: str,
    lengths: np.ndarray,
    num_processes: int = 1,
    examples_per_row: float = 1.0,
) -> int:
    """A number as given; `auto` picks a batch for the hardware.

    On CPU, compute is the bottleneck and per-sample time does not fall with larger batches
    (measured in bench/README.md), so more, smaller steps learn more per second. On a GPU, a batch
    of 32 short texts leaves the device idle behind per-step host overhead: 256 SST-2 sentences
    take about as long as 32, so larger batches train up to 8x faster at the same accuracy once the
    learning rate is scaled (see `learning_rate`). Small datasets keep a smaller batch, so an epoch
    still has enough optimizer steps to learn. Packed rows hold `examples_per_row` examples each: on
    CPU a batch of them holds as many examples as the unpacked batch would (32), or 200 short chats
    packed 9 to a row would train one step per epoch.
    """
    if setting != "auto":
        return int(setting)
    if device_type != "cuda":
        return max(1, round(CPU_AUTO_BATCH / examples_per_row))
    rows = max(len(lengths), 1)
    typical_length = float(np.percentile(lengths, 95)) if len(lengths) else 0.0
    for batch in GPU_AUTO_BATCHES:  # per GPU: the whole batch is this times the processes
        enough_steps = rows / (batch * num_processes) >= MIN_STEPS_PER_EPOCH
        if enough_steps and batch * typical_length <= GPU_TOKENS_PER_BATCH:
            return batch * num_processes
    return GPU_AUTO_BATCHES[-1] * num_processes


def learning_rate(setting: float | Literal["auto"], method: str, family: str, effective_batch: int) -> float:
    """A number as given; `auto`: the family's base rate for the strategy, scaled by sqrt(batch / 32)."""
    if setting != "auto":
        return float(setting)
    return BASE_LEARNING_RATES[family][method] * math.sqrt(effective_batch / REFERENCE_BATCH)


def epochs(setting: float | Literal["auto"], steps_per_epoch: int) -> float:
    """`auto`: 3 epochs, or enough for ~300 optimizer steps on small data (at most 10 epochs)."""
    if setting != "auto":
        return float(setting)
    needed = math.ceil(MIN_AUTO_STEPS / max(steps_per_epoch, 1))
    return float(min(max(DEFAULT_EPOCHS, needed), MAX_AUTO_EPOCHS))


def compile_model(
    setting: bool | Literal["auto"], device_type: str, num_processes: int, total_steps: int, fixed_shape: bool
) -> bool:
    """`auto`: compile on one GPU when every batch has one shape and the run pays back the compile.

    Measured on an H100 (bench/README.md): packed causal-LM rows of one shape train 2.8x faster
    compiled (GPT-2 small); encoder batches padded to their longest text vary in shape, and there
    the compiled blocks' recompilations cost more than they saved, so they stay eager."""
    if setting == "auto":
        single_gpu = device_type == "cuda" and num_processes == 1
        return single_gpu and fixed_shape and total_steps >= COMPILE_MIN_STEPS
    if setting and num_processes > 1:
        raise ConfigError(
            "train.compile is not supported with several processes yet (the compiled blocks would bypass "
            "the gradient synchronisation). Set train.compile: false, or auto."
        )
    return bool(setting)


def dp_delta(setting: float | Literal["auto"], rows: int) -> float:
    """auto: the largest power of ten at or below 1 / (10 x rows) (training.accounting.auto_delta says why)."""
    return auto_delta(rows) if setting == "auto" else float(setting)


def mixed_precision(setting: str, private: bool, fp16_overflows: bool = False) -> str:
    """Accelerate's mixed-precision mode. auto: bf16 on GPUs that support it, else fp16 on GPU (fp32 for
    models whose activations overflow float16, the T5 family); on a CPU, bf16 where it computes in
    bfloat16 natively (AVX-512 BF16 or AMX), else fp32.

    Measured on 2 cores of an AMD EPYC with AVX-512 BF16 (bench/README.md, "The CPU loop"): a bfloat16
    matrix multiply of MiniLM's feed-forward shape runs 4.6x faster than float32, a MiniLM training
    step 1.8x, an EfficientNet-Lite0 step 2x, at the same test accuracy; without the instructions
    bfloat16 is emulated and slower than float32, so those CPUs stay in fp32."""
    if private:
        return "no"  # Opacus's per-example gradients are fp32 (bf16/fp16 refused by the config rules)
    cuda = torch.cuda.is_available()
    if setting == "auto":
        if not cuda:
            return "bf16" if cpu_computes_bf16() else "no"
        if torch.cuda.is_bf16_supported():
            return "bf16"
        return "no" if fp16_overflows else "fp16"
    if setting == "fp16" and fp16_overflows:
        raise ConfigError(
            "train.precision fp16: this model (T5 family) was pre-trained in bfloat16 and its activations overflow "
            "float16's range, so training would turn to inf/NaN. Use bf16 (on GPUs that have it) or fp32."
        )
    if setting == "fp16" and not cuda:
        raise ConfigError("train.precision fp16 needs a GPU; use fp32 (or bf16) on CPU.")
    return {"fp32": "no"}.get(setting, setting)


@cache
def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX-512 BF16 or AMX tiles), where oneDNN
    runs autocast's bf16 matmuls and convolutions at several times float32's speed. Asked once per process:
    the predictor asks on every call."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def explanations(setting: bool | Literal["auto"], capabilities: Capabilities) -> bool:
    """`auto`: explain after training whenever the task can (capability `explanations`). Measured cost: ~0.12 s per
    MiniLM explanation on 2 CPU cores with occlusion (bench/explain_text.py), so explain.rows' default 100 adds
    10 to 30 seconds to a run; that buys every run a faithfulness figure and the identity-term attributions."""
    return capabilities.explanations if setting == "auto" else bool(setting)


def explain_method(setting: str, capabilities: Capabilities) -> str:
    """`auto`: the method the faithfulness benchmark chose for the input kind (tunewise.explain.settings)."""
    if setting != "auto":
        return setting
    return TEXT_AUTO if capabilities.reads_text else IMAGE_AUTO
