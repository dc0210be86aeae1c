"""Defaults that learn (tunewise.prepare.defaults): what each `auto` becomes, and that a number stays as given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from tunewise.config.sections import StrategyConfig, TrainConfig
from tunewise.errors import ConfigError
from tunewise.models.registry import read_checkpoint_hints
from tunewise.prepare import defaults
from tunewise.types import CheckpointHints, ModelSource

# ------------------------------------------------------------------------------------------ batch size


def sst2_like_lengths(rows: int) -> np.ndarray:
    return np.random.default_rng(0).integers(4, 60, rows)


def test_auto_batch_is_32_on_cpu_and_large_on_a_gpu_for_short_texts() -> None:
    setting = TrainConfig().batch_size
    assert setting == "auto"
    assert defaults.batch_size(setting, "cpu", sst2_like_lengths(67_349)) == 32
    assert defaults.batch_size(setting, "cuda", sst2_like_lengths(67_349)) == 256


def test_auto_batch_keeps_enough_steps_on_small_data_and_bounds_tokens_for_long_rows() -> None:
    setting = TrainConfig().batch_size
    assert defaults.batch_size(setting, "cuda", sst2_like_lengths(4_000)) == 32  # 125 steps per epoch
    assert defaults.batch_size(setting, "cuda", sst2_like_lengths(15_000)) == 128
    long_rows = np.full(100_000, 512)
    assert defaults.batch_size(setting, "cuda", long_rows) == 64  # 64 x 512 = 32k tokens
    assert defaults.batch_size(TrainConfig(batch_size=12).batch_size, "cuda", long_rows) == 12  # a number is kept


def test_auto_batch_counts_the_steps_of_every_process_and_is_an_int() -> None:
    lengths = sst2_like_lengths(67_349)
    assert defaults.batch_size("auto", "cuda", lengths, num_processes=1) == 256
    # per GPU 128 (67k / (256 x 4) < 100 steps), so the whole batch, which train.batch_size counts, is 4 x 128
    assert defaults.batch_size("auto", "cuda", lengths, num_processes=4) == 512
    assert defaults.batch_size("auto", "cuda", np.array([], dtype=np.int64)) == 32  # no rows: the smallest
    assert all(
        type(defaults.batch_size(setting, device, lengths)) is int
        for setting in ("auto", 16)
        for device in ("cpu", "cuda")
    )


# ------------------------------------------------------------------------------------------ learning rate


def test_auto_learning_rate_scales_with_the_resolved_batch() -> None:
    method = defaults.strategy(StrategyConfig().method, "transformer", 5_000)
    small = defaults.learning_rate(TrainConfig().learning_rate, method, "transformer", 32)
    large = defaults.learning_rate(TrainConfig().learning_rate, method, "transformer", 128)
    assert large == pytest.approx(2 * small)


@pytest.mark.parametrize(
    ("method", "rate"), [("full", 1e-4), ("last_n_layers", 2e-4), ("lora", 5e-4), ("freeze_backbone", 2e-3)]
)
def test_auto_learning_rate_follows_the_strategy(method: str, rate: float) -> None:
    """The rates train.learning_rate's description documents for transformers, at batch 32."""
    assert defaults.learning_rate("auto", method, "transformer", 32) == pytest.approx(rate)
    assert defaults.learning_rate("auto", method, "transformer", 8) == pytest.approx(rate / 2)


def test_auto_learning_rate_of_a_cnn() -> None:
    assert defaults.learning_rate("auto", "full", "cnn", 32) == pytest.approx(5e-4)  # measured best
    for method, rate in defaults.BASE_LEARNING_RATES["cnn"].items():
        assert defaults.learning_rate("auto", method, "cnn", 128) == pytest.approx(2 * rate)
    assert set(defaults.BASE_LEARNING_RATES["cnn"]) == set(defaults.BASE_LEARNING_RATES["transformer"])


def test_a_learning_rate_given_is_kept_as_a_float() -> None:
    value = defaults.learning_rate(3e-3, "lora", "transformer", 256)
    assert value == 3e-3 and type(value) is float
    assert type(defaults.learning_rate("auto", "full", "transformer", 64)) is float


# ------------------------------------------------------------------------------------------ epochs


@pytest.mark.parametrize(
    ("steps_per_epoch", "expected"),
    [(1_000, 3.0), (100, 3.0), (50, 6.0), (31, 10.0), (10, 10.0), (0, 10.0)],
)
def test_auto_epochs_reach_about_300_steps_within_3_to_10_epochs(steps_per_epoch: int, expected: float) -> None:
    value = defaults.epochs("auto", steps_per_epoch)
    assert value == expected and type(value) is float


def test_epochs_given_are_kept() -> None:
    assert defaults.epochs(TrainConfig(epochs=2).epochs, 5) == 2.0
    assert defaults.epochs(0.5, 1_000) == 0.5


# ------------------------------------------------------------------------------------------ compile


def test_auto_compile_only_on_one_gpu_with_fixed_shapes_and_enough_steps() -> None:
    assert defaults.compile_model("auto", "cuda", 1, 300, fixed_shape=True) is True
    assert defaults.compile_model("auto", "cuda", 1, 299, fixed_shape=True) is False  # the compile would not pay
    assert defaults.compile_model("auto", "cuda", 1, 10_000, fixed_shape=False) is False  # padded batches vary
    assert defaults.compile_model("auto", "cpu", 1, 10_000, fixed_shape=True) is False
    assert defaults.compile_model("auto", "cuda", 2, 10_000, fixed_shape=True) is False


def test_compile_given_is_kept_and_refused_with_several_processes() -> None:
    assert defaults.compile_model(True, "cpu", 1, 1, fixed_shape=False) is True
    assert defaults.compile_model(False, "cuda", 1, 10_000, fixed_shape=True) is False
    with pytest.raises(ConfigError, match="several processes"):
        defaults.compile_model(True, "cuda", 2, 10_000, fixed_shape=True)


# ------------------------------------------------------------------------------------ max length, pooling, strategy


class NoLimit:
    """A processor that declares no length limit (an image processor)."""


def test_auto_max_length_is_what_the_checkpoint_declares_at_most_512(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.model_max_length == 128
    assert defaults.max_length("auto", CheckpointHints(), tokenizer) == 128  # the tokenizer's limit
    assert defaults.max_length("auto", CheckpointHints(max_length=64), tokenizer) == 64  # sentence-transformers
    assert defaults.max_length("auto", CheckpointHints(max_length=4096), tokenizer) == 512
    assert defaults.max_length("auto", CheckpointHints(), NoLimit()) == 512
    huge = type("Unbounded", (), {"model_max_length": int(1e30)})()  # what tokenizers without a limit say
    assert defaults.max_length("auto", CheckpointHints(), huge) == 512
    assert defaults.max_length(40, CheckpointHints(max_length=64), tokenizer) == 40  # a number is kept
    assert type(defaults.max_length("auto", CheckpointHints(), tokenizer)) is int


def test_auto_pooling_is_the_checkpoints_else_cls() -> None:
    assert defaults.pooling("auto", CheckpointHints(pooling="mean")) == "mean"
    assert defaults.pooling("auto", CheckpointHints()) == "cls"
    assert defaults.pooling("max", CheckpointHints(pooling="mean")) == "max"  # the config wins
    assert defaults.pooling(StrategyConfig().pooling, CheckpointHints()) == "cls"


def test_auto_strategy_is_full_for_transformers_and_the_head_only_for_cnns_on_little_data() -> None:
    assert StrategyConfig().method == "auto"
    for rows in (10, 100_000):
        assert defaults.strategy("auto", "transformer", rows) == "full"
    small = defaults.SMALL_IMAGE_DATA
    assert defaults.strategy("auto", "cnn", 244) == "freeze_backbone"
    assert defaults.strategy("auto", "cnn", small - 1) == "freeze_backbone"
    assert defaults.strategy("auto", "cnn", small) == "full"
    assert defaults.strategy("lora", "transformer", 10) == "lora"  # the config wins
    assert defaults.strategy("full", "cnn", 10) == "full"


# ------------------------------------------------------------------------------------------ precision


def test_mixed_precision_on_cpu_and_for_private_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(defaults, "cpu_computes_bf16", lambda: False)
    assert defaults.mixed_precision("auto", private=False) == "no"  # emulated bfloat16 would be slower
    monkeypatch.setattr(defaults, "cpu_computes_bf16", lambda: True)
    assert defaults.mixed_precision("auto", private=False) == "bf16"  # AVX-512 BF16 or AMX
    assert defaults.mixed_precision("auto", private=True) == "no"
    assert defaults.mixed_precision("fp32", private=False) == "no"
    assert defaults.mixed_precision("bf16", private=False) == "bf16"
    assert defaults.mixed_precision("bf16", private=True) == "no"  # Opacus's per-example gradients are fp32
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        defaults.mixed_precision("fp16", private=False)


def test_auto_mixed_precision_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(defaults.torch.cuda, "is_bf16_supported", lambda: True)
    assert defaults.mixed_precision("auto", private=False) == "bf16"
    monkeypatch.setattr(defaults.torch.cuda, "is_bf16_supported", lambda: False)
    assert defaults.mixed_precision("auto", private=False) == "fp16"
    assert defaults.mixed_precision("fp16", private=False) == "fp16"


def test_t5_family_models_never_train_in_fp16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Their activations overflow float16: auto falls back to fp32 where bf16 is missing; fp16 is refused."""
    monkeypatch.setattr(defaults.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(defaults.torch.cuda, "is_bf16_supported", lambda: False)
    assert defaults.mixed_precision("auto", private=False, fp16_overflows=True) == "no"
    with pytest.raises(ConfigError, match=r"overflow float16's range.*Use bf16 .* or fp32"):
        defaults.mixed_precision("fp16", private=False, fp16_overflows=True)
    monkeypatch.setattr(defaults.torch.cuda, "is_bf16_supported", lambda: True)
    assert defaults.mixed_precision("auto", private=False, fp16_overflows=True) == "bf16"


def test_the_checkpoint_says_whether_it_overflows_fp16(tmp_path: Path) -> None:
    for model_type, overflows in (("t5", True), ("mt5", True), ("bart", False), ("llama", False)):
        folder = tmp_path / model_type
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
        hints = read_checkpoint_hints(ModelSource(model_type, str(folder), is_local=True))
        assert hints.fp16_overflows is overflows, model_type


def test_auto_dp_delta_is_a_power_of_ten_below_one_over_ten_rows() -> None:
    assert defaults.dp_delta("auto", 4127) == pytest.approx(1e-5)
    assert defaults.dp_delta("auto", 1000) == pytest.approx(1e-4)
    assert defaults.dp_delta(3e-6, 4127) == 3e-6  # a number is kept


def test_auto_batch_of_packed_rows_on_cpu_holds_as_many_examples_as_an_unpacked_one() -> None:
    """200 short chats packed 9 to a row: 32 packed rows would make one optimizer step per epoch."""
    packed = np.full(22, 512)
    assert defaults.batch_size("auto", "cpu", packed, examples_per_row=9.0) == 4  # ~36 examples per step
    assert defaults.batch_size("auto", "cpu", packed, examples_per_row=64.0) == 1
    assert defaults.batch_size("auto", "cpu", sst2_like_lengths(1_000), examples_per_row=1.0) == 32


def test_auto_strategy_is_lora_for_generative_models_and_full_for_encoders() -> None:
    assert defaults.strategy("auto", "transformer", 200, generative=True) == "lora"
    assert defaults.strategy("auto", "transformer", 200) == "full"
    assert defaults.strategy("full", "transformer", 200, generative=True) == "full"  # a choice is kept
