"""Read a user's data file (or a Hugging Face dataset) into a DataFrame, with errors that name the fix.

Everything is read as the user wrote it, so that label handling downstream sees the real values:

* CSV/TSV cells are all strings (``dtype=str``, ``keep_default_na=False``): a text "NA" or "null" stays
  text, and labels such as "1" or "0.5" stay strings too. Converting labels (to int, float or lists) is
  the caller's job, because only the caller knows the problem type.
* JSON/JSONL and Parquet keep their own types: numeric labels stay numeric and lists stay Python lists.
* Hugging Face ``ClassLabel`` columns are turned into their names (the ids mean nothing to a user);
  a ``-1`` id (an unlabeled example, as in GLUE test splits) becomes a missing label.

Every returned frame has a fresh RangeIndex and an int column ``_row``: the row number the user sees
(CSV/TSV: the spreadsheet row, header = 1, so the first data row is 2; JSONL: the line number; JSON
list, Parquet, Hugging Face: the 1-based record number), so later errors can cite it. ``frame.attrs``
holds ``source`` (for messages) and ``row_unit`` ("line", "record" or "row").
"""

from __future__ import annotations

import csv
import difflib
import gzip
import hashlib
import io
import json
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunewise.errors import DataError, first_line

HF_PREFIX = "hf:"
ROW_COLUMN = "_row"

# Extension (after an optional .gz) -> reader format.
SUPPORTED_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
SUPPORTED_DESCRIPTION = (
    "CSV (.csv), TSV (.tsv, .tab, tab-separated .txt), JSON lines (.jsonl, .ndjson), "
    "JSON list of records (.json), Parquet (.parquet, .pq), any of the text formats gzipped (.csv.gz, ...), "
    "or hf:<dataset>[:<config>] for a Hugging Face dataset name or a folder written by save_to_disk"
)
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "dev", "valid", "val"),
    "test": ("test",),
}
_CONFIG_KEYS = ("data.text_column", "data.text_pair_column")
_UTF8_BOM = b"\xef\xbb\xbf"
_CITE_LIMIT = 5


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def read_table(
    source: str,
    split: str,
    text_columns: list[str],
    label_column: str | None,
    column_keys: Sequence[str] = _CONFIG_KEYS,
) -> pd.DataFrame:
    """Read `source` for `split` ("train", "validation", "test", ...) and check the needed columns.

    `text_columns` must hold non-empty text; `label_column` (None for unlabeled prediction inputs)
    must have a value in every row. `column_keys` are the config keys that name the text columns, in
    the same order, so an error tells the user which setting to change. Returns a frame with a
    RangeIndex and the `_row` column.
    """
    where = f"{split} data {source!r}"
    digest = None
    if source.startswith(HF_PREFIX):
        frame, rows, unit = _read_hf(source, split, where)
    else:
        frame, rows, unit, digest = _read_file(Path(source), where)
    frame = _finish(frame, rows, unit, where, text_columns, label_column, column_keys)
    if digest is not None:  # the bytes just parsed: no second read for the run's data fingerprint
        frame.attrs["sha256"] = digest
    return frame


def file_fingerprint(source: str) -> str:
    """A sha256 of the data, so a run can tell whether its data changed since a checkpoint or cache.

    Files: their bytes. Folders (image trees) and hf: folders: every file's relative path and bytes,
    in sorted order. Hub names: "name:" + the sha256 of the name and config (the content is not
    available offline).
    """
    if source.startswith(HF_PREFIX):
        name, config = _parse_hf(source, f"data {source!r}")
        folder = Path(name)
        if folder.is_dir():
            return _folder_sha256(folder)
        return "name:" + hashlib.sha256(f"{name}:{config or ''}".encode()).hexdigest()
    path = Path(source)
    if path.is_dir():  # an image folder tree
        return _folder_sha256(path)
    _check_exists(path, f"data {source!r}")
    digest = hashlib.sha256()
    _hash_file(path, digest)
    return digest.hexdigest()


def cite_rows(rows: Iterable[int], unit: str = "row", limit: int = _CITE_LIMIT) -> str:
    """'line 4' or 'lines 4, 9, 12, 15, 20 and 3 more': enough to find them, short enough to read."""
    rows = [int(row) for row in rows]
    if len(rows) == 1:
        return f"{unit} {rows[0]}"
    shown = ", ".join(str(row) for row in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"{unit}s {shown}{more}"


# ----------------------------------------------------------------------------------------------
# Local files
# ----------------------------------------------------------------------------------------------


def _read_file(path: Path, where: str) -> tuple[pd.DataFrame, list[int], str, str]:
    """Dispatch on the extension; returns the raw frame, its user-visible row numbers, their unit and
    the sha256 of the file's bytes."""
    _check_exists(path, where)
    fmt, compressed = _format_of(path, where)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if compressed:
        data = _gunzip(data, where)
    if fmt == "parquet":
        return (*_read_parquet(data, where), digest)
    text = _decode(data, path, where)
    if not text.strip():
        raise DataError(f"{where}: the file is empty. Point the config at the file that holds your data.")
    if fmt == "csv":
        return (*_read_delimited(text, ",", csv.QUOTE_MINIMAL, where), digest)
    if fmt == "tsv":
        return (*_read_delimited(text, "\t", csv.QUOTE_NONE, where), digest)
    if fmt == "jsonl":
        return (*_read_jsonl(text, where), digest)
    return (*_read_json(text, where), digest)


def _check_exists(path: Path, where: str) -> None:
    """Missing files are the most common mistake: suggest close names from the same folder."""
    if path.is_file():
        return
    if path.is_dir():
        raise DataError(
            f"{where}: this is a folder, not a file. Give the path of a data file, or hf:{path} if the "
            "folder was written by Dataset.save_to_disk."
        )
    folder = path.parent
    hint = f" (relative paths are resolved from {Path.cwd()})" if not path.is_absolute() else ""
    if not folder.is_dir():
        raise DataError(f"{where}: file not found; the folder {str(folder)!r} does not exist{hint}. Check the path.")
    names = sorted(entry.name for entry in folder.iterdir())
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    suggestion = f" Did you mean {_or_list(str(folder / name) for name in close)}?" if close else ""
    raise DataError(f"{where}: file not found{hint}.{suggestion} Check the path in the config.")


def _format_of(path: Path, where: str) -> tuple[str, bool]:
    """Map the extension (after an optional .gz) to a reader; unknown ones list what is supported."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    extension = suffixes[-1] if suffixes else ""
    if extension not in SUPPORTED_FORMATS:
        shown = f"extension {extension!r}" if extension else "no extension"
        raise DataError(
            f"{where}: unsupported file type ({shown}). Supported: {SUPPORTED_DESCRIPTION}. "
            "Rename the file to the extension that matches its content, or convert it."
        )
    return SUPPORTED_FORMATS[extension], compressed


def _gunzip(data: bytes, where: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as error:
        raise DataError(
            f"{where}: the file ends in .gz but could not be decompressed ({error}). "
            "Re-compress it with gzip, or remove the .gz extension if it is not compressed."
        ) from None


def _decode(data: bytes, path: Path, where: str) -> str:
    """UTF-8 only (a BOM is fine): guessing another encoding would silently corrupt the text."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(
            f"{where}: the file is UTF-16 encoded (as some spreadsheet 'Unicode text' exports are); "
            f"tunewise reads UTF-8. Re-save it as UTF-8, e.g. iconv -f utf-16 -t utf-8 {path} > {_utf8_name(path)}"
        )
    offset = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        return data[offset:].decode("utf-8")
    except UnicodeDecodeError as error:
        start = error.start + offset
        line = data.count(b"\n", 0, start) + 1
        byte = data[start : start + 1]
        raise DataError(
            f"{where}: the file is not valid UTF-8: byte {start} (line {line}) is {byte!r}. "
            "Re-save the file as UTF-8 (in a spreadsheet: 'CSV UTF-8'), or convert it, e.g. "
            f"iconv -f latin1 -t utf-8 {path} > {_utf8_name(path)} (use the encoding the file was written in)."
        ) from None


def _utf8_name(path: Path) -> str:
    return str(path.with_name(path.name.split(".")[0] + ".utf8" + "".join(path.suffixes)))


def _read_delimited(text: str, sep: str, quoting: int, where: str) -> tuple[pd.DataFrame, list[int], str]:
    """CSV/TSV as strings; TSV ignores quotes (QUOTE_NONE) because texts like SMS messages contain them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.StringIO(text),
                sep=sep,
                quoting=quoting,
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                index_col=False,
            )
    except pd.errors.ParserWarning:
        raise DataError(
            f"{where}: the first data row (line 2) has more fields than the header line. {_field_fix(sep)}"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: the file is empty. Point the config at the file that holds your data.") from None
    except pd.errors.ParserError as error:
        raise DataError(f"{where}: {_parser_problem(str(error), sep)}") from None
    rows = [index + 2 for index in range(len(frame))]
    keep = (frame != "").any(axis=1).to_numpy() if len(frame.columns) else np.zeros(len(frame), dtype=bool)
    if not keep.all():  # blank lines (and all-empty rows such as ",,") are not data
        frame = frame[keep]
        rows = [row for row, kept in zip(rows, keep, strict=True) if kept]
    if frame.empty:
        raise DataError(
            f"{where}: the file has a header line but no data rows. Add data rows below the header "
            f"({', '.join(map(str, frame.columns))})."
        )
    return frame, rows, "line"


def _parser_problem(message: str, sep: str) -> str:
    """Turn pandas' tokenizer message into the line the user should look at, and the fix."""
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
    if fields:
        expected, line, saw = fields.groups()
        return f"line {line} has {saw} fields but the header has {expected}. {_field_fix(sep)}"
    unclosed = re.search(r"EOF inside string starting at row (\d+)", message)
    if unclosed:
        line = int(unclosed.group(1)) + 1
        return (
            f"a double quote opened on line {line} is never closed. Close the quoted field, or double the "
            'quote characters inside a quoted field ("" stands for one ").'
        )
    return f"the file could not be parsed ({message}). Check that it is a well-formed {_format_name(sep)} file."


def _field_fix(sep: str) -> str:
    if sep == "\t":
        return "Text fields must not contain tab characters: remove the extra tabs from that line."
    return (
        'Put text that contains commas in double quotes ("like, this"), or save the file as TSV; '
        "also check that the file is really comma-separated."
    )


def _format_name(sep: str) -> str:
    return "TSV" if sep == "\t" else "CSV"


def _read_jsonl(text: str, where: str) -> tuple[pd.DataFrame, list[int], str]:
    """One JSON object per line; blank lines are skipped but still counted, so line numbers match an editor."""
    records: list[dict[str, Any]] = []
    rows: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit inside a string
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{where}: line {number} is not valid JSON ({error.msg} at column {error.colno}). "
                'Each line must hold one JSON object, e.g. {"text": "great film", "label": "positive"}; fix that line.'
            ) from None
        if not isinstance(record, dict):
            raise DataError(
                f"{where}: line {number} holds a JSON {_json_type(record)}, not an object. "
                'Each line must hold one JSON object, e.g. {"text": "great film", "label": "positive"}.'
            )
        records.append(record)
        rows.append(number)
    return _records_frame(records, rows, where, "line")


def _read_json(text: str, where: str) -> tuple[pd.DataFrame, list[int], str]:
    """A JSON list of records; a .json file that is really JSON lines is read as such."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":
            return _read_jsonl(text, where)
        raise DataError(
            f"{where}: line {error.lineno} is not valid JSON ({error.msg} at column {error.colno}). Fix the JSON there."
        ) from None
    if isinstance(value, dict):
        if value and all(isinstance(item, list) for item in value.values()):
            raise DataError(
                f"{where}: the file holds a JSON object of columns; tunewise reads a list of records, "
                '[{"text": "...", "label": "..."}, ...], or one object per line (.jsonl). Convert it to one of those.'
            )
        return _read_jsonl(text, where)
    if not isinstance(value, list):
        raise DataError(
            f"{where}: the file holds a JSON {_json_type(value)}; expected a list of records, "
            '[{"text": "...", "label": "..."}, ...].'
        )
    for number, record in enumerate(value, start=1):
        if not isinstance(record, dict):
            raise DataError(
                f"{where}: record {number} of the list is a JSON {_json_type(record)}, not an object. "
                'Every record must be an object such as {"text": "...", "label": "..."}.'
            )
    return _records_frame(value, list(range(1, len(value) + 1)), where, "record")


def _records_frame(
    records: list[dict[str, Any]], rows: list[int], where: str, unit: str
) -> tuple[pd.DataFrame, list[int], str]:
    if not records:
        raise DataError(f"{where}: the file holds no records. Add your examples, one JSON object each.")
    return pd.DataFrame.from_records(records), rows, unit


def _json_type(value: Any) -> str:
    names = {list: "list", dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _read_parquet(data: bytes, where: str) -> tuple[pd.DataFrame, list[int], str]:
    try:
        frame = pd.read_parquet(io.BytesIO(data))
    except Exception as error:  # pyarrow raises many types for a corrupt or non-Parquet file
        raise DataError(
            f"{where}: could not be read as Parquet ({first_line(error)}). Check that the file is a Parquet file "
            "and is complete, or give the data in another format."
        ) from None
    frame = frame.reset_index(drop=isinstance(frame.index, pd.RangeIndex))
    if frame.empty:
        raise DataError(f"{where}: the file has no data rows. Point the config at the file that holds your data.")
    return _lists_from_arrays(frame), list(range(1, len(frame) + 1)), "row"


# ----------------------------------------------------------------------------------------------
# Hugging Face datasets
# ----------------------------------------------------------------------------------------------


def _parse_hf(source: str, where: str) -> tuple[str, str | None]:
    """'hf:<name>[:<config>]' -> (name, config); a local folder path wins even if it contains ':'."""
    spec = source[len(HF_PREFIX) :]
    if not spec:
        raise DataError(f"{where}: 'hf:' needs a dataset, e.g. hf:imdb, hf:glue:sst2 or hf:path/to/saved_folder.")
    if Path(spec).is_dir():
        return spec, None
    name, sep, config = spec.rpartition(":")
    if not sep or not name:
        return spec, None
    return name, config or None


def _read_hf(source: str, split: str, where: str) -> tuple[pd.DataFrame, list[int], str]:
    name, config = _parse_hf(source, where)
    dataset = _pick_split(_load_hf(name, config, where), split, where)
    frame = _lists_from_arrays(dataset.to_pandas())
    frame = _decode_class_labels(frame, dataset.features)
    if frame.empty:
        raise DataError(f"{where}: the dataset has no rows. Point the config at a dataset that holds your data.")
    return frame, list(range(1, len(frame) + 1)), "row"


def _load_hf(name: str, config: str | None, where: str) -> Any:
    """A save_to_disk folder loads offline; anything else goes through load_dataset (hub or data folder)."""
    import datasets  # slow to import: only when needed

    folder = Path(name)
    if folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
        try:
            return datasets.load_from_disk(str(folder))
        except Exception as error:  # any load failure is the folder's, reported as such
            raise DataError(
                f"{where}: the folder looks like a saved dataset but could not be loaded ({first_line(error)}). "
                "Save it again with Dataset.save_to_disk or DatasetDict.save_to_disk."
            ) from None
    try:
        return datasets.load_dataset(name, config)
    except Exception as error:  # network, auth and name errors all mean "could not load"
        if folder.is_dir():
            raise DataError(
                f"{where}: the folder could not be loaded as a dataset ({first_line(error)}). Give a folder written "
                "by Dataset.save_to_disk, or point the config at a single data file."
            ) from None
        shown = f"{name!r}" + (f" (config {config!r})" if config else "")
        raise DataError(
            f"{where}: the Hugging Face dataset {shown} could not be downloaded or loaded ({first_line(error)}). "
            "If you are offline, download it on a machine with internet and save it to disk: "
            f"datasets.load_dataset({name!r}{', ' + repr(config) if config else ''}).save_to_disk('my_dataset'), "
            "copy the folder here and use hf:my_dataset. Also check the dataset name and config."
        ) from None


def _pick_split(loaded: Any, split: str, where: str) -> Any:
    """A DatasetDict holds several splits: take the one asked for (validation may be called dev/valid)."""
    if not hasattr(loaded, "keys"):
        return loaded
    available = list(loaded.keys())
    for candidate in SPLIT_ALIASES.get(split, (split,)):
        if candidate in loaded:
            return loaded[candidate]
    wanted = " / ".join(SPLIT_ALIASES.get(split, (split,)))
    raise DataError(
        f"{where}: the dataset has no {wanted!r} split; it has: {', '.join(available) or 'none'}. "
        f"Point data.{split} at a source that has it, or save the split you want under the name {split!r}."
    )


def _decode_class_labels(frame: pd.DataFrame, features: Any) -> pd.DataFrame:
    """ClassLabel ids -> names (and -1, 'no label', -> None), also inside lists for multi-label columns."""
    from datasets import ClassLabel

    for column, feature in features.items():
        if isinstance(feature, ClassLabel):
            frame[column] = [_class_name(feature, value) for value in frame[column]]
        elif isinstance(getattr(feature, "feature", None), ClassLabel):
            inner = feature.feature
            frame[column] = [
                None if value is None else [_class_name(inner, item) for item in value] for value in frame[column]
            ]
    return frame


def _class_name(feature: Any, value: Any) -> str | None:
    if value is None or _is_missing(value) or int(value) < 0:
        return None
    return feature.int2str(int(value))


def _lists_from_arrays(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet and Arrow give list cells as numpy arrays; callers expect plain lists, as from JSON."""
    for column in frame.columns:
        if frame[column].dtype == object:
            values = frame[column]
            if any(isinstance(value, np.ndarray) for value in values):
                frame[column] = [value.tolist() if isinstance(value, np.ndarray) else value for value in values]
    return frame


# ----------------------------------------------------------------------------------------------
# Checks shared by every format
# ----------------------------------------------------------------------------------------------


def _finish(
    frame: pd.DataFrame,
    rows: list[int],
    unit: str,
    where: str,
    text_columns: Sequence[str],
    label_column: str | None,
    column_keys: Sequence[str] = _CONFIG_KEYS,
) -> pd.DataFrame:
    """Check the columns and values every task needs, then attach `_row`."""
    if ROW_COLUMN in frame.columns:
        raise DataError(f"{where}: the column name {ROW_COLUMN!r} is reserved by tunewise. Rename that column.")
    keys = [_config_key(column_keys, index) for index in range(len(text_columns))]
    _check_columns(frame, where, dict(zip(text_columns, keys, strict=True)), label_column)
    frame = frame.reset_index(drop=True)
    frame[ROW_COLUMN] = np.asarray(rows, dtype=np.int64)
    for column, key in zip(text_columns, keys, strict=True):
        frame[column] = _checked_text(frame, column, key, where, unit)
    if label_column is not None:
        _check_labels(frame, label_column, where, unit)
    frame.attrs["source"] = where
    frame.attrs["row_unit"] = unit
    return frame


def _config_key(column_keys: Sequence[str], index: int) -> str:
    return column_keys[index] if index < len(column_keys) else column_keys[0]


def _check_columns(frame: pd.DataFrame, where: str, text_columns: dict[str, str], label_column: str | None) -> None:
    """A missing column lists what exists and the closest name, and names the config key to set
    (`text_columns` maps each column to its key)."""
    wanted = list(text_columns.items())
    if label_column is not None:
        wanted.append((label_column, "data.label_column"))
    existing = [str(column) for column in frame.columns]
    problems = []
    for column, key in wanted:
        if column in frame.columns:
            continue
        close = _close_columns(column, existing)
        guess = f" (did you mean {_or_list(repr(name) for name in close)}?)" if close else ""
        problems.append(f"column {column!r} ({key}) not found{guess}")
    if not problems:
        return
    hint = ""
    if len(existing) == 1 and any(mark in existing[0] for mark in (",", ";", "\t")):
        hint = " The file was read as a single column: check that its extension matches its separator."
    keys = ", ".join(dict.fromkeys(key for _, key in wanted))
    raise DataError(
        f"{where}: {'; '.join(problems)}. Columns in the file: {', '.join(map(repr, existing))}.{hint} "
        f"Set {keys} in the config to the column names your file uses."
    )


def _close_columns(column: str, existing: list[str]) -> list[str]:
    lowered = {name.lower(): name for name in existing}
    matches = difflib.get_close_matches(column.lower(), list(lowered), n=3, cutoff=0.6)
    return [lowered[match] for match in matches]


def _checked_text(frame: pd.DataFrame, column: str, key: str, where: str, unit: str) -> list[str]:
    """Texts must be non-empty strings; numbers are turned into text, lists and objects are errors."""
    values = frame[column].tolist()
    rows = frame[ROW_COLUMN].tolist()
    nested = [row for row, value in zip(rows, values, strict=True) if isinstance(value, (list, dict, tuple))]
    if nested:
        raise DataError(
            f"{where}: column {column!r} ({key}) must hold text, but {cite_rows(nested, unit)} hold "
            "a list or object. Point the config at the text column, or store the text as a plain string."
        )
    empty = [row for row, value in zip(rows, values, strict=True) if _is_missing(value)]
    if empty:
        noun = "1 row has" if len(empty) == 1 else f"{len(empty)} rows have"
        raise DataError(
            f"{where}: {noun} empty or whitespace-only text in column {column!r} ({cite_rows(empty, unit)}). "
            "Remove those rows or fill in their text, then run again."
        )
    return [value if isinstance(value, str) else str(value) for value in values]


def _check_labels(frame: pd.DataFrame, column: str, where: str, unit: str) -> None:
    missing = [row for row, value in zip(frame[ROW_COLUMN], frame[column], strict=True) if _is_missing(value)]
    if missing:
        noun = "1 row has" if len(missing) == 1 else f"{len(missing)} rows have"
        raise DataError(
            f"{where}: {noun} no label in column {column!r} ({cite_rows(missing, unit)}). "
            "Fill in a label for those rows or remove them, then run again."
        )


def _is_missing(value: Any) -> bool:
    """None, NaN, NA and blank strings count as missing; lists (even empty ones) never do."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return False


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _folder_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        _hash_file(path, digest)
    return digest.hexdigest()


def _hash_file(path: Path, digest: Any) -> None:
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)


def _or_list(items: Iterable[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]
