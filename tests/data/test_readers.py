"""Tests for tunewise.data: every format reads the same data, and every user mistake gets a useful message."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from tunewise.data import file_fingerprint, read_table, split_train_validation
from tunewise.errors import DataError

TEXTS = ["great film", 'he said "wow", twice', "NA", "null", "dull, slow plot"]
LABELS = ["pos", "pos", "neg", "neg", "neg"]
TEXT = ["text"]


def records(texts: list[str] = TEXTS, labels: list[object] = LABELS) -> list[dict[str, object]]:
    return [{"text": text, "label": label} for text, label in zip(texts, labels, strict=True)]


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_tsv(path: Path, rows: list[dict[str, object]]) -> Path:
    lines = ["text\tlabel"] + [f"{row['text']}\t{row['label']}" for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def message(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------------------------------------- formats


def _write_every_format(folder: Path) -> dict[str, str]:
    rows = records()
    frame = pd.DataFrame(rows)
    paths = {
        "csv": write_csv(folder / "d.csv", rows),
        "tsv": write_tsv(folder / "d.tsv", rows),
        "tab": write_tsv(folder / "d.tab", rows),
        "txt": write_tsv(folder / "d.txt", rows),
        "jsonl": write_jsonl(folder / "d.jsonl", rows),
        "ndjson": write_jsonl(folder / "d.ndjson", rows),
        "parquet": folder / "d.parquet",
        "pq": folder / "d.pq",
        "json": folder / "d.json",
    }
    frame.to_parquet(paths["parquet"])
    frame.to_parquet(paths["pq"])
    paths["json"].write_text(json.dumps(rows), encoding="utf-8")
    for name in ("csv", "tsv", "jsonl", "json"):
        gz = folder / f"d.{name}.gz"
        gz.write_bytes(gzip.compress(paths[name].read_bytes()))
        paths[f"{name}.gz"] = gz
    return {name: str(path) for name, path in paths.items()}


def test_every_format_reads_the_same_frame(tmp_path: Path) -> None:
    for name, path in _write_every_format(tmp_path).items():
        frame = read_table(path, "train", TEXT, "label")
        assert frame["text"].tolist() == TEXTS, name
        assert frame["label"].tolist() == LABELS, name
        assert list(frame.columns) == ["text", "label", "_row"], name
        assert isinstance(frame.index, pd.RangeIndex), name
        assert frame["_row"].dtype.kind == "i", name


def test_row_numbers_match_what_the_user_sees(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\na,x\n\nb,y\n", encoding="utf-8")
    assert read_table(str(csv), "train", TEXT, "label")["_row"].tolist() == [2, 4]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": 2}\n', encoding="utf-8")
    assert read_table(str(jsonl), "train", TEXT, "label")["_row"].tolist() == [1, 3]


def test_na_and_null_texts_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\nNA,a\nnull,b\nNone,c\nnan,d\n", encoding="utf-8")
    frame = read_table(str(path), "train", TEXT, "label")
    assert frame["text"].tolist() == ["NA", "null", "None", "nan"]
    assert all(isinstance(value, str) for value in frame["text"])


def test_csv_labels_are_strings_but_json_keeps_types(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 1, "tags": ["x", "y"]}, {"text": "b", "label": 0, "tags": []}]
    csv = write_csv(tmp_path / "d.csv", [{"text": row["text"], "label": row["label"]} for row in rows])
    assert read_table(str(csv), "train", TEXT, "label")["label"].tolist() == ["1", "0"]
    frame = read_table(str(write_jsonl(tmp_path / "d.jsonl", rows)), "train", TEXT, "tags")
    assert frame["label"].tolist() == [1, 0]
    assert frame["tags"].tolist() == [["x", "y"], []]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    assert read_table(str(tmp_path / "d.parquet"), "train", TEXT, "tags")["tags"].tolist() == [["x", "y"], []]


def test_sms_spam_tsv_with_quotes(tmp_path: Path) -> None:
    path = tmp_path / "SMSSpamCollection.tsv"
    path.write_text(
        'Label\tSMS\nham\tOk lar... "Joking" wif u oni...\n'
        "spam\tFree entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121\n"
        'ham\t"Hi, how are you?\nham\tHe said "yes, ok" and left "\n',
        encoding="utf-8",
    )
    frame = read_table(str(path), "train", ["SMS"], "Label")
    assert frame["Label"].tolist() == ["ham", "spam", "ham", "ham"]
    assert frame["SMS"].tolist()[0] == 'Ok lar... "Joking" wif u oni...'
    assert frame["SMS"].tolist()[2] == '"Hi, how are you?'
    assert frame["SMS"].tolist()[3] == 'He said "yes, ok" and left "'


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\ncafé,a\n".encode("utf-8-sig"))
    frame = read_table(str(path), "train", TEXT, "label")
    assert frame["text"].tolist() == ["café"]


def test_prediction_input_without_label(tmp_path: Path) -> None:
    path = tmp_path / "inputs.txt"
    path.write_text("text\nfirst\nsecond\n", encoding="utf-8")
    frame = read_table(str(path), "predict", TEXT, None)
    assert frame["text"].tolist() == ["first", "second"]


def test_json_numbers_in_text_column_become_text(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": 42, "label": "a"}])
    assert read_table(str(path), "train", TEXT, "label")["text"].tolist() == ["42"]


def test_input_file_is_not_modified(tmp_path: Path) -> None:
    for path in _write_every_format(tmp_path).values():
        before = Path(path).read_bytes()
        read_table(path, "train", TEXT, "label")
        assert Path(path).read_bytes() == before


# ---------------------------------------------------------------------------------------------- Hugging Face


def test_hf_saved_dataset_and_dataset_dict(tmp_path: Path) -> None:
    import datasets

    single = datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS})
    single.save_to_disk(str(tmp_path / "single"))
    frame = read_table(f"hf:{tmp_path / 'single'}", "train", TEXT, "label")
    assert frame["text"].tolist() == TEXTS
    assert frame["_row"].tolist() == [1, 2, 3, 4, 5]

    dev = datasets.Dataset.from_dict({"text": ["x", "y"], "label": ["pos", "neg"]})
    datasets.DatasetDict(train=single, dev=dev).save_to_disk(str(tmp_path / "dict"))
    source = f"hf:{tmp_path / 'dict'}"
    assert read_table(source, "train", TEXT, "label")["text"].tolist() == TEXTS
    assert read_table(source, "validation", TEXT, "label")["text"].tolist() == ["x", "y"]
    with pytest.raises(DataError) as excinfo:
        read_table(source, "test", TEXT, "label")
    assert "no 'test' split" in message(excinfo)
    assert "train, dev" in message(excinfo)


def test_hf_class_labels_become_names(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
            "tags": datasets.List(datasets.ClassLabel(names=["a", "b"])),
        }
    )
    data = {"text": ["x", "y"], "label": [1, 0], "tags": [[0, 1], []]}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(tmp_path / "ds"))
    frame = read_table(f"hf:{tmp_path / 'ds'}", "train", TEXT, "label")
    assert frame["label"].tolist() == ["pos", "neg"]
    assert frame["tags"].tolist() == [["a", "b"], []]


def test_hf_hub_failure_suggests_saving_to_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as excinfo:
        read_table("hf:nyu-mll/glue:sst2", "train", ["sentence"], "label")
    text = message(excinfo)
    assert "'nyu-mll/glue'" in text and "'sst2'" in text
    assert "could not be downloaded" in text
    assert "save_to_disk" in text


# ---------------------------------------------------------------------------------------------- errors


def test_missing_file_suggests_close_names(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", records())
    with pytest.raises(DataError) as excinfo:
        read_table(str(tmp_path / "trian.csv"), "train", TEXT, "label")
    text = message(excinfo)
    assert "trian.csv" in text and "not found" in text
    assert "did you mean" in text.lower() and "train.csv" in text


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_table(str(tmp_path / "nope" / "train.csv"), "train", TEXT, "label")


def test_unknown_extension_lists_formats(tmp_path: Path) -> None:
    path = tmp_path / "train.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    text = message(excinfo)
    assert "train.xlsx" in text and "'.xlsx'" in text
    for name in (".csv", ".tsv", ".jsonl", ".parquet", "hf:"):
        assert name in text


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", "", "empty"),
        ("blank.tsv", "\n  \n", "empty"),
        ("header.csv", "text,label\n", "no data rows"),
        ("header_blank.csv", "text,label\n\n\n", "no data rows"),
        ("empty.jsonl", "\n\n", "empty"),
        ("empty.json", "[]", "no records"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    assert name in message(excinfo) and expected in message(excinfo)


def test_empty_parquet(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(DataError, match="no data rows"):
        read_table(str(path), "train", TEXT, "label")


def test_latin1_file_is_rejected_with_iconv_hint(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\nok,a\ncafé,b\n".encode("latin-1"))
    before = path.read_bytes()
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    text = message(excinfo)
    assert "latin.csv" in text and "UTF-8" in text
    assert "line 3" in text and "byte 19" in text
    assert "iconv -f latin1 -t utf-8" in text
    assert path.read_bytes() == before


def test_utf16_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "u16.csv"
    path.write_bytes("text,label\nx,a\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        read_table(str(path), "train", TEXT, "label")


def test_csv_row_with_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("text,label\ngood,a\n\nbad, unquoted comma,b\n", encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    text = message(excinfo)
    assert "bad.csv" in text and "line 4" in text and "3 fields" in text
    assert "double quotes" in text


def test_csv_first_row_with_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nbad, comma,b\nok,a\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        read_table(str(path), "train", TEXT, "label")


def test_csv_unclosed_quote(tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    path.write_text('text,label\nok,a\n"never closed,b\nok,a\n', encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    assert "quote.csv" in message(excinfo) and "line 3" in message(excinfo) and "quote" in message(excinfo)


def test_tsv_row_with_extra_tab(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text("text\tlabel\nok\ta\nextra\ttab\tb\n", encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    assert "bad.tsv" in message(excinfo) and "line 3" in message(excinfo) and "tab" in message(excinfo)


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": }\n', encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    text = message(excinfo)
    assert "bad.jsonl" in text and "line 2" in text and "not valid JSON" in text and "one JSON object" in text


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n["b", 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2 holds a JSON list"):
        read_table(str(path), "train", TEXT, "label")


def test_invalid_json_document(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n{"text": "a", "label": 1},\n{"text": "b" "label": 2}\n]\n', encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    assert "bad.json" in message(excinfo) and "line 3" in message(excinfo)


def test_json_lines_in_a_json_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.json", records())
    assert read_table(str(path), "train", TEXT, "label")["text"].tolist() == TEXTS


def test_missing_column_lists_columns_and_suggests(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [{"Text": "a", "labels": "x", "id": 1}])
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    text = message(excinfo)
    assert "d.csv" in text
    assert "'Text', 'labels', 'id'" in text
    assert "did you mean 'Text'?" in text and "did you mean 'labels'?" in text
    assert "data.text_column" in text and "data.label_column" in text


def test_missing_pair_column_names_its_config_key(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [{"premise": "a", "hypo": "b", "label": "x"}])
    with pytest.raises(DataError, match=r"data\.text_pair_column"):
        read_table(str(path), "train", ["premise", "hypothesis"], "label")


def test_semicolon_file_hint(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text;label\na;b\n", encoding="utf-8")
    with pytest.raises(DataError, match="single column"):
        read_table(str(path), "train", TEXT, "label")


def test_empty_text_rows_are_cited(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\nok,a\n"   ",b\nok,a\n,c\nok,a\n', encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    text = message(excinfo)
    assert "d.csv" in text and "2 rows" in text and "lines 3, 5" in text
    assert "Remove those rows or fill in their text" in text


def test_empty_text_in_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 1}, {"text": None, "label": 2}])
    with pytest.raises(DataError, match="line 2"):
        read_table(str(path), "train", TEXT, "label")


def test_many_empty_texts_are_summarised(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "", "label": 1} for _ in range(8)])
    with pytest.raises(DataError, match=r"8 rows .*lines 1, 2, 3, 4, 5 and 3 more"):
        read_table(str(path), "train", TEXT, "label")


def test_missing_labels_are_cited(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\na\tx\nb\t\nc\ty\nd\t \n", encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_table(str(path), "train", TEXT, "label")
    text = message(excinfo)
    assert "d.tsv" in text and "no label" in text and "lines 3, 5" in text and "Fill in a label" in text


def test_missing_label_in_jsonl_null(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": None}])
    with pytest.raises(DataError, match="line 2"):
        read_table(str(path), "train", TEXT, "label")


# ---------------------------------------------------------------------------------------------- fingerprint


def test_fingerprints(tmp_path: Path) -> None:
    import hashlib

    import datasets

    path = write_csv(tmp_path / "d.csv", records())
    assert file_fingerprint(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()
    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(tmp_path / "ds"))
    first = file_fingerprint(f"hf:{tmp_path / 'ds'}")
    assert first == file_fingerprint(f"hf:{tmp_path / 'ds'}") and len(first) == 64
    hub = file_fingerprint("hf:glue:sst2")
    assert hub.startswith("name:") and hub != file_fingerprint("hf:glue:cola")
    with pytest.raises(DataError, match="not found"):
        file_fingerprint(str(tmp_path / "missing.csv"))


def test_local_files_record_the_sha256_of_the_bytes_they_parsed(tmp_path: Path) -> None:
    """The run's data fingerprint comes from the read itself: the same value file_fingerprint computes."""
    import hashlib

    for name, path in _write_every_format(tmp_path).items():
        frame = read_table(path, "train", TEXT, "label")
        assert frame.attrs["sha256"] == file_fingerprint(path), name
        assert frame.attrs["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest(), name
    csv = tmp_path / "d.csv"
    before = read_table(str(csv), "train", TEXT, "label").attrs["sha256"]
    write_csv(csv, records(labels=["neg", "pos", "neg", "neg", "neg"]))
    after = read_table(str(csv), "train", TEXT, "label")
    assert after.attrs["sha256"] != before and after.attrs["sha256"] == file_fingerprint(str(csv))


def test_hf_sources_record_no_file_sha256(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": TEXTS, "label": LABELS}).save_to_disk(str(tmp_path / "ds"))
    frame = read_table(f"hf:{tmp_path / 'ds'}", "train", TEXT, "label")
    assert "sha256" not in frame.attrs  # the fingerprint of a dataset folder is file_fingerprint's to take


# ---------------------------------------------------------------------------------------------- splits


def _labelled(labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"text": [f"t{i}" for i in range(len(labels))], "label": labels, "_row": range(2, len(labels) + 2)}
    )


def test_stratified_split_keeps_proportions() -> None:
    frame = _labelled(["a"] * 60 + ["b"] * 30 + ["c"] * 10)
    train, validation = split_train_validation(frame, "label", 0.2, seed=0, stratify=True)
    assert len(train) == 80 and len(validation) == 20
    assert validation["label"].value_counts().to_dict() == {"a": 12, "b": 6, "c": 2}
    assert isinstance(train.index, pd.RangeIndex) and isinstance(validation.index, pd.RangeIndex)
    assert sorted(train["_row"].tolist() + validation["_row"].tolist()) == list(range(2, 102))
    again, _ = split_train_validation(frame, "label", 0.2, seed=0, stratify=True)
    assert again.equals(train)


def test_split_errors_on_single_row_class() -> None:
    frame = _labelled(["a"] * 10 + ["b"] * 10 + ["rare"])
    frame.attrs["source"] = "train data 'd.csv'"
    with pytest.raises(DataError) as excinfo:
        split_train_validation(frame, "label", 0.2, seed=0, stratify=True)
    text = message(excinfo)
    assert "d.csv" in text and "'rare': 1 row" in text and "row 22" in text
    assert "data.validation" in text


def test_split_errors_when_validation_is_smaller_than_class_count() -> None:
    frame = _labelled([label for label in "abcde" for _ in range(4)])
    with pytest.raises(
        DataError, match=r"holds out 2 of 20 rows, but there are 5 classes.*validation_ratio to at least 0.25"
    ):
        split_train_validation(frame, "label", 0.1, seed=0, stratify=True)


def test_unstratified_and_multilabel_split() -> None:
    frame = pd.DataFrame({"text": list("abcdefghij"), "label": [["x"]] * 10, "_row": range(1, 11)})
    train, validation = split_train_validation(frame, "label", 0.3, seed=1, stratify=True)
    assert len(train) == 7 and len(validation) == 3
    train, validation = split_train_validation(_labelled(["a"] * 9 + ["b"]), "label", 0.2, seed=1, stratify=False)
    assert len(train) == 8 and len(validation) == 2
