"""Redacted copies of the data files: no PII left, everything else kept, the input never touched."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import pandas as pd
import pytest

import tunewise
from tunewise.audit.pii import PiiScanner
from tunewise.audit.redact import write_redacted_copies
from tunewise.data.readers import read_table
from tunewise.errors import DataError

EMAIL = "jane.doe@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"

TRAIN_ROWS = [
    {"id": 7, "text": f"mail me at {EMAIL} please", "label": "ham"},
    {"id": 3, "text": "nothing personal here, just a film", "label": "ham"},
    {"id": 12, "text": f"call {PHONE} or pay with {CARD}", "label": "spam"},
    {"id": 1, "text": 'she said "hi" to me', "label": "ham"},
]
TEST_ROWS = [
    {"id": 100, "text": f"again {EMAIL} here", "label": "ham", "extra": [1, 2]},
    {"id": 101, "text": "plain text", "label": "spam", "extra": None},
]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    train = folder / "train.csv"
    pd.DataFrame(TRAIN_ROWS).to_csv(train, index=False)
    test = folder / "test.jsonl"
    test.write_text("".join(json.dumps(row) + "\n" for row in TEST_ROWS), encoding="utf-8")
    return {"train": train, "test": test}


def config_for(data: dict[str, Path], **audit: object):
    raw = {"model": "minilm-l6", "data": {k: str(v) for k, v in data.items()}, "audit": audit}
    return tunewise.load_config(raw)


def redact(data: dict[str, Path], out: Path, mode: str, salt: Path, **audit: object) -> list[Path]:
    return write_redacted_copies(config_for(data, **audit), ["text"], out, mode, salt_file=salt)


def snapshot(paths: dict[str, Path]) -> dict[str, bytes]:
    return {split: path.read_bytes() for split, path in paths.items()}


def texts_of(path: Path) -> list[str]:
    return read_table(str(path), "train", ["text"], None)["text"].tolist()


def test_copies_have_no_pii_and_keep_other_columns(tmp_path, inputs):
    before = snapshot(inputs)
    out = tmp_path / "redacted" / "nested"  # created if missing
    written = redact(inputs, out, "replace", tmp_path / "salt")

    assert written == [out / "train.csv", out / "test.jsonl"]
    assert snapshot(inputs) == before
    assert not (tmp_path / "salt").exists()  # no salt needed outside hash mode

    scanner = PiiScanner()
    for path in written:
        assert all(scanner.scan_text(text) == [] for text in texts_of(path))

    train = pd.read_csv(out / "train.csv", dtype=str, keep_default_na=False)
    original = pd.read_csv(inputs["train"], dtype=str, keep_default_na=False)
    assert list(train.columns) == ["id", "text", "label"]  # no _row helper
    assert train["id"].tolist() == original["id"].tolist() == ["7", "3", "12", "1"]
    assert train["label"].tolist() == original["label"].tolist()
    assert train["text"].tolist() == [
        "mail me at <EMAIL_ADDRESS> please",
        "nothing personal here, just a film",
        "call <PHONE_NUMBER> or pay with <CREDIT_CARD>",
        'she said "hi" to me',
    ]

    records = [json.loads(line) for line in (out / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records == [
        {"id": 100, "text": "again <EMAIL_ADDRESS> here", "label": "ham", "extra": [1, 2]},
        {"id": 101, "text": "plain text", "label": "spam", "extra": None},
    ]


def test_mask_keeps_lengths(tmp_path, inputs):
    redact(inputs, tmp_path / "out", "mask", tmp_path / "salt")
    texts = texts_of(tmp_path / "out" / "train.csv")
    assert texts[0] == "mail me at " + "*" * len(EMAIL) + " please"
    assert texts[2] == f"call {'*' * len(PHONE)} or pay with {'*' * len(CARD)}"
    assert [len(text) for text in texts] == [len(row["text"]) for row in TRAIN_ROWS]


def hashed_emails(path: Path) -> list[str]:
    return re.findall(r"<EMAIL_ADDRESS:[0-9a-f]{12}>", " ".join(texts_of(path)))


def test_hash_pseudonyms_are_stable_per_salt(tmp_path, inputs):
    salt = tmp_path / "project" / ".tunewise-salt"
    redact(inputs, tmp_path / "one", "hash", salt)
    assert re.fullmatch(r"[0-9a-f]{32}\n", salt.read_text(encoding="utf-8"))
    assert salt.stat().st_mode & 0o077 == 0  # private to the owner

    train_tag = hashed_emails(tmp_path / "one" / "train.csv")
    test_tag = hashed_emails(tmp_path / "one" / "test.jsonl")
    assert len(train_tag) == 1 and train_tag == test_tag  # same value, same pseudonym across files
    assert re.fullmatch(
        r"call <PHONE_NUMBER:[0-9a-f]{12}> or pay with <CREDIT_CARD:[0-9a-f]{12}>",
        texts_of(tmp_path / "one" / "train.csv")[2],
    )

    redact(inputs, tmp_path / "two", "hash", salt)  # same salt file: same pseudonyms
    assert (tmp_path / "two" / "train.csv").read_bytes() == (tmp_path / "one" / "train.csv").read_bytes()

    redact(inputs, tmp_path / "three", "hash", tmp_path / "other-salt")
    assert hashed_emails(tmp_path / "three" / "train.csv") != train_tag


def test_refuses_the_input_folder(tmp_path, inputs):
    before = snapshot(inputs)
    folder = inputs["train"].parent
    with pytest.raises(DataError, match="folder of the train data"):
        redact(inputs, folder / ".", "replace", tmp_path / "salt")
    assert snapshot(inputs) == before
    assert sorted(path.name for path in folder.iterdir()) == ["test.jsonl", "train.csv"]


def test_refuses_an_existing_target_and_writes_nothing(tmp_path, inputs):
    before = snapshot(inputs)
    out = tmp_path / "out"
    out.mkdir()
    (out / "test.jsonl").write_text("keep me\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"already exists.*empty folder"):
        redact(inputs, out, "replace", tmp_path / "salt")
    assert snapshot(inputs) == before
    assert (out / "test.jsonl").read_text(encoding="utf-8") == "keep me\n"
    assert not (out / "train.csv").exists()  # checks run before the first write


def test_a_full_disk_or_a_file_that_appears_meanwhile_leaves_no_copy(tmp_path, inputs, monkeypatch):
    from tunewise.runs import atomic

    real_flush, flushed = atomic.flush_to_disk, []

    def second_copy_fills_the_disk(written: Path, target: Path | None = None) -> None:
        flushed.append(written)
        if len(flushed) == 2:
            raise OSError(28, "No space left on device")
        real_flush(written, target)

    out = tmp_path / "out"
    monkeypatch.setattr(atomic, "flush_to_disk", second_copy_fills_the_disk)
    with pytest.raises(tunewise.TunewiseError, match=r"disk is full: .*test\.jsonl could not be written"):
        redact(inputs, out, "replace", tmp_path / "salt")
    assert list(out.iterdir()) == []  # not the first copy either, and no partial one
    monkeypatch.undo()

    real_link = atomic.os.link

    def appears_meanwhile(source: str, target: str) -> None:
        if Path(target).name == "test.jsonl":
            Path(target).write_text("someone else's\n", encoding="utf-8")
        real_link(source, target)

    monkeypatch.setattr(atomic.os, "link", appears_meanwhile)
    with pytest.raises(DataError, match="appeared while the copies were made"):
        redact(inputs, out, "replace", tmp_path / "salt")
    assert sorted(path.name for path in out.iterdir()) == ["test.jsonl"]
    assert (out / "test.jsonl").read_text(encoding="utf-8") == "someone else's\n"


def test_refuses_hf_sources(tmp_path, inputs):
    with pytest.raises(DataError, match="needs a file"):
        redact({"train": inputs["train"], "test": "hf:glue:sst2"}, tmp_path / "out", "replace", tmp_path / "salt")
    assert not (tmp_path / "out").exists()


def test_tsv_gzip_and_custom_patterns_round_trip(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = [
        ["id", "text", "label"],
        ["a", f'he said "call {PHONE}" ok', "x"],
        ["b", "employee EMP-123456 wrote", "y"],
    ]
    tsv = folder / "train.tsv"
    tsv.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    gz = folder / "validation.csv.gz"
    gz.write_bytes(gzip.compress(pd.DataFrame(TRAIN_ROWS).to_csv(index=False).encode()))

    out = tmp_path / "out"
    written = redact(
        {"train": tsv, "validation": gz}, out, "replace", tmp_path / "salt", pii_patterns={"EMPLOYEE_ID": r"EMP-\d{6}"}
    )
    assert written == [out / "train.tsv", out / "validation.csv.gz"]

    frame = read_table(str(out / "train.tsv"), "train", ["text"], "label")
    assert frame["text"].tolist() == ['he said "call <PHONE_NUMBER>" ok', "employee <EMPLOYEE_ID> wrote"]
    assert frame["id"].tolist() == ["a", "b"] and frame["label"].tolist() == ["x", "y"]
    raw = pd.read_csv(out / "train.tsv", sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
    assert raw.shape == (2, 3)

    gzipped = read_table(str(out / "validation.csv.gz"), "validation", ["text"], "label")
    assert gzipped["text"].tolist()[2] == "call <PHONE_NUMBER> or pay with <CREDIT_CARD>"
    assert gzip.decompress((out / "validation.csv.gz").read_bytes()).startswith(b"id,text,label\n")


def test_parquet_and_json_list_keep_types(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    parquet = folder / "train.parquet"
    pd.DataFrame({"id": [1, 2], "text": [f"mail {EMAIL}", "fine"], "score": [0.5, 1.5]}).to_parquet(parquet)
    listed = folder / "test.json"
    listed.write_text(json.dumps([{"text": f"card {CARD}", "n": 3}, {"text": "ok", "n": None}]), encoding="utf-8")

    redact({"train": parquet, "test": listed}, tmp_path / "out", "replace", tmp_path / "salt")
    table = pd.read_parquet(tmp_path / "out" / "train.parquet")
    assert table["id"].tolist() == [1, 2] and table["score"].tolist() == [0.5, 1.5]
    assert table["text"].tolist() == ["mail <EMAIL_ADDRESS>", "fine"]
    assert json.loads((tmp_path / "out" / "test.json").read_text(encoding="utf-8")) == [
        {"text": "card <CREDIT_CARD>", "n": 3},
        {"text": "ok", "n": None},
    ]
