"""Token-labelled data: CoNLL column files and JSONL (`tokens`, `tags`), and the tag schemes they use.

A CoNLL file holds one word per line with its columns separated by whitespace (tabs, when the
line has any, so a word may hold spaces), a blank line after each sentence and `-DOCSTART-` lines
between documents. JSONL, Parquet and `hf:` datasets hold a list of words and a list of tags per
record. Either way the frame has one row per sentence: the words, the tags (when labelled), the
words joined by single spaces as the sentence's text (what the shared text checks read and what
entity character offsets refer to), and `_row`, the line (or record) the sentence starts at.

Unlabelled input for prediction may instead be raw text (JSONL `text`): it is split into words at
whitespace and punctuation, keeping each word's character offsets in the original text.

Schemes: IOB1 (I- starts an entity; B- only where an entity directly follows one of the same
type), BIO (IOB2: every entity starts with B-) and BIOES (S- single-word entities, E- ends). Each
tag sequence is read into entity spans the way conlleval and seqeval read it (a stray I- starts an
entity), then written out in the scheme the model learns. A sequence is *invalid* in a scheme when
writing its spans back in that scheme does not give the same tags (e.g. I-PER after O in BIO).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from seqeval.metrics.sequence_labeling import get_entities

from tunewise.data.readers import ROW_COLUMN, _check_exists, _decode, _gunzip, cite_rows, read_table
from tunewise.errors import DataError

CONLL_EXTENSIONS = (".conll", ".conll03", ".txt", ".iob", ".iob1", ".iob2", ".bio", ".bioes")
DOCSTART = "-DOCSTART-"
SCHEMES = ("IOB1", "BIO", "BIOES")
SCHEME_PREFIXES = {"IOB1": ("B", "I"), "BIO": ("B", "I"), "BIOES": ("B", "I", "E", "S")}
TAG_PATTERN = re.compile(r"^(?:O|[BIES]-\S+)$")
WORD_PATTERN = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks, as CoNLL tokenises
Span = tuple[str, int, int]  # entity type, first word, last word (inclusive)


@dataclass(frozen=True)
class Columns:
    """The frame's column names (the config's): words, tags and the sentence text offsets refer to."""

    words: str = "tokens"
    tags: str = "tags"
    text: str = "text"


# ----------------------------------------------------------------------------------------------- reading


def is_conll(source: str) -> bool:
    """Whether `source` names a CoNLL column file (by its extension, after an optional .gz)."""
    suffixes = [suffix.lower() for suffix in Path(source).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in CONLL_EXTENSIONS


def read_conll(source: str, split: str, columns: Columns, tag_column: int, with_labels: bool) -> pd.DataFrame:
    """One row per sentence: its words, tags (when `with_labels`), text and `_row` (its first line)."""
    where = f"{split} data {source!r}"
    path = Path(source)
    _check_exists(path, where)
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        data = _gunzip(data, where)
    sentences: list[dict[str, Any]] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0

    def close_sentence() -> None:
        if words:
            sentences.append({columns.words: list(words), columns.tags: list(tags), ROW_COLUMN: start})
            words.clear()
            tags.clear()

    for number, line in enumerate(_decode(data, path, where).split("\n"), start=1):
        fields = [field.strip() for field in (line.rstrip("\r").split("\t") if "\t" in line else line.split())]
        if not any(fields) or fields[0] == DOCSTART:
            close_sentence()
            continue
        if not words:
            start = number
        words.append(fields[0])
        if with_labels:
            tags.append(_conll_tag(fields, tag_column, number, where))
    close_sentence()
    if not sentences:
        raise DataError(f"{where}: the file holds no sentences. Point the config at the file that holds your data.")
    frame = pd.DataFrame.from_records(sentences)
    if not with_labels:
        frame = frame.drop(columns=columns.tags)
    frame.insert(0, columns.text, [" ".join(sentence) for sentence in frame[columns.words]])
    frame.attrs.update(source=where, row_unit="line")
    return frame


def _conll_tag(fields: list[str], tag_column: int, line: int, where: str) -> str:
    if len(fields) < 2 or not -len(fields) <= tag_column < len(fields):
        raise DataError(
            f"{where}: line {line} has {len(fields)} column(s) ({' '.join(fields)!r}), so it has no tag in column "
            f"{tag_column} (ner.conll_tag_column). Give every word line its tag (e.g. 'Paris B-LOC'), or set "
            "ner.conll_tag_column to the column that holds the tags."
        )
    return fields[tag_column]


def read_records(source: str, split: str, columns: Columns, with_labels: bool) -> pd.DataFrame:
    """JSONL/JSON/Parquet/hf: records holding a list of words (and of tags) each; the user's other columns
    stay. Unlabelled records may hold raw text instead of words: it is split into words here."""
    frame = read_table(source, split, [], None)
    where, unit = frame.attrs["source"], frame.attrs["row_unit"]
    if not with_labels and columns.words not in frame.columns and columns.text in frame.columns:
        return _split_texts(read_table(source, split, [columns.text], None), columns)
    needed = [columns.words] + ([columns.tags] if with_labels else [])
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        keys = {columns.words: "ner.tokens_column", columns.tags: "ner.tags_column"}
        present = ", ".join(repr(c) for c in frame.columns if c != ROW_COLUMN)
        raise DataError(
            f"{where}: column(s) {', '.join(f'{c!r} ({keys[c]})' for c in missing)} not found; the file has "
            f"{present}. Each record needs a list of words and a list of tags, e.g. "
            '{"tokens": ["John", "lives", "in", "Paris"], "tags": ["B-PER", "O", "O", "B-LOC"]}, or set '
            "ner.tokens_column / ner.tags_column to your column names"
            + (f" (or, to predict, data.text_column {columns.text!r} for raw text)." if not with_labels else ".")
        )
    rows = frame[ROW_COLUMN].tolist()
    for column in needed:
        frame[column] = [_string_list(v, row, column, where, unit) for v, row in zip(frame[column], rows, strict=True)]
    if with_labels:
        for words, tags, row in zip(frame[columns.words], frame[columns.tags], rows, strict=True):
            if len(words) != len(tags):
                raise DataError(
                    f"{where}, {unit} {row}: {len(words)} words but {len(tags)} tags. Give exactly one tag per "
                    "word (O for words outside any entity)."
                )
    if columns.text in frame.columns:
        _check_text_holds_words(frame, columns, where, unit)
    else:
        frame.insert(0, columns.text, [" ".join(words) for words in frame[columns.words]])
    frame.attrs.update(source=where, row_unit=unit)
    return frame


def _check_text_holds_words(frame: pd.DataFrame, columns: Columns, where: str, unit: str) -> None:
    """A record's own text must contain its words in order: entity offsets point into it."""
    for text, words, row in zip(frame[columns.text], frame[columns.words], frame[ROW_COLUMN], strict=True):
        try:
            word_offsets(str(text), words)
        except ValueError as missing:
            raise DataError(
                f"{where}, {unit} {row}: the word {missing.args[0]!r} is not in the record's {columns.text!r} text "
                f"(after the words before it). Entity offsets point into that text, so it must hold the words in "
                f"order; fix it, drop the {columns.text!r} field (tunewise then joins the words with spaces), or set "
                "data.text_column to another name."
            ) from None


def _split_texts(frame: pd.DataFrame, columns: Columns) -> pd.DataFrame:
    """Raw texts as words (whitespace and punctuation split), for prediction."""
    frame[columns.words] = [split_words(text)[0] for text in frame[columns.text]]
    empty = frame.loc[frame[columns.words].map(len) == 0, ROW_COLUMN].tolist()
    if empty:
        raise DataError(
            f"{frame.attrs['source']}: {cite_rows(empty, frame.attrs['row_unit'])} hold no word (only spaces or "
            "symbols the word splitter drops). Remove them or give them text."
        )
    return frame


def _string_list(value: Any, row: int, column: str, where: str, unit: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(
            f"{where}, {unit} {row}: column {column!r} must hold a non-empty list of strings (one per word), "
            f"not {value!r:.60}."
        )
    bad = [item for item in value if not isinstance(item, str) or not item.strip()]
    if bad:
        kind = "numbers (give tag names such as B-PER, not ids)" if isinstance(bad[0], int) else "empty or non-text"
        raise DataError(
            f"{where}, {unit} {row}: column {column!r} holds {kind} items ({bad[0]!r}). Every item must be a "
            "non-empty string."
        )
    return [item.strip() for item in value]


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """Words and single punctuation marks of a raw text, with their [start, end) character offsets."""
    matches = list(WORD_PATTERN.finditer(text))
    return [m.group() for m in matches], [m.span() for m in matches]


def word_offsets(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Where each word stands in `text` (in order, anything between them); ValueError(word) when one is not."""
    offsets, cursor = [], 0
    for word in words:
        start = text.find(word, cursor)
        if start < 0:
            raise ValueError(word)
        offsets.append((start, start + len(word)))
        cursor = start + len(word)
    return offsets


# ----------------------------------------------------------------------------------------------- schemes


def check_tag_names(tag_lists: Sequence[Sequence[str]], rows: Sequence[int], unit: str, where: str) -> None:
    """Every tag is O or PREFIX-TYPE with a B/I/E/S prefix; anything else names its sentence and the fix."""
    for tags, row in zip(tag_lists, rows, strict=True):
        for position, tag in enumerate(tags):
            if not TAG_PATTERN.match(tag):
                raise DataError(
                    f"{where}: tag {tag!r} (word {position + 1} of the sentence at {unit} {row}) is not O or "
                    "B-/I-/E-/S- followed by an entity type (e.g. B-PER). tunewise reads the IOB1, BIO and BIOES "
                    "schemes; rewrite the tag, or check ner.conll_tag_column for CoNLL files."
                )


def spans(tags: Sequence[str]) -> list[Span]:
    """Entity spans as conlleval reads them: B- starts, I- continues (or starts after O), E- ends, S- is alone."""
    return [(kind, start, end) for kind, start, end in get_entities(list(tags))]


def write_tags(entity_spans: Sequence[Span], length: int, scheme: str) -> list[str]:
    """The tag sequence of `length` words that marks exactly `entity_spans` in `scheme`."""
    tags = ["O"] * length
    previous: Span | None = None
    for kind, start, end in entity_spans:
        for position in range(start, end + 1):
            tags[position] = f"I-{kind}"
        if scheme == "BIO" or (scheme == "IOB1" and previous and previous[0] == kind and previous[2] == start - 1):
            tags[start] = f"B-{kind}"
        elif scheme == "BIOES":
            tags[start] = f"S-{kind}" if start == end else f"B-{kind}"
            if end > start:
                tags[end] = f"E-{kind}"
        previous = (kind, start, end)
    return tags


def is_valid(tags: Sequence[str], scheme: str) -> bool:
    """Whether the sequence is written as `scheme` writes its own entities (no I- after O in BIO, ...)."""
    return write_tags(spans(tags), len(tags), scheme) == list(tags)


def detect_scheme(tag_lists: Sequence[Sequence[str]]) -> str:
    """BIOES when S-/E- occur; else IOB1 when it reads fewer sentences as invalid than BIO does; else BIO."""
    if any(tag[:2] in ("S-", "E-") for tags in tag_lists for tag in tags):
        return "BIOES"
    invalid_bio = sum(not is_valid(tags, "BIO") for tags in tag_lists)
    invalid_iob1 = sum(not is_valid(tags, "IOB1") for tags in tag_lists) if invalid_bio else 0
    return "IOB1" if invalid_bio and invalid_iob1 < invalid_bio else "BIO"


def wrong_prefixes(tag_lists: Sequence[Sequence[str]], scheme: str) -> list[int]:
    """Indices of sentences using a prefix the scheme does not have (E-/S- in BIO or IOB1)."""
    allowed = SCHEME_PREFIXES[scheme]
    return [i for i, tags in enumerate(tag_lists) if any(tag != "O" and tag[0] not in allowed for tag in tags)]


def first_problem(tags: Sequence[str], scheme: str) -> str:
    """Where a sequence first departs from `scheme`, e.g. "I-PER after O at word 3", for messages."""
    expected = write_tags(spans(tags), len(tags), scheme)
    position = next(i for i, (a, b) in enumerate(zip(tags, expected, strict=True)) if a != b)
    before = tags[position - 1] if position else "the sentence start"
    return f"{tags[position]} after {before} at word {position + 1} ({scheme} writes {expected[position]})"


def convert(tags: Sequence[str], scheme: str) -> list[str]:
    """The same entities written in `scheme`."""
    return write_tags(spans(tags), len(tags), scheme)
