"""Write redacted copies of a run's data files: the PII found by the audit scan replaced, masked or hashed.

Why copies and never in place: redaction is lossy, and a bug or a wrong mode must not destroy the only copy
of someone's data. Every check (sources, target folder, existing targets) runs and every file is read and
redacted before the first byte is written, so a refusal or a read error leaves nothing half-written; the
copies are then written all or none (`runs.atomic.publish_new`: each under a hidden name first, then linked
to its own, never over a file), so a full disk or a kill leaves no partial copy behind.

Why each format is written back by its own rule rather than from the reader's frame alone:

* CSV and TSV: the reader gives every cell as the exact string in the file, so the frame is written back
  as is (CSV with standard quoting, TSV as raw tab-joined fields, matching the reader's QUOTE_NONE: quotes
  in the text stay literal, and a redaction never adds a tab or newline).
* JSON lines / JSON list: the original records are re-parsed and only the text keys are replaced, so
  integers, nulls, nested values and missing keys survive (a DataFrame would turn an int column with a
  gap into floats).
* Parquet: the original table is read again and only the text columns are replaced, keeping dtypes and
  the index.

A gzipped source gives a gzipped copy with the same name. Blank lines of CSV/TSV/JSONL files are not data
and are not copied. `hf:` sources are refused: a Hugging Face dataset is not a file that can be copied under
the same name, so the user must export it to a file first.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from tunewise.audit.pii import PiiScanner, redact_text
from tunewise.config.sections import RunConfig
from tunewise.data.readers import HF_PREFIX, ROW_COLUMN, SUPPORTED_FORMATS, read_table
from tunewise.errors import DataError
from tunewise.runs.atomic import disk_full, full_disk, publish_new

RedactMode = Literal["replace", "mask", "hash"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")
_MODES: tuple[str, ...] = ("replace", "mask", "hash")


@dataclass(frozen=True)
class _Source:
    """One data file named by the config, the split it was first named for, and where its copy goes."""

    split: str
    path: Path
    target: Path
    fmt: str
    compressed: bool


def write_redacted_copies(
    config: RunConfig, text_columns: Sequence[str], out_dir: Path, mode: RedactMode, salt_file: Path
) -> list[Path]:
    """Write a redacted copy of each data file of `config` (train, validation, test) into `out_dir`.

    Each copy has the source's file name and format; every text column the task reads (`text_columns`:
    data.text_column, and data.text_pair_column for pairs) has its PII spans (the same scan as `tunewise
    check`, with audit.pii_patterns and, when set, audit.pii_ner_model's names and places)
    replaced by `<ENTITY>` (replace), `*` of the same length (mask) or a salted `<ENTITY:hash>` pseudonym
    (hash); all other columns and the row order are kept. A file named for several splits is written once.

    `salt_file` is used in hash mode only: read when it exists, else created with a random salt (readable by
    the owner only). Keeping it makes the same value get the same pseudonym across files and runs, so joins
    and counts survive redaction; it must stay private, since anyone holding it can test guesses of the
    original values against the pseudonyms.

    Raises `DataError` (nothing written) for an `hf:` source, an `out_dir` that is the folder of an input
    file, or a target file that already exists. Returns the written paths, in split order.
    """
    if mode not in _MODES:
        raise ValueError(f"unknown redaction mode {mode!r}; use 'replace', 'mask' or 'hash'")
    out_dir = Path(out_dir)
    sources = _plan(config, out_dir)
    salt = _load_salt(Path(salt_file)) if mode == "hash" else ""
    scanner = PiiScanner(custom_patterns=config.audit.pii_patterns, ner_model=config.audit.pii_ner_model)

    contents = [_redacted_bytes(source, list(text_columns), scanner, mode, salt) for source in sources]
    _make_folder(out_dir)
    try:  # all or none, and never over a file, even one that appeared meanwhile
        publish_new([(source.target, data) for source, data in zip(sources, contents, strict=True)])
    except FileExistsError as error:
        raise DataError(
            f"{error.filename!r} appeared while the copies were made; redaction never overwrites a file, so none "
            "was written. Remove that file, or choose another folder, and run again."
        ) from None
    return [source.target for source in sources]


# ----------------------------------------------------------------------------------------------
# Checks before anything is written
# ----------------------------------------------------------------------------------------------


def _plan(config: RunConfig, out_dir: Path) -> list[_Source]:
    """The files to copy, after every refusal check, so that a refusal writes nothing."""
    out_resolved = out_dir.resolve()
    sources: list[_Source] = []
    seen: dict[Path, str] = {}
    for split in SPLITS:
        source = getattr(config.data, split)
        if source is None:
            continue
        if source.startswith(HF_PREFIX):
            raise DataError(
                f"{split} data {source!r} is a Hugging Face dataset; redaction writes a copy of a data file "
                "under the same name, so it needs a file. Export the split first (e.g. "
                "datasets.load_from_disk(...)['train'].to_json('train.jsonl')), point data."
                f"{split} at that file, and run again."
            )
        path = Path(source)
        if not path.is_file():
            read_table(source, split, [], None)  # raises the reader's "file not found" message with suggestions
        resolved = path.resolve()
        if resolved in seen:
            continue  # the same file named for two splits: one copy
        if resolved.parent == out_resolved:
            raise DataError(
                f"the redaction folder {str(out_dir)!r} is the folder of the {split} data {source!r}; the copies "
                "keep the original file names, so they would replace your data. Choose another (empty) folder."
            )
        target = out_dir / path.name
        clash = next((other for other in sources if other.target.name == path.name), None)
        if clash is not None:
            raise DataError(
                f"the {clash.split} data {str(clash.path)!r} and the {split} data {source!r} have the same file "
                f"name, so their redacted copies would collide in {str(out_dir)!r}. Rename one of the files."
            )
        if target.exists():
            raise DataError(
                f"{str(target)!r} already exists; redaction never overwrites a file. Choose an empty folder, "
                "or remove that file, and run again."
            )
        fmt, compressed = _format_of(path)
        sources.append(_Source(split, path, target, fmt, compressed))
        seen[resolved] = split
    return sources


def _format_of(path: Path) -> tuple[str, bool]:
    """The reader's format for `path` (read_table has already rejected unsupported extensions)."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    extension = suffixes[-1] if suffixes else ""
    if extension not in SUPPORTED_FORMATS:  # read_table raises the full message first; this is a fallback
        raise DataError(f"{str(path)!r}: unsupported file type {extension!r}; it cannot be redacted.")
    return SUPPORTED_FORMATS[extension], compressed


def _make_folder(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"{str(out_dir)!r} is a file, not a folder. Give a folder for the redacted copies.") from None


def _load_salt(salt_file: Path) -> str:
    """The project's salt: read it if present, else create it (owner-only permissions) with 128 random bits."""
    if salt_file.exists():
        salt = salt_file.read_text(encoding="utf-8").strip()
        if not salt:
            raise DataError(
                f"the salt file {str(salt_file)!r} is empty, so pseudonyms would be unsalted and easy to reverse. "
                "Delete it to have a new salt created (pseudonyms will then differ from earlier runs)."
            )
        return salt
    salt = secrets.token_hex(16)
    salt_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(salt_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(salt + "\n")
            os.fsync(handle.fileno())
    except OSError as error:  # no half-written (empty) salt left behind
        salt_file.unlink(missing_ok=True)
        if disk_full(error):
            raise full_disk(salt_file, len(salt) + 1, 0) from None
        raise
    return salt


# ----------------------------------------------------------------------------------------------
# Reading, redacting and serialising one file
# ----------------------------------------------------------------------------------------------


def _redacted_bytes(
    source: _Source, text_columns: Sequence[str], scanner: PiiScanner, mode: RedactMode, salt: str
) -> bytes:
    """The bytes of the redacted copy: the file read by `read_table` (which checks it), then rewritten."""
    frame = read_table(str(source.path), source.split, list(text_columns), label_column=None)
    redacted = {}
    for column in text_columns:
        texts = frame[column].tolist()
        redacted[column] = [
            redact_text(text, spans, mode, salt) for text, spans in zip(texts, scanner.scan_texts(texts), strict=True)
        ]
    if source.fmt in ("csv", "tsv"):
        for column, values in redacted.items():
            frame[column] = values
        data = _delimited_bytes(frame.drop(columns=[ROW_COLUMN]), source)
    elif source.fmt in ("jsonl", "json"):
        data = _json_bytes(source, redacted)
    else:
        data = _parquet_bytes(source, redacted)
    return gzip.compress(data, mtime=0) if source.compressed else data


def _delimited_bytes(frame: pd.DataFrame, source: _Source) -> bytes:
    if source.fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL).encode("utf-8")
    # TSV is read with QUOTE_NONE: fields are written raw, so quotes stay literal; a tab or line break would
    # split the field, and the reader cannot have returned one, so its presence is a bug, not user data.
    lines = []
    for values in [list(map(str, frame.columns)), *frame.astype(str).to_numpy().tolist()]:
        bad = [value for value in values if any(char in value for char in "\t\n\r")]
        if bad:
            raise DataError(f"{str(source.path)!r}: a TSV field would contain a tab or line break: {bad[0]!r}")
        lines.append("\t".join(values) + "\n")
    return "".join(lines).encode("utf-8")


def _source_text(source: _Source) -> str:
    data = source.path.read_bytes()
    if source.compressed:
        data = gzip.decompress(data)
    return data.decode("utf-8-sig")


def _json_bytes(source: _Source, redacted: dict[str, list[str]]) -> bytes:
    """Replace only the text keys of the original records, in the layout the reader accepted."""
    text = _source_text(source)
    listed: Any = None
    if source.fmt == "json":
        try:
            listed = json.loads(text)
        except json.JSONDecodeError:
            pass  # "Extra data": the reader read it as JSON lines, and so does this
    as_list = isinstance(listed, list)
    records = listed if as_list else [json.loads(line) for line in text.split("\n") if line.strip()]
    _replace_cells(records, redacted, source)
    if as_list:
        return (json.dumps(records, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")


def _replace_cells(records: list[dict[str, Any]], redacted: dict[str, list[str]], source: _Source) -> None:
    for column, values in redacted.items():
        if len(values) != len(records):
            raise DataError(f"{str(source.path)!r}: the file changed while it was being redacted. Run again.")
        for record, value in zip(records, values, strict=True):
            record[column] = _merged(record.get(column), value)


def _merged(original: Any, redacted: str) -> Any:
    """Keep a non-string text cell (a number the reader turned into text) unless redaction changed it."""
    if not isinstance(original, str) and redacted == str(original):
        return original
    return redacted


def _parquet_bytes(source: _Source, redacted: dict[str, list[str]]) -> bytes:
    data = source.path.read_bytes()
    if source.compressed:
        data = gzip.decompress(data)
    table = pd.read_parquet(io.BytesIO(data))
    for column, values in redacted.items():
        if len(values) != len(table):
            raise DataError(f"{str(source.path)!r}: the file changed while it was being redacted. Run again.")
        table[column] = [_merged(original, value) for original, value in zip(table[column], values, strict=True)]
    buffer = io.BytesIO()
    table.to_parquet(buffer)
    return buffer.getvalue()


__all__ = ["RedactMode", "write_redacted_copies"]
