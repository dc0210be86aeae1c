"""The on-disk token cache and the hardware-chosen batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from tunewise.config.schema import TrainConfig
from tunewise.data import token_cache
from tunewise.training.optim import resolve_batch_size, resolve_learning_rate


class CountingTokenizer:
    """Wraps a tokenizer and counts how often it actually tokenises."""

    def __init__(self, tokenizer):
        self.inner, self.calls = tokenizer, 0
        self.backend_tokenizer = tokenizer.backend_tokenizer
        self.padding_side, self.truncation_side = tokenizer.padding_side, tokenizer.truncation_side

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


@pytest.fixture
def tokenizer(tiny_model_dir: Path) -> CountingTokenizer:
    return CountingTokenizer(AutoTokenizer.from_pretrained(tiny_model_dir))


def test_second_tokenisation_comes_from_disk_and_matches(tokenizer, token_cache_dir: Path) -> None:
    texts = ["the film was good", "a", "the meal was awful today honestly", "the hotel"]
    first = token_cache.tokenize(tokenizer, texts, max_length=6)
    second = token_cache.tokenize(tokenizer, texts, max_length=6)
    assert tokenizer.calls == 1
    fresh = tokenizer.inner(texts, truncation=True, max_length=6)["input_ids"]
    for cached, expected in zip(second["input_ids"], fresh, strict=True):
        assert cached.tolist() == expected
    assert [a.tolist() for a in first["input_ids"]] == [b.tolist() for b in second["input_ids"]]
    assert max(len(ids) for ids in second["input_ids"]) == 6  # truncated


def test_changed_texts_settings_or_pairs_never_reuse_stale_ids(tokenizer) -> None:
    texts = ["the film was good", "the show was bad"]
    token_cache.tokenize(tokenizer, texts, max_length=16)
    token_cache.tokenize(tokenizer, ["the film was great", "the show was bad"], max_length=16)
    token_cache.tokenize(tokenizer, texts, max_length=4)
    token_cache.tokenize(tokenizer, texts, ["yes", "no"], max_length=16, columns=("input_ids", "token_type_ids"))
    assert tokenizer.calls == 4


def test_cache_can_be_switched_off_and_a_damaged_file_is_rebuilt(tokenizer, token_cache_dir: Path) -> None:
    texts = ["our trip was lovely", "the song was poor"]
    token_cache.tokenize(tokenizer, texts, max_length=16, use_cache=False)
    token_cache.tokenize(tokenizer, texts, max_length=16, use_cache=False)
    assert tokenizer.calls == 2
    result = token_cache.tokenize(tokenizer, texts, max_length=16)
    for path in (token_cache_dir / "tokens").glob("*.npz"):
        path.write_bytes(b"not a numpy file")
    again = token_cache.tokenize(tokenizer, texts, max_length=16)
    assert tokenizer.calls == 4
    assert [a.tolist() for a in again["input_ids"]] == [a.tolist() for a in result["input_ids"]]


def test_empty_input_round_trips(tokenizer) -> None:
    assert token_cache.tokenize(tokenizer, [], max_length=8) == {"input_ids": []}
    assert token_cache.tokenize(tokenizer, [], max_length=8) == {"input_ids": []}


# ------------------------------------------------------------------------------------------ batch size


def sst2_like_lengths(rows: int) -> np.ndarray:
    return np.random.default_rng(0).integers(4, 60, rows)


def test_auto_batch_is_32_on_cpu_and_large_on_a_gpu_for_short_texts() -> None:
    train = TrainConfig()
    assert resolve_batch_size(train, "cpu", sst2_like_lengths(67_349)) == 32
    assert resolve_batch_size(train, "cuda", sst2_like_lengths(67_349)) == 256


def test_auto_batch_keeps_enough_steps_on_small_data_and_bounds_tokens_for_long_rows() -> None:
    train = TrainConfig()
    assert resolve_batch_size(train, "cuda", sst2_like_lengths(4_000)) == 32  # 125 steps per epoch
    assert resolve_batch_size(train, "cuda", sst2_like_lengths(15_000)) == 128
    long_rows = np.full(100_000, 512)
    assert resolve_batch_size(train, "cuda", long_rows) == 64  # 64 x 512 = 32k tokens
    assert resolve_batch_size(TrainConfig(batch_size=12), "cuda", long_rows) == 12  # a number is kept


def test_auto_learning_rate_scales_with_the_resolved_batch() -> None:
    from tunewise.config.schema import StrategyConfig

    small = resolve_learning_rate(TrainConfig(batch_size=32), StrategyConfig())
    large = resolve_learning_rate(TrainConfig(batch_size=128), StrategyConfig())
    assert large == pytest.approx(2 * small)
