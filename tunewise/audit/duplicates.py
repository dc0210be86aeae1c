"""Exact duplicates, near duplicates and train/eval leakage in text data sets.

Duplicates inflate some examples' weight in training, conflicting duplicates (same
text, different labels) put a ceiling on achievable accuracy, and evaluation rows
that also stand in train make scores look better than they are. This module only
*reports* such rows; it never drops anything.

Near duplicates use MinHash + LSH (``datasketch``). Shingles are chosen per text:

* word 3-shingles (over ``\\w+`` tokens of the normalised text) when the text has at
  least 3 words, so that one changed word in a long message changes only 3 shingles;
* character 5-grams of the normalised text for texts of 1-2 words, which have no word
  3-shingle at all (common in SST-2 phrases);
* the whole normalised text as a single shingle when it is shorter than 5 characters.

Shingle kinds carry a prefix so a word shingle never collides with a char shingle.
Punctuation is not part of the word tokens, so "Call me now" and "Call me now!" get
identical word shingles (estimated Jaccard 1.0) but are still a *near* duplicate pair
because their normalised texts differ.

MinHash signatures are computed in bulk with numpy (shingles hashed to 64 bits with
``pandas.util.hash_array``, then datasketch's own ``affine64`` permutations) and wrapped
in ``datasketch.MinHash(hashvalues=...)``: per-shingle ``MinHash.update`` calls are
orders of magnitude slower on 67k-row data sets.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from datasketch import MinHash, MinHashLSH

__all__ = [
    "DuplicateGroup",
    "Leak",
    "exact_duplicates",
    "find_leakage",
    "near_duplicates",
    "normalise_text",
]

SEPARATOR = " [SEP] "
ROW_COLUMN = "_row"
_SCHEME = "affine64"
_WORD_SHINGLE = 3
_CHAR_SHINGLE = 5
_WORD_RE = re.compile(r"\w+")
_WHITESPACE_RE = re.compile(r"\s+")
# Shingles processed per numpy block; bounds memory at ~ block * num_perm * 8 bytes.
_BLOCK_SHINGLES = 65_536


def normalise_text(text: str) -> str:
    """Casefold, collapse all whitespace runs to one space and strip.

    Case and spacing differences rarely change meaning, so treating them as equal
    catches the copies that plain string equality misses.
    """
    return _WHITESPACE_RE.sub(" ", str(text).casefold()).strip()


@dataclass(frozen=True)
class DuplicateGroup:
    """Rows whose normalised texts are identical."""

    rows: list[int]
    text: str
    labels: list[str]

    @property
    def conflicting(self) -> bool:
        """True when the copies disagree on the label (a sign of label noise)."""
        return len(set(self.labels)) > 1


@dataclass(frozen=True)
class Leak:
    """An evaluation row whose text also stands (exactly or nearly) in train."""

    row: int
    train_rows: list[int]
    kind: str
    similarity: float


def _joined_texts(frame: pd.DataFrame, text_columns: Sequence[str]) -> list[str]:
    """One string per row; several text columns are joined with `` [SEP] ``."""
    if not text_columns:
        raise ValueError("at least one text column is required")
    columns = [frame[column].astype(str).tolist() for column in text_columns]
    if len(columns) == 1:
        return columns[0]
    return [SEPARATOR.join(parts) for parts in zip(*columns, strict=True)]


def _user_rows(frame: pd.DataFrame) -> list[int]:
    """User-visible row numbers: ``_row`` when present, positions otherwise."""
    if ROW_COLUMN in frame.columns:
        return [int(row) for row in frame[ROW_COLUMN].tolist()]
    return list(range(len(frame)))


def _group_by_normalised(texts: Iterable[str]) -> dict[str, list[int]]:
    """Map normalised text -> positions (in input order) carrying it."""
    groups: dict[str, list[int]] = defaultdict(list)
    for position, text in enumerate(texts):
        groups[normalise_text(text)].append(position)
    return groups


def exact_duplicates(frame: pd.DataFrame, text_columns: list[str], label_column: str | None) -> list[DuplicateGroup]:
    """Groups of two or more rows with the same normalised text, ordered by first row.

    Without a label column every label is reported as ``""`` (never conflicting).
    """
    texts = _joined_texts(frame, text_columns)
    rows = _user_rows(frame)
    labels = [str(value) for value in frame[label_column].tolist()] if label_column else [""] * len(frame)
    result = []
    for positions in _group_by_normalised(texts).values():
        if len(positions) < 2:
            continue
        ordered = sorted(positions, key=lambda position: rows[position])
        result.append(
            DuplicateGroup(
                rows=[rows[p] for p in ordered],
                text=texts[ordered[0]],
                labels=[labels[p] for p in ordered],
            )
        )
    return sorted(result, key=lambda group: group.rows[0])


def _shingles(normalised: str) -> list[str]:
    """Shingle set of one normalised text (see the module docstring for the choice)."""
    words = _WORD_RE.findall(normalised)
    if len(words) >= _WORD_SHINGLE:
        grams = {" ".join(words[i : i + _WORD_SHINGLE]) for i in range(len(words) - _WORD_SHINGLE + 1)}
        return ["w:" + gram for gram in grams]
    if len(normalised) >= _CHAR_SHINGLE:
        grams = {normalised[i : i + _CHAR_SHINGLE] for i in range(len(normalised) - _CHAR_SHINGLE + 1)}
        return ["c:" + gram for gram in grams]
    return ["t:" + normalised] if normalised else []


def _signatures(texts: Sequence[str], num_perm: int, seed: int) -> list[MinHash | None]:
    """Bulk MinHash signatures for normalised texts; ``None`` for texts with no shingle."""
    template = MinHash(num_perm=num_perm, seed=seed, scheme=_SCHEME)
    a, b = (np.asarray(p, dtype=np.uint64).reshape(1, -1) for p in template.permutations)
    shingle_lists = [_shingles(text) for text in texts]
    counts = np.fromiter((len(s) for s in shingle_lists), dtype=np.int64, count=len(shingle_lists))
    flat = np.array([s for shingles in shingle_lists for s in shingles], dtype=object)
    hashes = pd.util.hash_array(flat) if len(flat) else np.empty(0, dtype=np.uint64)
    values = np.empty((len(texts), num_perm), dtype=np.uint64)
    starts = np.concatenate(([0], np.cumsum(counts)))
    non_empty = np.flatnonzero(counts)
    for block in _blocks(non_empty, counts):
        lo, hi = starts[block[0]], starts[block[-1] + 1]
        with np.errstate(over="ignore"):
            permuted = hashes[lo:hi].reshape(-1, 1) * a + b
        values[block] = np.minimum.reduceat(permuted, starts[block] - lo, axis=0)
    permutations = template.permutations
    return [
        MinHash(seed=seed, hashvalues=values[i], permutations=permutations, scheme=_SCHEME) if counts[i] else None
        for i in range(len(texts))
    ]


def _blocks(indices: np.ndarray, counts: np.ndarray) -> Iterable[np.ndarray]:
    """Split consecutive-in-order text indices into blocks of about ``_BLOCK_SHINGLES`` shingles."""
    block: list[int] = []
    size = 0
    for index in indices.tolist():
        block.append(index)
        size += int(counts[index])
        if size >= _BLOCK_SHINGLES:
            yield np.array(block)
            block, size = [], 0
    if block:
        yield np.array(block)


def _build_lsh(signatures: Sequence[MinHash | None], threshold: float, num_perm: int) -> MinHashLSH:
    """LSH index keyed by position in ``signatures``."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for key, signature in enumerate(signatures):
            if signature is not None:
                session.insert(key, signature, check_duplication=False)
    return lsh


def near_duplicates(
    frame: pd.DataFrame,
    text_columns: list[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 0,
) -> list[tuple[int, int, float]]:
    """Pairs ``(row_a, row_b, estimated_jaccard)`` of near but not exactly equal texts.

    Exact copies are collapsed first (they are :func:`exact_duplicates`' business), so
    each distinct normalised text is hashed once; a near pair between two texts that
    each have copies is reported for every row combination. ``row_a < row_b``, each
    pair once, sorted by rows. Candidates from LSH are verified against ``threshold``
    with the MinHash Jaccard estimate.
    """
    rows = _user_rows(frame)
    groups = _group_by_normalised(_joined_texts(frame, text_columns))
    unique_texts = list(groups)
    signatures = _signatures(unique_texts, num_perm, seed)
    lsh = _build_lsh(signatures, threshold, num_perm)
    pairs: list[tuple[int, int, float]] = []
    for key, signature in enumerate(signatures):
        if signature is None:
            continue
        for other in lsh.query(signature):
            if other <= key:
                continue
            similarity = signature.jaccard(signatures[other])
            if similarity >= threshold:
                pairs.extend(_row_pairs(groups[unique_texts[key]], groups[unique_texts[other]], rows, similarity))
    return sorted(pairs)


def _row_pairs(
    left: Sequence[int], right: Sequence[int], rows: Sequence[int], similarity: float
) -> Iterable[tuple[int, int, float]]:
    """All user-row pairs between two groups of positions, smaller row first."""
    for p in left:
        for q in right:
            a, b = sorted((rows[p], rows[q]))
            yield (a, b, similarity)


def find_leakage(
    train: pd.DataFrame,
    other: pd.DataFrame,
    text_columns: list[str],
    threshold: float = 0.8,
    num_perm: int = 128,
    seed: int = 0,
) -> list[Leak]:
    """Rows of ``other`` (validation/test) whose text stands exactly or nearly in train.

    An exact (normalised) match wins over near matches and has similarity 1.0. For a
    near leak ``train_rows`` lists every train row whose text passes ``threshold`` and
    ``similarity`` is the best estimate. Sorted by ``other``'s rows.
    """
    train_rows = _user_rows(train)
    train_groups = _group_by_normalised(_joined_texts(train, text_columns))
    train_texts = list(train_groups)
    other_rows = _user_rows(other)
    other_normalised = [normalise_text(text) for text in _joined_texts(other, text_columns)]

    leaks: list[Leak] = []
    pending: list[int] = []
    for position, text in enumerate(other_normalised):
        if text in train_groups:
            matched = sorted(train_rows[p] for p in train_groups[text])
            leaks.append(Leak(row=other_rows[position], train_rows=matched, kind="exact", similarity=1.0))
        else:
            pending.append(position)

    if pending:
        train_signatures = _signatures(train_texts, num_perm, seed)
        lsh = _build_lsh(train_signatures, threshold, num_perm)
        pending_signatures = _signatures([other_normalised[p] for p in pending], num_perm, seed)
        for position, signature in zip(pending, pending_signatures, strict=True):
            leak = _near_leak(signature, lsh, train_signatures, train_texts, train_groups, train_rows, threshold)
            if leak is not None:
                leaks.append(Leak(row=other_rows[position], train_rows=leak[0], kind="near", similarity=leak[1]))
    return sorted(leaks, key=lambda leak: leak.row)


def _near_leak(
    signature: MinHash | None,
    lsh: MinHashLSH,
    train_signatures: Sequence[MinHash | None],
    train_texts: Sequence[str],
    train_groups: dict[str, list[int]],
    train_rows: Sequence[int],
    threshold: float,
) -> tuple[list[int], float] | None:
    """Train rows nearly matching one evaluation signature and the best similarity."""
    if signature is None:
        return None
    matched: list[int] = []
    best = 0.0
    for key in lsh.query(signature):
        candidate = train_signatures[key]
        similarity = signature.jaccard(candidate) if candidate is not None else 0.0
        if similarity >= threshold:
            matched.extend(train_rows[p] for p in train_groups[train_texts[key]])
            best = max(best, similarity)
    return (sorted(matched), best) if matched else None
