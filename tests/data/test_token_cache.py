"""The on-disk token cache: a second tokenisation of the same texts is read from disk, never stale."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunewise.data import token_cache


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
