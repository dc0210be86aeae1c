"""Sub-word tokens back into the user's words, through each token's character span.

A word is a maximal run of consecutive tokens of one text whose character spans touch (each starts
where the previous ended). So WordPiece's `un ##believ ##able` is `unbelievable`, and punctuation
written against a word joins it (`great!`, `don't`, `U.S.`): a reader sees what stands between two
spaces as one word, and that is what a deletion removes. Punctuation set apart by a space (`great !`)
is a word of its own. Special tokens ([CLS], [SEP], padding: no sequence id) belong to no word and
break a run, so a pair's two texts never merge. Spaces inside a token's span (byte-level BPE's `Ġ`,
SentencePiece's `▁`) are trimmed first; a token left zero-width joins the word before it in its text.

Writing without spaces (Chinese, Japanese) merges a whole run of characters into one word; tokens are
the better unit there, and a finer rule would need the language's own word segmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tunewise.explain.results import Word


@dataclass(frozen=True)
class WordSpan:
    """Where one word stands (which text, its character span) and the token positions it is made of."""

    source: int
    start: int
    end: int
    tokens: tuple[int, ...]


def word_spans(
    offsets: Sequence[tuple[int, int]], sequence_ids: Sequence[int | None], texts: Sequence[str]
) -> list[WordSpan]:
    """The words of one encoded row, in token order (see the module docstring for what a word is)."""
    words: list[WordSpan] = []
    current: WordSpan | None = None
    for position, (span, source) in enumerate(zip(offsets, sequence_ids, strict=True)):
        if source is None:
            current = None
            continue
        start, end = _trimmed(texts[source], *span)
        if current is not None and current.source == source and (start == current.end or start == end):
            extended = current.end if start == end else end  # a zero-width token adds no text to the word
            current = WordSpan(source, current.start, extended, (*current.tokens, position))
            words[-1] = current
        else:
            current = WordSpan(source, start, end, (position,))
            words.append(current)
    return words


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """A token's span without the spaces byte-level BPE and SentencePiece tokens carry (`Ġworld`, `▁`):
    a space-only token becomes zero-width, so it never bridges two words."""
    piece = text[start:end]
    stripped = piece.lstrip()
    start += len(piece) - len(stripped)
    end = start + len(stripped.rstrip())
    return start, end


def token_words(spans: Sequence[WordSpan], length: int) -> np.ndarray:
    """The word each token belongs to, [length]; -1 for special tokens."""
    owner = np.full(length, -1, dtype=np.int64)
    for index, span in enumerate(spans):
        owner[list(span.tokens)] = index
    return owner


def merge(spans: Sequence[WordSpan], texts: Sequence[str], token_scores: np.ndarray) -> tuple[Word, ...]:
    """Each word with the summed attribution of its tokens and its exact text in the user's input."""
    return tuple(
        Word(
            text=texts[span.source][span.start : span.end],
            source=span.source,
            start=span.start,
            end=span.end,
            score=float(token_scores[list(span.tokens)].sum()),
        )
        for span in spans
    )
