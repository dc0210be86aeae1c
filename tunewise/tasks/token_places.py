"""What the text tasks' explanation pieces share: where each token stands in the user's text, one
encoded row as the [1, length] features a `TextExplanationTarget` holds, and the rule that reads a
target's score from the model's outputs.

The score rule lives here, below `tunewise.explain`, because both sides need it: a task computes each
target's `probability` with it from the outputs it already has, and the explainer attributes exactly the
same number (its forward function calls it), so the attributions explain the probability the user sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tunewise.errors import ConfigError
from tunewise.types import EncodedSplit

Offsets = tuple[tuple[int, int], ...]
SequenceIds = tuple[int | None, ...]


def text_places(
    tokenizer: Any, texts: list[str], pairs: list[str] | None = None, **options: Any
) -> list[tuple[Offsets, SequenceIds]]:
    """Each row's tokens' character spans and the text each token is from (None: a special token), from
    the same tokenizer call the task encodes with (`options`: its truncation and length)."""
    _require_fast(tokenizer)
    encoded = tokenizer(texts, pairs, return_offsets_mapping=True, **options)
    return [encoded_places(encoded, row) for row in range(len(encoded["input_ids"]))]


def encoded_places(encoded: Any, row: int) -> tuple[Offsets, SequenceIds]:
    """One row of a fast tokenizer's encoding made with `return_offsets_mapping`: (spans, sequence ids)."""
    spans = tuple((int(start), int(end)) for start, end in encoded["offset_mapping"][row])
    return spans, tuple(encoded.sequence_ids(row))


def word_places(
    tokenizer: Any, words: list[list[str]], word_spans: list[list[tuple[int, int]]], max_length: int
) -> list[tuple[Offsets, SequenceIds]]:
    """As `text_places` for rows given as words (NER): the tokenizer reports spans inside each word, so
    each is shifted by its word's start in the row's text; every word token is from text 0."""
    _require_fast(tokenizer)
    encoded = tokenizer(
        words, is_split_into_words=True, truncation=True, max_length=max_length, return_offsets_mapping=True
    )
    places = []
    for row, spans in enumerate(word_spans):
        offsets: list[tuple[int, int]] = []
        sequence_ids: list[int | None] = []
        for (start, end), word in zip(encoded["offset_mapping"][row], encoded.word_ids(row), strict=True):
            if word is None:
                offsets.append((0, 0))
                sequence_ids.append(None)
            else:
                offsets.append((spans[word][0] + int(start), spans[word][0] + int(end)))
                sequence_ids.append(0)
        places.append((tuple(offsets), tuple(sequence_ids)))
    return places


def row_features(split: EncodedSplit, row: int) -> dict[str, torch.Tensor]:
    """One encoded row as the model takes it alone: [1, length] ids, its attention mask, token types
    when the task encodes them (a model without token types, such as DistilBERT, must not get them)."""
    ids = torch.as_tensor(np.asarray(split.sequences["input_ids"][row], dtype=np.int64)).unsqueeze(0)
    features = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "token_type_ids" in split.sequences:
        types = np.asarray(split.sequences["token_type_ids"][row], dtype=np.int64)
        features["token_type_ids"] = torch.as_tensor(types).unsqueeze(0)
    return features


def explained_score(
    outputs: torch.Tensor,
    positions: Sequence[int],
    classes: Sequence[int],
    activation: str,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The score `TextExplanationTarget` describes, one per batch row: `outputs` is the model output
    read ([batch, classes], [batch, tokens, classes] or [batch, tokens]), the activation applied over its
    last axis and the chosen entries averaged. A softmax over the sequence leaves padding out
    (`attention_mask`), so a row's score does not depend on what it is batched with."""
    if activation == "softmax" and not classes and attention_mask is not None:
        outputs = outputs.masked_fill(attention_mask == 0, float("-inf"))
    if activation == "softmax":
        outputs = outputs.float().softmax(-1)
    elif activation == "sigmoid":
        outputs = outputs.float().sigmoid()
    if not positions:
        return outputs[:, classes[0]]
    if not classes:
        return outputs[:, list(positions)].mean(-1)
    return outputs[:, list(positions), list(classes)].mean(-1)


def row_score(outputs: np.ndarray, positions: Sequence[int], classes: Sequence[int], activation: str) -> float:
    """`explained_score` of one row's outputs as the task's scoring returned them (no batch axis)."""
    batch = torch.from_numpy(np.asarray(outputs, dtype=np.float32)).unsqueeze(0)
    return float(explained_score(batch, positions, classes, activation)[0])


def _require_fast(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
            "explanations map tokens back to the words of the text through character offsets, which only a "
            "fast (Rust) tokenizer reports; this model's tokenizer is a slow one. Use a model that ships a "
            "tokenizer.json."
        )
