"""Duplicate and leakage audits, checked by planting known copies into the bundled SMS spam data.

The SMS data has no exact duplicates after normalisation but does have natural near duplicates
(templated spam), so planted near copies are made from messages without natural neighbours and the
test asserts that exactly the planted pairs are added on top of the natural ones.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from datasketch import MinHash, MinHashLSH

from tunewise.audit.duplicates import (
    DuplicateGroup,
    Leak,
    _candidate_pairs,
    _signatures,
    exact_duplicates,
    find_leakage,
    near_duplicates,
    normalise_text,
)

SMS_TRAIN = Path(__file__).resolve().parents[2] / "tunewise" / "data" / "builtin" / "sms_spam" / "train.tsv"
FIRST_ROW = 2  # row 1 of the file is the header


def _read_sms() -> pd.DataFrame:
    frame = pd.read_csv(SMS_TRAIN, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    frame["_row"] = range(FIRST_ROW, FIRST_ROW + len(frame))
    return frame


@pytest.fixture(scope="module")
def sms() -> pd.DataFrame:
    return _read_sms()


@pytest.fixture(scope="module")
def natural_near(sms: pd.DataFrame) -> list[tuple[int, int, float]]:
    return near_duplicates(sms, ["text"])


@pytest.fixture(scope="module")
def sources(sms: pd.DataFrame, natural_near: list[tuple[int, int, float]]) -> list[int]:
    """Rows of long ham messages with no natural near duplicate: safe to copy."""
    paired = {row for a, b, _ in natural_near for row in (a, b)}
    long_ham = sms[(sms["label"] == "ham") & (sms["text"].str.split().str.len() >= 20)]
    return [int(row) for row in long_ham["_row"] if row not in paired][:10]


def _text(sms: pd.DataFrame, row: int) -> str:
    return str(sms.loc[sms["_row"] == row, "text"].iloc[0])


def _with_last_word_changed(text: str) -> str:
    """Changing the last word alters one word 3-shingle, so a 20-word text stays above 0.8 Jaccard."""
    words = text.split()
    return " ".join([*words[:-1], "zebrafish"])


def _append(frame: pd.DataFrame, texts: list[str], labels: list[str]) -> tuple[pd.DataFrame, list[int]]:
    start = int(frame["_row"].max()) + 1
    rows = list(range(start, start + len(texts)))
    extra = pd.DataFrame({"text": texts, "label": labels, "_row": rows})
    return pd.concat([frame, extra], ignore_index=True), rows


def test_normalise_text_folds_case_and_whitespace() -> None:
    assert normalise_text("  Hello\tWORLD \n again ") == "hello world again"
    assert normalise_text("Straße") == normalise_text("STRASSE")


def test_clean_sms_has_no_exact_duplicates(sms: pd.DataFrame) -> None:
    assert exact_duplicates(sms, ["text"], "label") == []


def test_planted_duplicates_are_found_exactly(
    sms: pd.DataFrame, natural_near: list[tuple[int, int, float]], sources: list[int]
) -> None:
    s = sources
    planted_texts = [
        _text(sms, s[0]),
        _text(sms, s[1]),
        "  " + _text(sms, s[2]).upper().replace(" ", "   \t") + " ",
        _text(sms, s[3]),
        _text(sms, s[4]),
        _with_last_word_changed(_text(sms, s[5])),
        _text(sms, s[6]) + "!!!",
    ]
    labels = ["ham", "ham", "ham", "spam", "spam", "ham", "ham"]
    frame, new = _append(sms, planted_texts, labels)

    groups = exact_duplicates(frame, ["text"], "label")
    assert [group.rows for group in groups] == [[s[i], new[i]] for i in range(5)]
    assert [group.conflicting for group in groups] == [False, False, False, True, True]
    assert groups[2].text == _text(sms, s[2])
    assert groups[3].labels == ["ham", "spam"]

    planted_pairs = set(near_duplicates(frame, ["text"])) - set(natural_near)
    assert {(a, b) for a, b, _ in planted_pairs} == {(s[5], new[5]), (s[6], new[6])}
    similarity = {(a, b): sim for a, b, sim in planted_pairs}
    assert similarity[(s[6], new[6])] == 1.0  # same words, only punctuation differs
    assert 0.8 <= similarity[(s[5], new[5])] < 1.0


def test_leakage_reports_exact_and_near_rows_only(sms: pd.DataFrame, sources: list[int]) -> None:
    s = sources
    test_split = pd.DataFrame(
        {
            "text": [
                "Are we still meeting for the quiz night at the library on thursday evening?",
                _text(sms, s[7]).lower(),
                "The quarterly gardening newsletter arrives with seeds for tomatoes and basil.",
                _with_last_word_changed(_text(sms, s[8])),
                "Thanks, see you soon at the cinema with the popcorn, the kids and grandma xx",
            ],
            "label": ["ham"] * 5,
            "_row": [2, 3, 4, 5, 6],
        }
    )
    leaks = find_leakage(sms, test_split, ["text"])
    assert [(leak.row, leak.train_rows, leak.kind) for leak in leaks] == [
        (3, [s[7]], "exact"),
        (5, [s[8]], "near"),
    ]
    assert leaks[0].similarity == 1.0
    assert 0.8 <= leaks[1].similarity < 1.0


def test_several_text_columns_numeric_labels_and_no_label_column() -> None:
    frame = pd.DataFrame(
        {
            "premise": ["A cat sits.", "a  CAT sits.", "A dog runs."],
            "hypothesis": ["It rests.", "it rests.", "It rests."],
            "label": [0, 1, 0],
            "_row": [10, 11, 12],
        }
    )
    (group,) = exact_duplicates(frame, ["premise", "hypothesis"], "label")
    assert group == DuplicateGroup(rows=[10, 11], text="A cat sits. [SEP] It rests.", labels=["0", "1"])
    assert group.conflicting
    (unlabelled,) = exact_duplicates(frame, ["premise", "hypothesis"], None)
    assert not unlabelled.conflicting


def test_near_duplicates_short_texts_and_empty_frame() -> None:
    frame = pd.DataFrame({"text": ["wonderful film", "wonderful films", "ok", "", "Ok"], "_row": [1, 2, 3, 4, 5]})
    pairs = near_duplicates(frame, ["text"], threshold=0.7)
    assert [(a, b) for a, b, _ in pairs] == [(1, 2)]  # "ok"/"Ok" are exact, not near
    empty = frame.iloc[0:0]
    assert near_duplicates(empty, ["text"]) == []
    assert find_leakage(empty, frame, ["text"]) == []
    assert find_leakage(frame, empty, ["text"]) == []


def test_leak_is_a_frozen_record() -> None:
    leak = Leak(row=1, train_rows=[2], kind="exact", similarity=1.0)
    with pytest.raises(AttributeError):
        leak.row = 3  # type: ignore[misc]


def test_numpy_banding_finds_exactly_datasketchs_lsh_candidates(sms: pd.DataFrame) -> None:
    """The bulk banding must return the candidate pairs MinHashLSH.query returns, no more, no fewer."""
    texts = sorted({normalise_text(text) for text in sms["text"]})
    texts += [text + " again" for text in texts[:300]]  # near copies, so that there are many candidates
    values, has_shingles = _signatures(texts, num_perm=128, seed=0)
    assert has_shingles.all()
    template = MinHash(num_perm=128, seed=0, scheme="affine64")
    signatures = [
        MinHash(seed=0, hashvalues=row, permutations=template.permutations, scheme="affine64") for row in values
    ]
    for threshold in (0.5, 0.8):
        lsh = MinHashLSH(threshold=threshold, num_perm=128)
        for key, signature in enumerate(signatures):
            lsh.insert(key, signature)
        expected = {(a, b) for a, s in enumerate(signatures) for b in lsh.query(s) if a < b}
        actual = {(int(a), int(b)) for a, b in _candidate_pairs(values, threshold)}
        assert actual == expected and len(expected) > 300
        split = 1000  # texts below it against texts from it on: what find_leakage asks for
        cross = {(int(a), int(b)) for a, b in _candidate_pairs(values, threshold, split=split)}
        assert cross == {(a, b) for a, b in expected if a < split <= b}
